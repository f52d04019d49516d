"""Tables and plots of the curate domain: subset summary, curation report (synthetic truth), N-gram analysis."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure  # no pyplot: no global backend state

from clip_assets.core.ngrams import decile_bins, text_stat_correlations, topk_coverage
from clip_assets.curate.filters import FilterSpec, SubsetResult, one_row
from clip_assets.io import fs
from clip_assets.io.catalog import load_sql

TRUTH_SUFFIX = ".truth.parquet"  # <landing>/<drop>.truth.parquet, written by clip_assets.world


def _bar_fig(names, values, xlabel, title) -> Figure:
    fig = Figure(figsize=(7, 0.35 * len(names) + 1.2))
    ax = fig.subplots()
    ax.barh(names[::-1], values[::-1], color="#4c72b0")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def subsets_plot(results: Sequence[SubsetResult]) -> Figure:
    return _bar_fig([r.name for r in results], [r.kept_fraction if r.pool else 0.0 for r in results],
                    "kept fraction of the pool", "curated subsets")


# ------------------------------------------------------------------------------------------ curation report
def report_setting(spec: FilterSpec, f: float) -> str:
    """How a filter is evaluated in the report: its rule at keep fraction ``f`` (:attr:`FilterSpec.rule`); a
    threshold filter keeps its own threshold, an all_of filter evaluates its members at ``f``: say so."""
    if spec.kind == "threshold":
        return f"{spec.rule} (its own threshold, not a {f * 100:g}% keep-fraction)"
    if spec.kind == "all_of":
        return f"all of {', '.join(spec.all_of)} (keep-fraction members at {f * 100:g}% each)"
    return spec.at_fraction(f).rule


REPORT_SCHEMA = pa.schema([
    ("filter", pa.string()), ("setting", pa.string()), ("keep_fraction", pa.float64()),
    ("threshold", pa.float64()), ("pool", pa.int64()), ("kept", pa.int64()), ("kept_fraction", pa.float64()),
    ("aligned_share", pa.float64()), ("misaligned_share", pa.float64()), ("placeholder_share", pa.float64()),
    ("placeholders_kept", pa.float64()), ("mean_true_log_ratio", pa.float64()),
    ("mean_true_kl_text", pa.float64()), ("mean_true_kl_image", pa.float64()),
])


def curation_report_rows(con, specs: Sequence[FilterSpec], results: Sequence[SubsetResult],
                         truth_files: list[str], f: float) -> list[dict]:
    """One row per filter: the truth of its kept rows (``curate_report.sql``) over the pool rows with truth."""
    by_name = {s.name: s for s in specs}
    rows = []
    for r in results:
        spec = by_name[r.name]
        (pool_t, kept, aligned, misaligned, placeholder, ph_kept, mean_lr, mean_klt, mean_kli) = one_row(
            con, load_sql("queries/curate_report"), {"decisions": str(r.path), "truth_files": truth_files})
        rows.append({
            "filter": r.name, "setting": report_setting(spec, f),
            "keep_fraction": f if spec.kind == "keep_fraction" else None,
            "threshold": r.threshold, "pool": int(pool_t), "kept": int(kept),
            "kept_fraction": kept / pool_t if pool_t else float("nan"),
            "aligned_share": aligned, "misaligned_share": misaligned, "placeholder_share": placeholder,
            "placeholders_kept": ph_kept, "mean_true_log_ratio": mean_lr, "mean_true_kl_text": mean_klt,
            "mean_true_kl_image": mean_kli,
        })
    return rows


def report_plot(rows: list[dict], f: float) -> Figure:
    names = [r["filter"] for r in rows]
    x = np.arange(len(names))

    def col(c):
        return np.array([np.nan if r[c] is None else r[c] for r in rows], dtype=float)

    fig = Figure(figsize=(13, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    w = 0.27
    ax1.bar(x - w, col("aligned_share"), w, label="aligned share of kept", color="#4c72b0")
    ax1.bar(x, col("placeholder_share"), w, label="placeholder share of kept", color="#c44e52")
    ax1.bar(x + w, col("kept_fraction"), w, label="kept fraction of pool", color="#8c8c8c")
    ax1.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
    ax1.set_ylim(0, 1.05)
    ax1.legend(fontsize=7)
    ax1.set_title(f"kept pairs vs synthetic truth (keep-fraction filters at {f * 100:g}%)", fontsize=9)
    ax2.bar(x, col("mean_true_log_ratio"), 0.6, color="#55a868")
    ax2.axhline(0, color="k", lw=0.6)
    ax2.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
    ax2.set_title("mean true log p(y|x)/p(y) of the kept pairs", fontsize=9)
    fig.tight_layout()
    return fig


def truth_files(landing: Path | str, drops: Sequence[str]) -> tuple[list[str], list[str]]:
    """(truth files, drops that have one) for ``drops`` (synthetic drops have ``<landing>/<drop>.truth.parquet``;
    the landing may be a store URL: the files are then URLs, for a connection with the store registered)."""
    paths = {d: fs.join(landing, f"{d}{TRUTH_SUFFIX}") for d in drops}
    have = [d for d in drops if fs.exists(paths[d])]
    return [paths[d] for d in have], have


# ------------------------------------------------------------------------------------------ N-gram analysis
SIDES = (("text", "text_kl"), ("image", "image_kl"))

COVERAGE_SCHEMA = pa.schema([
    ("side", pa.string()), ("kl_column", pa.string()), ("decile", pa.int64()), ("rows", pa.int64()),
    ("kl_min", pa.float64()), ("kl_max", pa.float64()), ("n", pa.int64()), ("k", pa.int64()),
    ("coverage", pa.float64()), ("occurrences", pa.int64()), ("distinct_ngrams", pa.int64()),
])
CORRELATION_SCHEMA = pa.schema([
    ("side", pa.string()), ("kl_column", pa.string()), ("statistic", pa.string()), ("pearson", pa.float64()),
    ("rows", pa.int64()),
])


def ngram_tables(captions: list, kl: dict[str, np.ndarray], ns: Sequence[int], ks: Sequence[int]
                 ) -> tuple[pa.Table, pa.Table]:
    """Coverage of the top-K n-grams per KL decile, and Pearson r of KL with caption statistics, per side.

    ``kl`` maps each KL column of :data:`SIDES` to its values (M,). Deciles: clip_assets.core.ngrams.decile_bins
    (0 = lowest KL). Coverage: clip_assets.core.ngrams.topk_coverage.
    """
    cov_rows, corr_rows = [], []
    for side, column in SIDES:
        values = np.asarray(kl[column], dtype=np.float64)
        bins = decile_bins(values, 10)
        ranges = {}
        for b in sorted(set(int(v) for v in bins) - {-1}):
            sel = values[bins == b]
            ranges[b] = (int(sel.size), float(sel.min()), float(sel.max()))
        for row in topk_coverage(captions, bins, ns=ns, ks=ks):
            size, lo, hi = ranges[row["bin"]]
            cov_rows.append({"side": side, "kl_column": column, "decile": row["bin"], "rows": size,
                             "kl_min": lo, "kl_max": hi, "n": row["n"], "k": row["k"],
                             "coverage": row["coverage"], "occurrences": row["occurrences"],
                             "distinct_ngrams": row["distinct"]})
        finite = int(np.isfinite(values).sum())
        for stat, r in text_stat_correlations(captions, values).items():
            corr_rows.append({"side": side, "kl_column": column, "statistic": stat, "pearson": r, "rows": finite})
    return (pa.Table.from_pylist(cov_rows, schema=COVERAGE_SCHEMA),
            pa.Table.from_pylist(corr_rows, schema=CORRELATION_SCHEMA))


def ngram_heatmap(coverage: pa.Table, ns: Sequence[int], ks: Sequence[int]) -> Figure:
    """Deciles (rows, 0 = lowest KL at the bottom) x (n, K) (columns), colour = coverage, one panel per side."""
    rows = coverage.to_pylist()
    cols = [(n, k) for n in ns for k in ks]
    fig = Figure(figsize=(6.5 * len(SIDES), 4.6))
    axes = fig.subplots(1, len(SIDES))
    for ax, (side, column) in zip(np.ravel(axes), SIDES):
        deciles = sorted({r["decile"] for r in rows if r["side"] == side})
        grid = np.full((max(len(deciles), 1), len(cols)), np.nan)
        for r in rows:
            if r["side"] == side:
                grid[deciles.index(r["decile"]), cols.index((r["n"], r["k"]))] = r["coverage"]
        im = ax.imshow(grid, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not math.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if grid[i, j] < 0.6 else "black")
        ax.set_xticks(range(len(cols)), [f"n={n}\nK={k}" for n, k in cols], fontsize=6)
        ax.set_yticks(range(len(deciles)), [str(d) for d in deciles], fontsize=7)
        ax.set_ylabel(f"{column} decile (0 = lowest)")
        ax.set_title(f"{side} side: share of n-gram occurrences covered by the top-K n-grams", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def coverage_checks(coverage: pa.Table, ns: Sequence[int], captions: int) -> dict:
    """What ngram_analysis' check asserts: coverage non-decreasing in K (per side, decile, n), every coverage in
    [0, 1] (NaN for an empty decile allowed), ten deciles per side (unless fewer than ten captions)."""
    cov = coverage.to_pylist()
    monotone = True
    for side, _ in SIDES:
        for d in {r["decile"] for r in cov if r["side"] == side}:
            for n in ns:
                vals = [r["coverage"] for r in sorted(cov, key=lambda r: r["k"])
                        if r["side"] == side and r["decile"] == d and r["n"] == n]
                vals = [v for v in vals if not math.isnan(v)]
                monotone &= all(a <= b + 1e-12 for a, b in zip(vals, vals[1:]))
    in_range = all(math.isnan(r["coverage"]) or 0.0 <= r["coverage"] <= 1.0 for r in cov)
    deciles = {side: len({r["decile"] for r in cov if r["side"] == side}) for side, _ in SIDES}
    ten = all(v == 10 for v in deciles.values()) or captions < 10
    return {"monotone_in_k": monotone, "in_range": in_range, "ten_deciles": ten, "deciles": deciles,
            "passed": bool(monotone and in_range and ten)}
