"""Embed domain: the contrastive model and per-drop embeddings."""

import dagster as dg

from clip_assets.defs.embed.assets import defs_assets

defs = dg.Definitions(assets=defs_assets)
