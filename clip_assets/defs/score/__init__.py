"""Score domain: reference set, density-ratio scores, KL statistics, calibration against the synthetic truth."""

import dagster as dg

from clip_assets.defs.score.assets import defs_assets

defs = dg.Definitions(assets=defs_assets)
