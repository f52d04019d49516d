"""Curate domain: curated subsets from configurable filters (filters.yaml), their truth report, N-gram analysis."""

import dagster as dg

from clip_assets.defs.curate.assets import defs_assets

defs = dg.Definitions(assets=defs_assets)
