"""Plots of the reports: matplotlib on the Agg backend, PNG bytes out.

:func:`threshold_histogram` draws one score column's histogram with each subset's threshold as a labelled
vertical line; the legend (below the axes, never over the bars) gives each subset's rule and the share it really
keeps, e.g. ``kl_text: top 25% keeps 26.45% (1,058 of 4,000; ties at the threshold are kept)``.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from clip_assets.report.format import fmt, pct

LINE_COLOURS = ("#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (assets run without a display)."""
    import matplotlib  # imported here: matplotlib is only needed when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig, dpi: int = 90) -> bytes:
    """A figure as PNG bytes; the figure is closed."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for inline Markdown/HTML images."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass(frozen=True)
class Histogram:
    """Bin edges (bins + 1) and counts of one column; ``missing`` = rows with no finite value."""

    column: str
    edges: np.ndarray
    counts: np.ndarray
    missing: int = 0

    @property
    def rows(self) -> int:
        return int(self.counts.sum()) + int(self.missing)

    @classmethod
    def of(cls, column: str, values, bins: int = 50) -> "Histogram":
        """Histogram of in-memory values (e.g. one drop's scores): NaN and +-inf counted as ``missing``."""
        x = np.asarray(values, dtype=np.float64)
        finite = x[np.isfinite(x)]
        if finite.size == 0:
            return cls(column, np.linspace(0.0, 1.0, bins + 1), np.zeros(bins, np.int64), int(x.size))
        lo, hi = float(finite.min()), float(finite.max())
        counts, edges = np.histogram(finite, bins=bins, range=(lo, hi) if hi > lo else (lo - 0.5, lo + 0.5))
        return cls(column, edges, counts.astype(np.int64), int(x.size - finite.size))


@dataclass(frozen=True)
class ThresholdLine:
    """One subset's threshold on a column: its rule, and kept / pool read from the subset summary.
    ``k`` = floor(f * N) for keep-fraction rules (None otherwise), so ties kept show as kept > k."""

    subset: str
    rule: str
    threshold: float | None
    kept: int
    pool: int
    k: int | None = None

    def label(self) -> str:
        share = self.kept / self.pool if self.pool else float("nan")
        text = f"{self.subset}: {self.rule} keeps {pct(share)} ({fmt(self.kept)} of {fmt(self.pool)}"
        if self.k is not None and self.kept > self.k:
            text += f"; ties at the threshold are kept, k = {fmt(self.k)}"
        elif self.k is not None and self.kept < self.k:
            text += f"; fewer numbers than k = {fmt(self.k)}"
        return text + f"), threshold {fmt(self.threshold)}"


def threshold_histogram(hist: Histogram, lines: Sequence[ThresholdLine], title: str = ""):
    """The histogram of ``hist`` with one labelled vertical line per finite threshold in ``lines``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    widths = np.diff(hist.edges)
    ax.bar(hist.edges[:-1], hist.counts, width=widths, align="edge", color="#4c72b0", alpha=0.85,
           label=f"{fmt(int(hist.counts.sum()))} pairs" + (f" ({fmt(hist.missing)} without a value)"
                                                            if hist.missing else ""))
    for i, line in enumerate(lines):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        if line.threshold is None or not math.isfinite(line.threshold):
            ax.plot([], [], color=colour, linestyle="--", label=line.label() + " (no line: not a finite value)")
            continue
        ax.axvline(line.threshold, color=colour, linestyle="--", linewidth=1.6, label=line.label())
        ax.annotate(line.subset, xy=(line.threshold, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", color=colour, fontsize=8, rotation=90, va="top")
    ax.set_xlabel(hist.column)
    ax.set_ylabel("pairs per bin")
    ax.set_title(title or f"{hist.column}: distribution over the pool and the subsets' thresholds", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.2), fontsize=8, frameon=False)
    return fig


def bar_chart(labels: Sequence[str], values: Sequence[float], xlabel: str, title: str):
    """Horizontal bars, one per label, each with its value written beside it."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.2))
    y = np.arange(len(labels))
    ax.barh(y, values, color="#4c72b0")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    for yi, v in zip(y, values):
        ax.text(v, yi, " " + fmt(v), va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return fig
