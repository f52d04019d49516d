"""Reports an asset writes per materialization, under ``<home>/reports/<asset>/<key>/``::

    index.html           the report (open it in a browser; no Dagster needed)
    plots/<name>.png     the plots it shows
    sheets/<name>.png    contact sheets, each with sheets/<name>.json (its uids in grid order)
    state.json           what the next report compares with (curated_subsets: the summary rows and drops)

``<key>`` is ``<UTC time to the microsecond>-<first 8 characters of the run id>`` (plus ``-<drop>`` for a
per-drop report), so folder names sort by time. A folder is written through the commit layer as a whole.

Entry points for assets: :func:`curated_subsets_report` (global) and :func:`drop_report` (per drop). An asset
calls one after its data is committed and adds the links and summary to its metadata::

    from clip_assets.defs.plots import report_metadata
    from clip_assets.report.build import curated_subsets_report, drop_report

    rep = curated_subsets_report(home.path(), context.run_id)           # in curated_subsets
    rep = drop_report(home.path(), "kl_stats", drop, context.run_id)    # in a per-drop asset
    metadata.update(report_metadata(rep))  # summary (the glance, inline), report, report_url, report_details

Each report also has a glance (:mod:`clip_assets.report.glance`): under 1,000 characters with one tiny plot, so
Dagster's UI shows it inline on the asset's page; the full Markdown (large plots) is one click deep.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from clip_assets.config import data_home
from clip_assets.io.commit import remove_tree, stage_dir, write_text
from clip_assets.io.exports import read_summary
from clip_assets.io.tables import drops_with
from clip_assets.report import collect, select, sheets
from clip_assets.report.format import fmt, pct
from clip_assets.report.glance import glance_markdown, glance_png
from clip_assets.report.html import Section, html_page, markdown_summary, section_markdown
from clip_assets.report.plots import ThresholdLine, bar_chart, png_bytes, threshold_histogram
from clip_assets.report.since_last import arrow_rows, pivot_kept_per_drop, since_last

STATE_FILE = "state.json"
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,200}$")


@dataclass(frozen=True)
class Report:
    """A written report: its folder, index.html, its full Markdown, its sheets, and the glance (short
    Markdown with one tiny plot that the asset page shows inline)."""

    folder: Path
    index: Path
    markdown: str
    sheets: list[sheets.SheetFile]
    glance: str = ""
    parts: dict[str, str] = field(default_factory=dict)  # section title -> its Markdown
    inline: dict[str, str] = field(default_factory=dict)  # name -> Markdown short enough to show inline


def reports_dir(home: Path | None, asset: str) -> Path:
    return data_home(home) / "reports" / asset


def run_key(run_id: str, drop: str | None = None, when: datetime | None = None) -> str:
    """Folder name of one materialization's report (sorts by time; see module doc)."""
    when = when or datetime.now(timezone.utc)
    key = f"{when:%Y%m%dT%H%M%S.%f}Z-{str(run_id)[:8]}" + (f"-{drop}" if drop else "")
    if not KEY_RE.match(key) or ".." in key:
        raise ValueError(f"bad report key {key!r} (from run id {run_id!r}, drop {drop!r})")
    return key


def previous_state(home: Path | None, asset: str, before: str) -> dict | None:
    """state.json of the newest report of ``asset`` whose key sorts before ``before``, or None."""
    root = reports_dir(home, asset)
    keys = sorted(p.name for p in root.iterdir() if (p / STATE_FILE).is_file()) if root.is_dir() else []
    keys = [k for k in keys if k < before and not k.startswith(".")]
    return json.loads((root / keys[-1] / STATE_FILE).read_text()) if keys else None


def prune(home: Path | None, asset: str, keep: int = 20, drop: str | None = None) -> list[str]:
    """Remove all but the newest ``keep`` report folders of ``asset`` (with ``drop``: of that drop's reports, told
    by their state.json, the other drops' untouched); returns the removed keys."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the newest report is never removed), got {keep!r}")
    root = reports_dir(home, asset)
    keys = sorted(p.name for p in root.iterdir() if p.is_dir() and KEY_RE.match(p.name)) if root.is_dir() else []
    if drop is not None:
        keys = [k for k in keys if _state_drop(root / k) == drop]
    old = keys[:-keep]
    for k in old:
        remove_tree(root / k)
    if old:
        write_index(home, asset)
    return old


def _state_drop(folder: Path) -> str | None:
    try:
        return json.loads((folder / STATE_FILE).read_text()).get("drop")
    except (OSError, ValueError, AttributeError):
        return None


def write_report(home: Path | None, asset: str, key: str, title: str, sections: Sequence[Section],
                 sheet_list: Sequence[sheets.Sheet] = (), subtitle: str = "", state: dict | None = None,
                 glance: str = "", inline: dict[str, str] | None = None) -> Report:
    """Write one report folder (``key`` from :func:`run_key`): sheets rendered (PNG + JSON), plots, index.html
    and state.json when given, as one commit; then refresh the asset's list of reports. Any asset can call it
    with its own sections."""
    folder = reports_dir(home, asset) / key
    sections = list(sections)
    with stage_dir(folder, plain=True, marker="index.html") as st:
        files = [sheets.write(st, s) for s in sheet_list]
        if files:
            sections.append(Section("Contact sheets", text=f"{len(files)} sheets; green border = kept, red = "
                                    "dropped, grey = no subset; click a sheet for full size.", sheets=files))
        for s in sections:
            if s.plot is not None:
                st.write_bytes(s.plot_path, s.plot)
        st.write_bytes("index.html", html_page(title, subtitle or f"report {key}", sections).encode("utf-8"))
        if state is not None:
            st.write_json(STATE_FILE, state)
    write_index(home, asset)
    index = folder / "index.html"
    return Report(folder, index, markdown_summary(title, sections, str(index)), files, glance,
                  {s.title: section_markdown(s) for s in sections}, dict(inline or {}))


def write_index(home: Path | None, asset: str) -> Path:
    """``<home>/reports/<asset>/index.html``: every report folder of the asset, newest first, linked."""
    root = reports_dir(home, asset)
    keys = sorted((p.name for p in root.iterdir() if (p / "index.html").is_file() and KEY_RE.match(p.name)),
                  reverse=True)
    section = Section("Reports", text=f"{len(keys)} reports, newest first",
                      rows=[{"report": k} for k in keys], links={"report": "{}/index.html"})
    return write_text(root / "index.html", html_page(f"{asset}: reports", "", [section]))


def _summary_rows(summary: Sequence[dict]) -> list[dict]:
    return [{"subset": s["subset"], "rule": s["rule"], "threshold": s["threshold"], "k": s["k"],
             "kept": s["kept"], "pool": s["pool"], "kept_share": pct(s["kept_fraction"]),
             "kept_beyond_k_by_ties": (s["kept"] - s["k"]) if s["k"] is not None and s["kept"] > s["k"] else None}
            for s in summary]


def _threshold_lines(summary: Sequence[dict]) -> dict[str, list[ThresholdLine]]:
    """Per score column, the threshold of every one-column subset on it, in summary order."""
    by_column: dict[str, list[ThresholdLine]] = {}
    for s in summary:
        if s["kind"] in ("keep_fraction", "threshold") and s["column"]:
            by_column.setdefault(s["column"], []).append(
                ThresholdLine(s["subset"], s["rule"], s["threshold"], s["kept"], s["pool"], s["k"]))
    return by_column


def _plural(n: int, word: str) -> str:
    return f"{fmt(n)} {word}{'' if n == 1 else 's'}"


def _subsets_glance(summary: Sequence[dict], drops: Sequence[str], change, hists: dict) -> str:
    """The inline summary of curated_subsets: pool, what changed, the first histogram with its thresholds,
    and per subset kept and threshold (before -> after)."""
    lines = [f"pool {fmt(summary[0]['pool'])} pairs from {_plural(len(drops), 'drop')}, "
             f"{_plural(len(summary), 'subset')}", change.headline()[:240]]
    png, caption = None, ""
    if hists:
        column, (hist, tl) = next(iter(hists.items()))
        png = glance_png(hist, [t.threshold for t in tl])
        caption = f"{column}; red: thresholds of {', '.join(t.subset for t in tl)}"
    if change.first:  # nothing to compare with: the values themselves
        rows = [{"subset": s["subset"], "kept": s["kept"], "threshold": s["threshold"]} for s in summary]
    else:
        rows = [{"subset": r["subset"], "kept": r["kept"], "threshold": r["threshold"]} for r in arrow_rows(change)]
    return glance_markdown("curated_subsets", lines, png, caption, rows)


def curated_subsets_report(home: Path | None, run_id: str, per_sheet: int = collect.PER_SHEET,
                           deciles: bool = True) -> Report:
    """The report of one curated_subsets materialization (call it after the subsets are committed): subset
    table, kept shares, one histogram per score column with each subset's threshold, "since the last
    materialization" (drops added; threshold and kept before -> after), kept per drop, contact sheets of every
    subset (and of the image/caption KL deciles when ``deciles``)."""
    table = read_summary(home)
    if table is None or not table.num_rows:
        raise ValueError("curated_subsets has no subset summary yet: materialize it before its report")
    summary = table.to_pylist()
    drops = sorted(set(drops_with("pair_scores", home)) & set(drops_with("kl_stats", home)))
    key = run_key(run_id)
    prev = previous_state(home, "curated_subsets", key)
    change = since_last(prev and prev["summary"], summary, prev and prev["drops"], drops)
    con = select.connect()
    try:
        with select.one_listing():  # one listing of the warehouse for all sheets and plots
            kept_drop = pivot_kept_per_drop(select.kept_per_drop(con, home), [s["subset"] for s in summary])
            hists = {c: (h, tl) for c, tl in _threshold_lines(summary).items()
                     if (h := select.histogram(con, home, c)) is not None}
            sheet_list = collect.subset_sheets(con, home, summary, per_sheet)
            if deciles:
                sheet_list += collect.decile_sheets(con, home, collect.KL_COLUMNS, per_sheet)
    finally:
        con.close()
    shares = [s["kept_fraction"] if s["kept_fraction"] is not None and not math.isnan(s["kept_fraction"])
              else 0.0 for s in summary]
    sections = [
        Section("Since the last materialization", text=change.headline(), rows=arrow_rows(change)),
        Section("Subsets", text=f"pool: {fmt(summary[0]['pool'])} pairs from {_plural(len(drops), 'drop')}",
                rows=_summary_rows(summary)),
        Section("Kept share per subset", plot=png_bytes(bar_chart(
            [s["subset"] for s in summary], [100.0 * v for v in shares], "kept share of the pool (%)",
            "kept share per subset (ties at a threshold are kept)"))),
        *[Section(f"{c} histogram", plot=png_bytes(threshold_histogram(h, tl)),
                  text="; ".join(line.label() for line in tl)) for c, (h, tl) in hists.items()],
        Section("Kept per drop", text="pool rows of each drop and how many each subset keeps", rows=kept_drop),
    ]
    return write_report(home, "curated_subsets", key, "curated_subsets", sections, sheet_list,
                        f"report {key}, {_plural(len(drops), 'drop')}", state={"summary": summary, "drops": drops},
                        glance=_subsets_glance(summary, drops, change, hists),
                        inline={"since_last": glance_markdown(
                            "since the last materialization", [change.headline()[:300]], rows=arrow_rows(change),
                            columns=["subset", "change", "threshold", "kept", "kept_change"])})


def drop_report(home: Path | None, asset: str, drop: str, run_id: str, per_sheet: int = collect.PER_SHEET,
                columns: Sequence[str] = collect.KL_COLUMNS, deciles: bool = True) -> Report:
    """The report of one drop's materialization of ``asset``: a sample sheet of the drop and, once the drop is
    scored, a histogram of each of ``columns`` over the drop (and their decile sheets when ``deciles``)."""
    key = run_key(run_id, drop)
    con = select.connect()
    try:
        with select.one_listing():  # one listing of the warehouse for all sheets and plots
            sheet_list = collect.drop_sheets(con, home, [drop], per_sheet)
            hists = {}
            if any(drop in drops_with(a, home) for a in select.SCORE_ASSETS):
                hists = {c: h for c in columns if (h := select.histogram(con, home, c, drops=[drop])) is not None}
                if deciles:
                    sheet_list += collect.decile_sheets(con, home, list(hists), per_sheet, drops=[drop])
    finally:
        con.close()
    sections = [Section(f"{c} histogram", plot=png_bytes(threshold_histogram(h, [], title=f"{c} over drop {drop}")))
                for c, h in hists.items()]
    rows = [{"score": c, "min": float(h.edges[0]), "max": float(h.edges[-1]), "pairs": h.rows,
             "without_value": h.missing} for c, h in hists.items()]
    first = next(iter(hists), None)
    lines = [f"{_plural(len(sheet_list[0].rows), 'sample')} on the drop's sheet, "
             f"{_plural(len(sheet_list), 'contact sheet')} in the report"]
    glance = glance_markdown(f"{asset}: drop {drop}", lines, glance_png(hists[first]) if first else None,
                             f"{first} over the drop" if first else "", rows)
    return write_report(home, asset, key, f"{asset}: drop {drop}", sections, sheet_list, glance=glance,
                        state={"drop": drop})
