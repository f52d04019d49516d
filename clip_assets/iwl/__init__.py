"""Importance Weight Learning without Dagster (PAPER section 4): per-drop weight tables (weights), training of the
weighted/unweighted model pair and its manifest (training), zero-shot evaluation and its report (evaluation).
The math is clip_assets.core.iwl; training loops are clip_assets.models.iwl_train."""
