"""IWL domain: importance_weights (per drop) -> iwl_model & baseline_model -> iwl_eval (PAPER section 4)."""

import dagster as dg

from clip_assets.defs.iwl.assets import defs_assets

defs = dg.Definitions(assets=defs_assets)
