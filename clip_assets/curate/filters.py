"""Curation filters: their configuration (one YAML file) and their evaluation in DuckDB over the whole pool.

Configuration (``filters.yaml`` beside this module is the package default; a user file in the same format is
passed as the ``filters_path`` run config of ``curated_subsets``). Each filter is exactly one rule:

=====================  ===============================================================================
``keep_fraction: f``   with ``column``: keep the top fraction f of the WHOLE pool by that column
``threshold: t``       with ``column``: keep ``value >= t``
``keep: all``          keep every row (the no-filter baseline)
``all_of: [a, b]``     keep the rows that every listed (non-``all_of``) filter keeps
=====================  ===============================================================================

:func:`parse_filters` validates a whole file before anything runs and raises :class:`FilterConfigError` naming the
filter, the key and the bad value (unknown key or column, f outside [0, 1], unknown filter in ``all_of``,
duplicate names, ...).

Evaluation (PAPER.md section 3, semantics of :mod:`clip_assets.core.selection`, which is the reference the tests
compare against):

* the *pool* is every pair with both ``pair_scores`` and ``kl_stats``, one row per uid: a uid present in several
  drops counts once, in the first drop by name (:func:`build_pool` writes it to one Parquet file);
* ``N`` = pool rows (rows whose value is NaN or NULL included), ``k = floor(f * N)`` computed exactly in Python
  (:func:`clip_assets.core.selection.keep_count`), and the threshold is the k-th largest non-NaN value, found by ONE
  DuckDB query over the pool Parquet (``ORDER BY v DESC LIMIT k``, then ``min``; DuckDB's quantile functions
  interpolate or round ranks, so they cannot give this tie semantics);
* keep ``value >= threshold`` (ties kept), NaN/NULL never kept, ``k = 0`` keeps nothing (not even +inf);
* every dropped row carries its reason, e.g. ``kl_text: text_kl 0.71 < 1.23 (keep top 25%)``; an ``all_of``
  subset joins the reasons of the filters that dropped the row with ``"; "``.

Column names are never spliced into SQL: queries select the filter's column with ``COLUMNS([$column])``, the name
bound as a parameter (and checked against :data:`SCORE_COLUMNS` at load).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import duckdb
import pyarrow as pa
import yaml

from clip_assets.config import warehouse_dir
from clip_assets.core.selection import keep_count
from clip_assets.io import catalog
from clip_assets.io.catalog import load_sql
from clip_assets.io.commit import on_store, resolve, stage_dir
from clip_assets.io.exports import SUMMARY_FILE, decisions_path, subsets_dir
from clip_assets.io.tables import drops_with

__all__ = [
    "DEFAULT_FILTERS_PATH",
    "SCORE_COLUMNS",
    "FilterConfigError",
    "FilterSpec",
    "PoolInfo",
    "SubsetResult",
    "parse_filters",
    "load_filters",
    "filters_from_json",
    "filters_to_json",
    "one_row",
    "pool_files",
    "build_pool",
    "derive_threshold",
    "run_filters",
    "subset_counts",
    "summary_table",
    "scratch_dir",
    "build_subsets",
]

DEFAULT_FILTERS_PATH = Path(__file__).with_name("filters.yaml")

# Score columns a filter may use, and the table each comes from. Higher is kept.
SCORE_COLUMNS: dict[str, str] = {
    **{c: "pair_scores" for c in ("clip_score", "s", "log_r_img", "log_r_txt", "log_r_siglip")},
    **{c: "kl_stats" for c in ("image_kl", "image_klr", "image_dc", "image_dw",
                               "text_kl", "text_klr", "text_dc", "text_dw")},
}
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
RULE_KEYS = ("keep_fraction", "threshold", "keep", "all_of")
FILTER_KEYS = frozenset({"name", "description", "column", *RULE_KEYS})
TOP_KEYS = frozenset({"filters"})


class FilterConfigError(ValueError):
    """A curation filter configuration that cannot be used; the message names the file, filter, key and value."""


@dataclass(frozen=True)
class FilterSpec:
    """One validated filter. kind: "keep_fraction" | "threshold" | "all" | "all_of"."""

    name: str
    kind: str
    column: str | None = None
    keep_fraction: float | None = None
    threshold: float | None = None
    all_of: tuple[str, ...] = ()
    description: str = ""

    @property
    def rule(self) -> str:
        """Human-readable rule: "top 25% by text_kl", "clip_score >= 0.28", "every row", "kl_text AND laion"."""
        if self.kind == "keep_fraction":
            return f"top {_pct(self.keep_fraction)}% by {self.column}"
        if self.kind == "threshold":
            return f"{self.column} >= {self.threshold:g}"
        if self.kind == "all":
            return "every row"
        return " AND ".join(self.all_of)

    def at_fraction(self, f: float) -> "FilterSpec":
        """The same filter with keep fraction ``f`` (only keep-fraction filters change)."""
        return replace(self, keep_fraction=float(f)) if self.kind == "keep_fraction" else self

    def to_config(self) -> dict[str, Any]:
        """The YAML/JSON form that :func:`parse_filters` reads back to an equal spec."""
        d: dict[str, Any] = {"name": self.name}
        if self.kind == "keep_fraction":
            d.update(column=self.column, keep_fraction=self.keep_fraction)
        elif self.kind == "threshold":
            d.update(column=self.column, threshold=self.threshold)
        elif self.kind == "all":
            d["keep"] = "all"
        else:
            d["all_of"] = list(self.all_of)
        if self.description:
            d["description"] = self.description
        return d


def _pct(f: float) -> str:
    return f"{float(f) * 100:.10g}"


# ---------------------------------------------------------------------------------------------- configuration
class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (PyYAML silently keeps the last one)."""


def _no_duplicate_keys(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise FilterConfigError(f"key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_filters(data: Any, source: str = "filters config") -> tuple[FilterSpec, ...]:
    """Validate a parsed config (``{"filters": [...]}``) and return its filters in file order.

    Raises FilterConfigError naming the source, the filter (index and name), the key and the bad value.
    """
    if not isinstance(data, dict):
        raise FilterConfigError(f"{source}: expected a mapping with key 'filters', got {type(data).__name__}")
    unknown = sorted(set(data) - TOP_KEYS, key=str)
    if unknown:
        raise FilterConfigError(f"{source}: unknown top-level key {unknown[0]!r} (allowed: 'filters')")
    items = data.get("filters")
    if not isinstance(items, list) or not items:
        raise FilterConfigError(f"{source}: key 'filters' must be a non-empty list of filters, got {items!r}")
    specs: list[FilterSpec] = []
    where_by_name: dict[str, str] = {}
    for i, item in enumerate(items):
        spec = _parse_one(item, f"{source}: filters[{i}]")
        if spec.name in where_by_name:
            raise FilterConfigError(f"{source}: filters[{i}] (name {spec.name!r}): duplicate filter name "
                                    f"{spec.name!r} (also {where_by_name[spec.name]})")
        where_by_name[spec.name] = f"filters[{i}]"
        specs.append(spec)
    _check_all_of(specs, source)
    return tuple(specs)


def _parse_one(item: Any, where: str) -> FilterSpec:
    """One filter mapping to a FilterSpec (its ``all_of`` members are checked by :func:`_check_all_of`)."""
    if not isinstance(item, dict):
        raise FilterConfigError(f"{where}: each filter must be a mapping, got {item!r}")
    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise FilterConfigError(
            f"{where}: key 'name' must be 1-64 lower-case letters, digits or '_' starting with a letter "
            f"(it names the subset's folder and export files), got {name!r}")
    where = f"{where} (name {name!r})"
    bad = sorted(set(item) - FILTER_KEYS, key=str)
    if bad:
        raise FilterConfigError(f"{where}: unknown key {bad[0]!r} (allowed: {', '.join(sorted(FILTER_KEYS))})")
    rules = [k for k in RULE_KEYS if k in item]
    if len(rules) != 1:
        raise FilterConfigError(f"{where}: needs exactly one of the keys {', '.join(RULE_KEYS)}, got "
                                f"{', '.join(rules) if rules else 'none'}")
    rule = rules[0]
    desc = item.get("description", "")
    if not isinstance(desc, str):
        raise FilterConfigError(f"{where}: key 'description' must be a string, got {desc!r}")
    column = item.get("column")
    if rule in ("keep_fraction", "threshold"):
        if column is None:
            raise FilterConfigError(f"{where}: key 'column' is required with {rule!r}")
        if not isinstance(column, str) or column not in SCORE_COLUMNS:
            raise FilterConfigError(
                f"{where}: key 'column' has unknown column {column!r} (known: {', '.join(SCORE_COLUMNS)})")
    elif "column" in item:
        raise FilterConfigError(f"{where}: key 'column' is not used with {rule!r}, got {column!r}")
    return _rule_spec(name, rule, item[rule], column, desc, where)


def _rule_spec(name: str, rule: str, value: Any, column: str | None, desc: str, where: str) -> FilterSpec:
    if rule == "keep_fraction":
        if not _is_number(value) or not (0.0 <= float(value) <= 1.0):
            raise FilterConfigError(f"{where}: key 'keep_fraction' must be a number in [0, 1], got {value!r}")
        return FilterSpec(name, "keep_fraction", column=column, keep_fraction=float(value), description=desc)
    if rule == "threshold":
        if not _is_number(value) or not math.isfinite(float(value)):
            raise FilterConfigError(f"{where}: key 'threshold' must be a finite number, got {value!r}")
        return FilterSpec(name, "threshold", column=column, threshold=float(value), description=desc)
    if rule == "keep":
        if value != "all":
            raise FilterConfigError(f"{where}: key 'keep' must be 'all', got {value!r}")
        return FilterSpec(name, "all", description=desc)
    if (not isinstance(value, list) or len(value) < 2
            or not all(isinstance(v, str) for v in value) or len(set(value)) != len(value)):
        raise FilterConfigError(
            f"{where}: key 'all_of' must be a list of at least two distinct filter names, got {value!r}")
    return FilterSpec(name, "all_of", all_of=tuple(value), description=desc)


def _check_all_of(specs: Sequence[FilterSpec], source: str) -> None:
    """Every ``all_of`` member names a defined filter that is not itself an ``all_of``."""
    by_name = {s.name: s for s in specs}
    for i, s in enumerate(specs):
        for member in s.all_of:
            where = f"{source}: filters[{i}] (name {s.name!r})"
            if member not in by_name:
                raise FilterConfigError(
                    f"{where}: key 'all_of' names unknown filter {member!r} (defined: {', '.join(by_name)})")
            if by_name[member].kind == "all_of":
                raise FilterConfigError(
                    f"{where}: key 'all_of' names {member!r}, which is itself an all_of filter; list its "
                    f"members instead")


def load_filters(path: str | Path | None = None) -> tuple[FilterSpec, ...]:
    """Read and validate a filters YAML (default: the package's filters.yaml)."""
    p = Path(path).expanduser() if path else DEFAULT_FILTERS_PATH
    if not p.is_file():
        raise FilterConfigError(f"filters file {str(p)!r} does not exist")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except FilterConfigError as e:
        raise FilterConfigError(f"{p}: {e}") from None
    except yaml.YAMLError as e:
        raise FilterConfigError(f"{p}: not valid YAML: {e}") from None
    return parse_filters(data, source=str(p))


def filters_to_json(specs: Iterable[FilterSpec]) -> str:
    return json.dumps({"filters": [s.to_config() for s in specs]}, sort_keys=True)


def filters_from_json(text: str, source: str = "stored filters") -> tuple[FilterSpec, ...]:
    return parse_filters(json.loads(text), source=source)


# ---------------------------------------------------------------------------------------------- evaluation
@dataclass
class PoolInfo:
    """The deduplicated pool: rows (N), rows before dedupe, drops, and the lineage found in it."""

    path: Path
    rows: int
    rows_before_dedupe: int
    drops: list[str]
    model_ids: list[str]
    reference_ids: list[str]
    columns: list[str] = field(default_factory=list)

    @property
    def duplicates_removed(self) -> int:
        return self.rows_before_dedupe - self.rows


@dataclass
class SubsetResult:
    """One subset's outcome: threshold (None for keep-all/all_of, +inf when k = 0, NaN for an all-NaN pool),
    k (keep-fraction filters only) and the counts read back from the written decisions."""

    name: str
    kind: str
    rule: str
    column: str | None
    keep_fraction: float | None
    threshold: float | None
    k: int | None
    pool: int
    kept: int
    dropped: int
    path: Path
    description: str = ""

    @property
    def kept_fraction(self) -> float:
        return self.kept / self.pool if self.pool else float("nan")


def one_row(con: duckdb.DuckDBPyConnection, sql: str, params: dict | list | None = None) -> tuple:
    """The single row of a query (fetched completely: DuckDB 2 refuses new work while a result is unfinished)."""
    rows = con.execute(sql, params).fetchall()
    if len(rows) != 1:
        raise RuntimeError(f"expected one row, got {len(rows)}")
    return rows[0]


def pool_files(home: Path | None = None, assets: tuple[str, ...] = ("pair_scores", "kl_stats")
               ) -> tuple[list[str], dict[str, list[str]]]:
    """Drops that have every one of ``assets``, and each asset's Parquet files of those drops."""
    common = None
    for a in assets:
        ds = set(drops_with(a, home))
        common = ds if common is None else common & ds
    drops = sorted(common or ())
    files = {a: [f for d in drops for f in catalog.partition_files(a, d, home)] for a in assets}
    return drops, files


def build_pool(con: duckdb.DuckDBPyConnection, home: Path | None, out_path: Path) -> PoolInfo:
    """Write the deduplicated pool (pair_scores JOIN kl_stats, one row per uid, first drop by name) to
    ``out_path`` and describe it. A pool with no scored drop is empty (rows = 0)."""
    drops, files = pool_files(home)
    out_path = Path(out_path)
    if not drops:
        return PoolInfo(out_path, 0, 0, [], [], [], [])
    rel = con.sql(load_sql("queries/curate_pool"),
                  params={"pair_files": files["pair_scores"], "kl_files": files["kl_stats"]})
    rel.write_parquet(str(out_path), compression="zstd")
    rows, before, ds, models, refs = one_row(con, load_sql("queries/curate_pool_info"), {"pool": str(out_path)})
    cols = [d[0] for d in con.execute("DESCRIBE SELECT * FROM read_parquet($pool)", {"pool": str(out_path)}
                                      ).fetchall()]
    return PoolInfo(out_path, int(rows), int(before or 0), sorted(ds or []), sorted(m for m in models or [] if m),
                    sorted(r for r in refs or [] if r), cols)


def derive_threshold(con: duckdb.DuckDBPyConnection, pool: Path | str, column: str, f: float, n: int
                     ) -> tuple[float, int]:
    """(threshold, k) of keeping the top fraction f of the ``n``-row pool by ``column``, in one DuckDB query.

    Semantics of clip_assets.core.selection.keep_fraction_threshold: NaN for an empty or all-NaN pool, +inf when
    k = 0 (keep nothing), else the k-th largest non-NaN value (the smallest one when k exceeds their count).
    """
    if column not in SCORE_COLUMNS:
        raise FilterConfigError(f"unknown column {column!r} (known: {', '.join(SCORE_COLUMNS)})")
    k = keep_count(f, n)
    if n == 0:
        return float("nan"), k
    if k == 0:
        return float("inf"), 0
    (t,) = one_row(con, load_sql("queries/curate_threshold"), {"pool": str(pool), "column": column, "k": k})
    return (float("nan") if t is None else float(t)), k


def _decide_one(con, pool: Path, spec: FilterSpec, n: int, out: Path) -> tuple[float | None, int | None]:
    if spec.kind == "all":
        con.sql(load_sql("queries/curate_keep_all"), params={"pool": str(pool)}).write_parquet(
            str(out), compression="zstd")
        return None, None
    if spec.kind == "keep_fraction":
        t, k = derive_threshold(con, pool, spec.column, spec.keep_fraction, n)
        keep_none = k == 0 or math.isnan(t)
        suffix = f" (keep top {_pct(spec.keep_fraction)}%)"
        none_reason = (f"keep top {_pct(spec.keep_fraction)}% of {n} rows keeps none (k = floor(f*N) = 0)"
                       if k == 0 else f"no {spec.column} value in the pool is a number")
    else:
        t, k = float(spec.threshold), None
        keep_none = False
        suffix, none_reason = "", ""
    con.sql(load_sql("queries/curate_decide"), params={
        "pool": str(pool), "column": spec.column, "threshold": t, "keep_none": keep_none, "name": spec.name,
        "suffix": suffix, "none_reason": none_reason,
    }).write_parquet(str(out), compression="zstd")
    return t, k


def subset_counts(con: duckdb.DuckDBPyConnection, path: Path | str) -> dict[str, int]:
    """Counts read back from one decisions file: rows, kept, dropped, distinct uids, dropped rows without a
    reason, kept rows with one."""
    r = one_row(con, load_sql("queries/curate_counts"), {"path": str(path)})
    keys = ("rows", "kept", "dropped", "distinct_uids", "dropped_without_reason", "kept_with_reason")
    return {k: int(v or 0) for k, v in zip(keys, r)}


def run_filters(con: duckdb.DuckDBPyConnection, pool: PoolInfo, specs: Iterable[FilterSpec], out_dir: Path,
                log=None) -> list[SubsetResult]:
    """Write ``out_dir/subset=<name>/part-00000.parquet`` (uid, drop, keep, reason) for every filter; base
    filters first, then the all_of subsets from their members' decisions. Returns one result per filter, in
    the order given."""
    specs = list(specs)
    missing = sorted({s.column for s in specs if s.column} - set(pool.columns)) if pool.rows else []
    if missing:
        raise FilterConfigError(f"column {missing[0]!r} is configured but the pool has no such column "
                                f"(pool columns: {', '.join(pool.columns)})")
    out_dir = Path(out_dir)
    done: dict[str, SubsetResult] = {}
    for spec in sorted(specs, key=lambda s: s.kind == "all_of"):
        path = decisions_path(spec.name, out_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        if pool.rows == 0:
            t, k = _empty_decisions(con, path, spec)
        elif spec.kind == "all_of":
            files = [str(done[m].path) for m in spec.all_of]
            con.sql(load_sql("queries/curate_intersect"), params={"files": files}).write_parquet(
                str(path), compression="zstd")
            t, k = None, None
        else:
            t, k = _decide_one(con, pool.path, spec, pool.rows, path)
        c = subset_counts(con, path)
        done[spec.name] = SubsetResult(
            name=spec.name, kind=spec.kind, rule=spec.rule, column=spec.column, keep_fraction=spec.keep_fraction,
            threshold=t, k=k, pool=c["rows"], kept=c["kept"], dropped=c["dropped"], path=path,
            description=spec.description)
        if log is not None:
            log(f"{spec.name}: {spec.rule}: kept {c['kept']} of {c['rows']}"
                + (f", threshold {t:.6g}" if t is not None else ""))
    return [done[s.name] for s in specs]


def _empty_decisions(con, path: Path, spec: FilterSpec) -> tuple[float | None, int | None]:
    con.sql(load_sql("queries/curate_empty")).write_parquet(str(path), compression="zstd")
    if spec.kind == "keep_fraction":
        return float("nan"), 0
    if spec.kind == "threshold":
        return float(spec.threshold), None
    return None, None


# ---------------------------------------------------------------------------------------------- the warehouse
# One subset's decisions (queries/curate_decide.sql and friends write these columns); the folder name adds subset.
DECISIONS_SCHEMA = pa.schema([("uid", pa.string()), ("drop", pa.string()), ("keep", pa.bool_()),
                              ("reason", pa.string())])
SUMMARY_SCHEMA = pa.schema([
    ("subset", pa.string()), ("kind", pa.string()), ("rule", pa.string()), ("column", pa.string()),
    ("keep_fraction", pa.float64()), ("k", pa.int64()), ("threshold", pa.float64()),
    ("pool", pa.int64()), ("kept", pa.int64()), ("dropped", pa.int64()), ("kept_fraction", pa.float64()),
    ("description", pa.string()), ("definition", pa.string()), ("model_ids", pa.string()),
    ("reference_ids", pa.string()), ("drops", pa.int64()), ("duplicates_removed", pa.int64()),
])


def summary_table(results: Sequence[SubsetResult], specs: Sequence[FilterSpec], pool: PoolInfo) -> pa.Table:
    """One row per subset; ``definition`` holds the whole filter configuration as JSON (the same on every row),
    so later assets (curation_report) and people see exactly which configuration produced the subsets."""
    definition = filters_to_json(specs)
    rows = [{
        "subset": r.name, "kind": r.kind, "rule": r.rule, "column": r.column, "keep_fraction": r.keep_fraction,
        "k": r.k, "threshold": r.threshold, "pool": r.pool, "kept": r.kept, "dropped": r.dropped,
        "kept_fraction": r.kept_fraction, "description": r.description, "definition": definition,
        "model_ids": ", ".join(pool.model_ids), "reference_ids": ", ".join(pool.reference_ids),
        "drops": len(pool.drops), "duplicates_removed": pool.duplicates_removed,
    } for r in results]
    return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)


def scratch_dir(home: Path | None) -> tempfile.TemporaryDirectory:
    """A hidden scratch folder in the warehouse (same disk as the outputs; named ``.staging-*`` so
    clip_assets.io.commit.clean_stale removes it if a run is killed)."""
    wh = warehouse_dir(home)
    if on_store(wh):  # the pool is DuckDB's scratch: local disk (the outputs are uploaded by the commit layer)
        return tempfile.TemporaryDirectory(prefix="clip-assets-curate-")
    wh.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=".staging-curate-", dir=wh)


def build_subsets(home: Path | None, specs: Sequence[FilterSpec], threads: int | None = None, log=None
                  ) -> tuple[PoolInfo, list[SubsetResult]]:
    """Evaluate ``specs`` over the current pool and swap ``warehouse/curated_subsets/`` in as a whole
    (decisions of every subset + subset_summary.parquet). Returns the pool, the results (paths in the
    committed folder). An empty pool (no scored drop) raises ValueError and leaves the warehouse untouched."""
    specs = list(specs)
    with catalog.scratch(threads) as con, scratch_dir(home) as scratch:
        pool = build_pool(con, home, Path(scratch) / "pool.parquet")
        if pool.rows == 0:
            raise ValueError("no pair is scored yet (no drop has both pair_scores and kl_stats): materialize "
                             "the scores of at least one drop first")
        if log is not None:
            log(f"pool: {pool.rows} pairs from {len(pool.drops)} drops ({pool.duplicates_removed} duplicate "
                "uids counted once, in the first drop by name)")
        final = subsets_dir(home)
        with stage_dir(final) as w:
            results = run_filters(con, pool, specs, w.staging, log=log)
            w.write_table(SUMMARY_FILE, summary_table(results, specs, pool))
        committed = resolve(final)  # the folder itself, or on a store the version its pointer now names
        for r in results:  # they now live in the committed folder
            r.path = committed / r.path.relative_to(w.staging).as_posix()
        pool.path = Path()  # the scratch pool file is gone
    return pool, results
