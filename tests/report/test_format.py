"""One formatting rule: rounded numbers, '-' for missing values, no float noise."""

import math

import numpy as np

from clip_assets.report.format import fmt, markdown_rows, pct
from clip_assets.report.plots import Histogram, ThresholdLine, png_bytes, threshold_histogram


def test_fmt_rounds_and_marks_missing():
    assert fmt(0.0040000000000000036) == "0.004"
    assert fmt(0.1 + 0.2) == "0.3"
    assert fmt(float("nan")) == fmt(None) == fmt("") == "-"
    assert fmt(32000) == "32,000" and fmt(2.0) == "2" and fmt(123456.789) == "123,457"
    assert fmt(float("inf")) == "inf" and fmt(-math.inf) == "-inf"
    assert fmt(np.float32(0.25)) == "0.25" and fmt(np.int64(7)) == "7" and fmt(True) == "yes"
    assert pct(0.2645) == "26.45%" and pct(0.25) == "25%" and pct(float("nan")) == "-"


def test_markdown_rows_has_no_nan_or_noise():
    md = markdown_rows([{"a": float("nan"), "b": 0.0040000000000000036, "c": None, "d": "x|y"}])
    assert "nan" not in md.lower() and "0.004" in md and "00000" not in md
    assert md.splitlines()[2] == "| - | 0.004 | - | x\\|y |"
    assert markdown_rows([]) == "_(no rows)_"


def test_threshold_label_says_ties_are_kept():
    line = ThresholdLine("kl_text", "top 25% by text_kl", 0.7, kept=1058, pool=4000, k=1000)
    label = line.label()
    assert "keeps 26.45%" in label and "1,058 of 4,000" in label and "ties" in label and "0.7" in label
    assert "ties" not in ThresholdLine("a", "top 25% by x", 0.7, kept=1000, pool=4000, k=1000).label()


def test_histogram_of_values_counts_missing_and_plots_with_labels():
    h = Histogram.of("text_kl", [0.0, 1.0, 1.0, np.nan, np.inf, 2.0], bins=4)
    assert h.counts.tolist() == [1, 0, 2, 1] and h.missing == 2 and h.rows == 6
    assert Histogram.of("x", [3.0, 3.0], bins=2).counts.tolist() == [0, 2]
    fig = threshold_histogram(h, [ThresholdLine("kl_text", "top 50% by text_kl", 1.0, 3, 6, 3)])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "text_kl" and ax.get_ylabel() == "pairs per bin"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("keeps 50%" in t for t in labels)
    # the legend sits below the axes, not over the bars
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().y1 < ax.get_window_extent().y0
    assert png_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n"
