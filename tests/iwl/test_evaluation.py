"""The IWL report without models: the Markdown table and the metrics check on a hand-made result."""

from __future__ import annotations

import math

from clip_assets.iwl.evaluation import METRICS, bar_plot, metrics_valid, report_markdown


def _result(values: dict[str, float], seeds=(0, 1)) -> dict:
    per_seed = [{"seed": s, **{f"target_{m}_{k}": values[k] + 0.01 * s for m in METRICS for k in ("iwl", "baseline")}}
                for s in seeds]
    summary = {"seeds": len(seeds), "prompt": "a photo of something red", "eval_set": "synthetic:red",
               "eval_n": 24, "pairs": 160}
    for m in METRICS:
        for k in ("iwl", "baseline"):
            summary[f"target_{m}_{k}"], summary[f"target_{m}_{k}_std"] = values[k] + 0.005, 0.007
        summary[f"target_delta_{m}"], summary[f"target_delta_{m}_std"] = values["iwl"] - values["baseline"], 0.0
        summary[f"target_delta_{m}_ci_low"] = summary[f"target_delta_{m}_ci_high"] = values["iwl"] - values["baseline"]
    per_class = [{"class": c, "f1_iwl": 0.5, "f1_iwl_std": 0.1, "f1_baseline": 0.4, "f1_baseline_std": 0.1}
                 for c in ("circle", "square")]
    return {"manifest": {"seeds": {str(s): {} for s in seeds}}, "per_seed": per_seed, "summary": summary,
            "per_class": per_class, "sets": ["target"]}


def test_report_markdown_rows_and_numbers():
    md = report_markdown(_result({"iwl": 0.6, "baseline": 0.5}))
    lines = md.splitlines()
    assert lines[0].startswith("IWL vs baseline: prompt 'a photo of something red', 2 seed(s)")
    rows = [ln for ln in lines if ln.startswith("| target |")]
    assert [r.split("|")[2].strip() for r in rows] == list(METRICS)
    assert "| 0.505 ± 0.007 | 0.605 ± 0.007 | 0.100 ± 0.000 |" in rows[0]
    assert rows[0].endswith("| [+0.100, +0.100] |")
    per_seed = [ln for ln in lines if ln.startswith("| 1 |")]
    assert per_seed and "0.510 -> 0.610 (+0.100)" in per_seed[0]


def test_metrics_valid_catches_missing_seeds_and_bad_values():
    good = _result({"iwl": 0.6, "baseline": 0.5})
    assert metrics_valid(good)
    short = _result({"iwl": 0.6, "baseline": 0.5}, seeds=(0,))
    short["manifest"]["seeds"]["1"] = {}
    assert not metrics_valid(short)  # a seed of the manifest was not evaluated
    bad = _result({"iwl": 0.6, "baseline": 0.5})
    bad["per_seed"][0]["target_accuracy_iwl"] = math.nan
    assert not metrics_valid(bad)
    over = _result({"iwl": 1.2, "baseline": 0.5})
    assert not metrics_valid(over)


def test_metrics_valid_accepts_a_seed_where_iwl_loses():
    """The per-seed rows carry IWL - baseline deltas; a negative one is a result, not a bad value (the 5-seed demo
    has such a seed and its blocking check failed on it)."""
    worse = _result({"iwl": 0.5, "baseline": 0.6})
    for r in worse["per_seed"]:
        r["target_delta_macro_f1"] = r["target_macro_f1_iwl"] - r["target_macro_f1_baseline"]
    assert worse["per_seed"][0]["target_delta_macro_f1"] < 0 and metrics_valid(worse)
    worse["per_seed"][1]["target_delta_macro_f1"] = -1.5
    assert not metrics_valid(worse)


def test_bar_plot_draws_both_panels():
    r = _result({"iwl": 0.6, "baseline": 0.5})
    fig = bar_plot(r["per_class"], r["summary"])
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 4  # 2 classes x (baseline, iwl)
