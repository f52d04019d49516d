"""The curation report's description of how it evaluated each filter."""

from __future__ import annotations

from clip_assets.curate import filters as F
from clip_assets.curate import report as R


def test_report_setting_names_the_rule_at_the_reports_fraction():
    specs = {s.name: s for s in F.parse_filters({"filters": [
        {"name": "kl", "column": "text_kl", "keep_fraction": 0.4},
        {"name": "thr", "column": "clip_score", "threshold": 0.28},
        {"name": "everything", "keep": "all"},
        {"name": "both", "all_of": ["kl", "thr"]},
    ]})}
    assert R.report_setting(specs["kl"], 0.25) == "top 25% by text_kl"  # the report's fraction, not the file's
    assert R.report_setting(specs["thr"], 0.25) == "clip_score >= 0.28 (its own threshold, not a 25% keep-fraction)"
    assert R.report_setting(specs["everything"], 0.1) == "every row"
    assert R.report_setting(specs["both"], 0.1) == "all of kl, thr (keep-fraction members at 10% each)"
