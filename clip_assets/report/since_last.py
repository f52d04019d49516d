"""What changed in curated_subsets since its last materialization: drops added or gone, and per subset the
threshold and kept count before -> after. Pure: it compares two subset summaries (rows of
subset_summary.parquet: subset, rule, threshold, k, pool, kept, ...) and two drop lists."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pyarrow as pa

from clip_assets.report.format import fmt

COLUMNS = ("subset", "change", "rule", "threshold_before", "threshold_after", "kept_before", "kept_after",
           "kept_change", "pool_before", "pool_after")


@dataclass(frozen=True)
class SinceLast:
    """drops_added / drops_removed (sorted) and one row per subset of either summary (current order first, then
    subsets that are gone); ``first`` when there was no previous materialization."""

    drops_added: list[str]
    drops_removed: list[str]
    rows: list[dict]
    first: bool

    def headline(self) -> str:
        if self.first:
            return "no earlier report of curated_subsets to compare with (first materialization with a report)"
        parts = [f"drops added: {', '.join(self.drops_added) or 'none'}"]
        if self.drops_removed:
            parts.append(f"drops gone: {', '.join(self.drops_removed)}")
        changed = [r["subset"] for r in self.rows if r["change"] != "same"]
        parts.append(f"subsets changed: {', '.join(changed) or 'none'}")
        return "; ".join(parts)


def _as_rows(summary: pa.Table | Sequence[dict] | None) -> list[dict]:
    if summary is None:
        return []
    return summary.to_pylist() if isinstance(summary, pa.Table) else [dict(r) for r in summary]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def since_last(previous: pa.Table | Sequence[dict] | None, current: pa.Table | Sequence[dict],
               previous_drops: Iterable[str] | None, current_drops: Iterable[str]) -> SinceLast:
    """Compare the previous and the current subset summaries and drop lists (``previous`` None: first run).

    ``change`` per subset: "new", "gone", "rule changed", "changed" (threshold or kept count moved) or "same".
    """
    prev = {r["subset"]: r for r in _as_rows(previous)}
    cur = {r["subset"]: r for r in _as_rows(current)}
    before, after = set(previous_drops or ()), set(current_drops)
    rows = []
    for name in list(cur) + [n for n in prev if n not in cur]:
        p, c = prev.get(name), cur.get(name)
        if p is None:
            change = "new"
        elif c is None:
            change = "gone"
        elif p.get("rule") != c.get("rule"):
            change = "rule changed"
        elif _same(p.get("threshold"), c.get("threshold")) and p.get("kept") == c.get("kept"):
            change = "same"
        else:
            change = "changed"
        kb, ka = (p or {}).get("kept"), (c or {}).get("kept")
        rows.append({
            "subset": name, "change": change, "rule": (c or p).get("rule"),
            "threshold_before": (p or {}).get("threshold"), "threshold_after": (c or {}).get("threshold"),
            "kept_before": kb, "kept_after": ka, "kept_change": ka - kb if kb is not None and ka is not None else None,
            "pool_before": (p or {}).get("pool"), "pool_after": (c or {}).get("pool"),
        })
    return SinceLast(sorted(after - before), sorted(before - after), rows, previous is None)


def arrow_rows(result: SinceLast) -> list[dict]:
    """The table for people: threshold and kept as ``before -> after`` (each side through fmt)."""
    return [{"subset": r["subset"], "change": r["change"], "rule": r["rule"],
             "threshold": f"{fmt(r['threshold_before'])} -> {fmt(r['threshold_after'])}",
             "kept": f"{fmt(r['kept_before'])} -> {fmt(r['kept_after'])}",
             "kept_change": "-" if r["kept_change"] is None else f"{r['kept_change']:+,}",
             "pool": f"{fmt(r['pool_before'])} -> {fmt(r['pool_after'])}"} for r in result.rows]


def pivot_kept_per_drop(rows: Sequence[dict], subsets: Sequence[str]) -> list[dict]:
    """Rows (drop, subset, pool, kept) as one row per drop: drop, pool, then the kept count of each subset."""
    by_drop: dict[str, dict] = {}
    for r in rows:
        d = by_drop.setdefault(r["drop"], {"drop": r["drop"], "pool": r["pool"]})
        d[r["subset"]] = r["kept"]
    return [{"drop": d["drop"], "pool": d["pool"], **{s: d.get(s) for s in subsets}}
            for d in (by_drop[k] for k in sorted(by_drop))]
