"""Which rows go on a contact sheet, and the numbers behind the plots: DuckDB queries over the warehouse Parquet.

Every query lives in ``sql/queries/report_*.sql`` with bound parameters (the score column included, through
``COLUMNS([$column])``), and every order is total (ties broken by uid), so the same warehouse gives the same
sheets. Rows come back as dicts with uid, drop, keep, score, caption, tar_path, offset, size, image_format.
"""

from __future__ import annotations

import contextlib
import contextvars
from pathlib import Path
from typing import Iterator, Sequence

import duckdb
import numpy as np

from clip_assets.io import catalog
from clip_assets.io.catalog import load_sql
from clip_assets.io.commit import resolve
from clip_assets.io.exports import decisions_path, subsets_dir
from clip_assets.io.fs import read_schema
from clip_assets.io.tables import drops_with
from clip_assets.report.plots import Histogram

SCORE_ASSETS = ("pair_scores", "kl_stats")
SUBSET_SIDES = ("kept_top", "kept_near", "dropped_near", "dropped_bottom")
SAMPLE_SIDES = {"kept_sample": True, "dropped_sample": False}
MAX_PER_SHEET = 200


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection (reads Parquet only; never the catalog file, so no lock; NaN always seen)."""
    return catalog.memory_connection(ordered=True)


_listing_memo: contextvars.ContextVar[dict | None] = contextvars.ContextVar("report_listing_memo", default=None)


@contextlib.contextmanager
def one_listing() -> Iterator[None]:
    """Within the block, :func:`files` lists each (asset, home, drops) once: a report's sheets and plots read one
    version of every partition, and a store home is listed once per report, not once per sheet."""
    token = _listing_memo.set({})
    try:
        yield
    finally:
        _listing_memo.reset(token)


def files(asset: str, home: Path | None, drops: Sequence[str] | None = None) -> list[str]:
    """Parquet files of ``asset`` for ``drops`` (default: every drop that has it), in drop then file order."""
    memo = _listing_memo.get()
    key = (asset, str(home), None if drops is None else tuple(drops))
    if memo is not None and key in memo:
        return list(memo[key])
    have = drops_with(asset, home)
    chosen = have if drops is None else [d for d in drops if d in have]
    out = [f for d in chosen for f in catalog.partition_files(asset, d, home)]  # one version per partition
    if memo is not None:
        memo[key] = tuple(out)
    return out


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PER_SHEET:
        raise ValueError(f"images per sheet must be an integer in [1, {MAX_PER_SHEET}], got {n!r}")
    return n


def score_asset(home: Path | None, column: str) -> str:
    """The score asset (pair_scores or kl_stats) whose Parquet files have ``column``."""
    known = []
    for asset in SCORE_ASSETS:
        fs = files(asset, home)
        names = read_schema(fs[0]).names if fs else []
        if column in names:
            return asset
        known += [n for n in names if n not in ("uid", "drop", "model_id", "reference_id")]
    raise ValueError(f"unknown score column {column!r} (columns of {' and '.join(SCORE_ASSETS)}: "
                     f"{', '.join(known) or 'none, nothing is scored yet'})")


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> list[dict]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def subset_rows(con, home: Path | None, subset: str, side: str, n: int, column: str | None = None) -> list[dict]:
    """Rows of one sheet of ``subset``: ``side`` in :data:`SUBSET_SIDES` (needs the subset's score ``column``)
    or in :data:`SAMPLE_SIDES` (kept/dropped rows by uid, for subsets without one column)."""
    decisions = decisions_path(subset, resolve(subsets_dir(home)))
    params = {"decisions": str(decisions), "raw_files": files("raw_pairs", home), "n": _check_n(n)}
    if not decisions.is_file():
        raise FileNotFoundError(f"subset {subset!r} has no decisions file {params['decisions']}")
    if side in SAMPLE_SIDES:
        return _rows(con, load_sql("queries/report_sheet_sample"), {**params, "keep": SAMPLE_SIDES[side]})
    if side not in SUBSET_SIDES:
        raise ValueError(f"unknown sheet side {side!r} (known: {', '.join(SUBSET_SIDES + tuple(SAMPLE_SIDES))})")
    if column is None:
        raise ValueError(f"sheet side {side!r} of subset {subset!r} needs the subset's score column")
    score_files = files(score_asset(home, column), home)
    return _rows(con, load_sql("queries/report_sheet_subset"),
                 {**params, "score_files": score_files, "column": column, "side": side})


def decile_rows(con, home: Path | None, column: str, n: int, drops: Sequence[str] | None = None
                ) -> dict[int, list[dict]]:
    """Per decile (1 = lowest values) of ``column`` over ``drops`` (default: all), ``n`` sample rows; each row
    also carries the decile's value range (lo, hi) and size (rows_in_decile)."""
    score_files = files(score_asset(home, column), home, drops)
    if not score_files:
        return {}
    rows = _rows(con, load_sql("queries/report_sheet_decile"), {
        "score_files": score_files, "raw_files": files("raw_pairs", home, drops), "column": column,
        "n": _check_n(n)})
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(int(r["decile"]), []).append(r)
    return out


def drop_rows(con, home: Path | None, drop: str, n: int, column: str = "clip_score") -> list[dict]:
    """``n`` sample rows (first by uid) of one drop's raw_pairs, with ``column`` when the drop is scored."""
    raw = files("raw_pairs", home, [drop])
    if not raw:
        raise FileNotFoundError(f"drop {drop!r} has no raw_pairs files: ingest it first")
    scored = any(files(a, home) for a in SCORE_ASSETS)
    score_files = files(score_asset(home, column), home, [drop]) if scored else []
    if not score_files:
        return _rows(con, load_sql("queries/report_sheet_drop"), {"raw_files": raw, "n": _check_n(n)})
    return _rows(con, load_sql("queries/report_sheet_drop_scored"),
                 {"raw_files": raw, "score_files": score_files, "column": column, "n": _check_n(n)})


def histogram(con, home: Path | None, column: str, bins: int = 50, drops: Sequence[str] | None = None
              ) -> Histogram | None:
    """Histogram of ``column`` over one row per uid of ``drops`` (default: all); None when nothing is scored."""
    score_files = files(score_asset(home, column), home, drops)
    if not score_files:
        return None
    rows = _rows(con, load_sql("queries/report_histogram"), {"files": score_files, "column": column, "bins": bins})
    counts = np.zeros(bins, dtype=np.int64)
    missing, lo, hi = 0, None, None
    for r in rows:
        if r["bin"] is None:
            missing += int(r["n"])
        else:
            counts[int(r["bin"])] = int(r["n"])
        lo, hi = (r["lo"], r["hi"]) if r["lo"] is not None else (lo, hi)
    if lo is None:
        edges = np.linspace(0.0, 1.0, bins + 1)
    elif hi == lo:  # one distinct value: the query put every row in bin 0, which starts at it
        edges = np.linspace(lo, lo + 1.0, bins + 1)
    else:
        edges = np.linspace(lo, hi, bins + 1)
    return Histogram(column, edges, counts, missing)


def kept_per_drop(con, home: Path | None) -> list[dict]:
    """One row per (drop, subset): pool rows of that drop and how many the subset keeps."""
    decision_files = catalog.listed(subsets_dir(home), "subset=*/*.parquet")
    if not decision_files:
        return []
    return _rows(con, load_sql("queries/report_kept_per_drop"), {"files": decision_files})
