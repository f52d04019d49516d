"""The sheets of a report: which sheets exist for a subset, a KL column, a drop, each with its rows selected by
:mod:`clip_assets.report.select` (nothing rendered here)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from clip_assets.report import select
from clip_assets.report.format import fmt, pct
from clip_assets.report.sheets import Sheet

PER_SHEET = 24
KL_COLUMNS = ("image_kl", "text_kl")
SIDE_TEXT = {
    "kept_top": "kept rows with the highest {c} (ties by uid)",
    "kept_near": "kept rows just above the threshold {t}: the lowest {c} among the kept (ties by uid)",
    "dropped_near": "dropped rows just below the threshold {t}: the highest {c} among the dropped (ties by uid)",
    "dropped_bottom": "dropped rows with the lowest {c} (rows without a value last; ties by uid)",
    "kept_sample": "kept rows, the first by uid (a deterministic sample)",
    "dropped_sample": "dropped rows, the first by uid (a deterministic sample)",
}


def subset_sides(kind: str) -> tuple[str, ...]:
    """The sheets a subset of this kind gets: both ends and both sides of the threshold for a one-column
    rule, a kept sample for keep-all, kept and dropped samples for all_of."""
    if kind in ("keep_fraction", "threshold"):
        return select.SUBSET_SIDES
    return ("kept_sample",) if kind == "all" else ("kept_sample", "dropped_sample")


def subset_sheets(con, home: Path | None, summary: Sequence[dict], n: int = PER_SHEET) -> list[Sheet]:
    """Every sheet of every subset in ``summary`` (rows of subset_summary.parquet), in summary order."""
    out = []
    for s in summary:
        column = s.get("column")
        head = (f"{s['subset']}: {s['rule']}, keeps {fmt(s['kept'])} of {fmt(s['pool'])} "
                f"({pct(s['kept'] / s['pool'] if s['pool'] else None)}"
                + (f"; k = {fmt(s['k'])}, ties at the threshold kept" if s.get("k") is not None
                   and s["kept"] > s["k"] else "") + ")")
        for side in subset_sides(s["kind"]):
            rows = select.subset_rows(con, home, s["subset"], side, n, column)
            desc = SIDE_TEXT[side].format(c=column, t=fmt(s.get("threshold")))
            out.append(Sheet(f"subset-{s['subset']}-{side}", head, f"{desc}; {len(rows)} shown", column or "",
                             rows, group=f"subset {s['subset']}",
                             extra={"subset": s["subset"], "side": side, "column": column,
                                    "threshold": s.get("threshold"), "kept": s["kept"], "pool": s["pool"]}))
    return out


def decile_sheets(con, home: Path | None, columns: Sequence[str] = KL_COLUMNS, n: int = PER_SHEET,
                  drops: Sequence[str] | None = None) -> list[Sheet]:
    """One sheet per decile of each column (over ``drops``, default all), decile 1 = the lowest values."""
    out = []
    for column in columns:
        for decile, rows in sorted(select.decile_rows(con, home, column, n, drops).items()):
            r0 = rows[0]
            title = (f"{column} decile {decile} of 10: {fmt(r0['lo'])} to {fmt(r0['hi'])} "
                     f"({fmt(int(r0['rows_in_decile']))} rows)")
            out.append(Sheet(f"decile-{column}-{decile:02d}", title,
                             f"the first {len(rows)} rows by uid of this decile (deciles by {column}, ties by uid)",
                             column, rows, group=f"{column} deciles",
                             extra={"column": column, "decile": decile, "lo": r0["lo"], "hi": r0["hi"],
                                    "rows_in_decile": int(r0["rows_in_decile"])}))
    return out


def drop_sheets(con, home: Path | None, drops: Sequence[str], n: int = PER_SHEET,
                column: str = "clip_score") -> list[Sheet]:
    """One sample sheet per drop (its first ``n`` rows by uid), with ``column`` when the drop is scored."""
    out = []
    for drop in drops:
        rows = select.drop_rows(con, home, drop, n, column)
        out.append(Sheet(f"drop-{drop}", f"drop {drop}",
                         f"the first {len(rows)} rows by uid of raw_pairs (a deterministic sample)", column, rows,
                         group="drops", extra={"drop": drop}))
    return out
