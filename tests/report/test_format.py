"""One formatting rule: rounded numbers, '-' for missing values, no float noise."""

import math

import numpy as np

from clip_assets.report.format import fmt, markdown_rows, pct
from clip_assets.report.plots import ThresholdLine


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
