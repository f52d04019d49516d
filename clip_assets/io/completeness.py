"""Is a per-drop partition whole? Its uids against the drop's raw_pairs, the one source of truth of what a drop holds.
Also the cheap counts the per-drop checks read back (row counts from Parquet footers, embedding norms).

A folder with Parquet files is not yet a complete partition: a run killed in the middle of embeddings leaves the
shards it finished (each committed on its own, so the run can resume). Every asset that reads an upstream
partition asks :func:`require_complete` first and refuses a partial one instead of computing on part of a drop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow.compute as pc

from clip_assets.io import fs
from clip_assets.io.commit import resolve
from clip_assets.io.tables import fixed_list_to_numpy, read_partition, read_partitions
from clip_assets.io.warehouse import partition_dir

SOURCE = "raw_pairs"


class IncompletePartitionError(ValueError):
    """An upstream partition whose uids do not match raw_pairs; the message names the drop, assets and counts."""


@dataclass(frozen=True)
class Completeness:
    """One partition of ``asset`` for ``drop`` against raw_pairs: counts of rows and uids."""

    asset: str
    drop: str
    rows: int  # rows in the partition (per group when ``per`` is given: the smallest group)
    expected: int  # raw_pairs rows of the drop
    missing: int  # raw_pairs uids absent from the partition (in some group)
    extra: int  # partition uids that raw_pairs does not hold
    duplicated: int  # uids appearing more than once (within a group)
    present: bool = True  # False: no Parquet file at all

    @property
    def ok(self) -> bool:
        return self.present and self.missing == 0 and self.extra == 0 and self.duplicated == 0

    def describe(self) -> str:
        if not self.present:
            return f"{self.asset} of drop {self.drop!r} has no rows (raw_pairs holds {self.expected})"
        return (f"{self.asset} of drop {self.drop!r} holds {self.rows} rows for {self.expected} raw_pairs rows "
                f"({self.missing} raw_pairs uids missing, {self.extra} uids not in raw_pairs, "
                f"{self.duplicated} duplicated)")


def _uid_counts(uids: list[str]) -> tuple[set[str], int]:
    counts = Counter(uids)
    return set(counts), sum(1 for n in counts.values() if n > 1)


def completeness(asset: str, drop: str, home: Path | None = None, per: str | None = None) -> Completeness:
    """Compare the uids of ``asset``'s partition with raw_pairs' for ``drop`` (uid columns only are read).

    ``per``: a column splitting the partition into groups that must each hold every uid once (e.g. ``prompt`` of
    importance_weights); the worst group is reported.
    """
    try:
        raw = read_partition(SOURCE, drop, home, columns=["uid"])["uid"].to_pylist()
    except FileNotFoundError as e:
        raise IncompletePartitionError(f"cannot check {asset} of drop {drop!r} against raw_pairs: {e}") from None
    expected = set(raw)
    try:
        t = read_partition(asset, drop, home, columns=["uid"] + ([per] if per else []))
    except FileNotFoundError:
        return Completeness(asset, drop, 0, len(raw), len(expected), 0, 0, present=False)
    groups = [t] if per is None else [t.filter(pc.equal(t[per], v)) for v in pc.unique(t[per]).to_pylist()]
    worst = Completeness(asset, drop, t.num_rows, len(raw), 0, 0, 0, present=t.num_rows > 0 or not raw)
    for g in groups:
        uids, dup = _uid_counts(g["uid"].to_pylist())
        c = Completeness(asset, drop, g.num_rows, len(raw), len(expected - uids), len(uids - expected), dup,
                         present=worst.present)
        if (c.missing, c.extra, c.duplicated) > (worst.missing, worst.extra, worst.duplicated):
            worst = c
    return worst


def require_complete(asset: str, drops: Iterable[str], consumer: str, home: Path | None = None,
                     per: str | None = None) -> list[Completeness]:
    """:func:`completeness` of every drop; raise IncompletePartitionError naming each incomplete one, else return
    the results (in ``drops`` order)."""
    results = [completeness(asset, d, home, per=per) for d in drops]
    bad = [c for c in results if not c.ok]
    if bad:
        raise IncompletePartitionError(
            f"{consumer} refuses incomplete upstream: " + "; ".join(c.describe() for c in bad)
            + f". Re-materialize {asset} for " + ", ".join(repr(c.drop) for c in bad) + " first.")
    return results


def drop_counts(drop: str, home: Path | None = None) -> tuple[int, int, int]:
    """(raw_pairs rows, distinct raw_pairs uids, rejected_pairs rows) of ``drop`` as the warehouse holds them."""
    try:  # both from one commit (read_partitions), so the three counts describe one state of the drop
        raw_t, rej_t = read_partitions([SOURCE, "rejected_pairs"], drop, home, columns=["uid"])
    except FileNotFoundError:
        raw_t, rej_t = read_partition(SOURCE, drop, home, columns=["uid"]), None
    raw = raw_t["uid"]
    return len(raw), len(pc.unique(raw)), rej_t.num_rows if rej_t is not None else 0


def partition_rows(asset: str, drop: str, home: Path | None = None) -> int:
    """Rows of one partition from its Parquet footers (no data read); 0 without files."""
    files = sorted(resolve(partition_dir(asset, drop, home)).glob("part-*.parquet"))
    return sum(fs.parquet_metadata(f).num_rows for f in files)


def embedding_quality(files: Iterable[Path], norm_tol: float = 1e-2) -> dict:
    """Finite values and unit norms (within ``norm_tol``: float16 storage) of the embeddings in ``files``."""
    finite, max_dev, rows = True, 0.0, 0
    for f in files:
        t = fs.read_table(f, columns=["image_emb", "text_emb"])
        for name in ("image_emb", "text_emb"):
            x = fixed_list_to_numpy(t[name])
            finite &= bool(np.isfinite(x).all())
            if len(x):
                max_dev = max(max_dev, float(np.max(np.abs(np.linalg.norm(x, axis=1) - 1.0))))
        rows += t.num_rows
    return {"rows_read": rows, "finite": finite, "max_norm_deviation": max_dev,
            "ok": bool(finite and max_dev <= norm_tol)}
