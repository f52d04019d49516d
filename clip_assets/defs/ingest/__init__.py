"""Ingest domain: drops, raw_pairs, rejected_pairs, the DuckDB catalog, the landing sensor."""

import dagster as dg

from clip_assets.defs.ingest.assets import defs_assets
from clip_assets.defs.ingest.sensors import landing_sensor, process_drop_job

defs = dg.Definitions(assets=defs_assets, jobs=[process_drop_job], sensors=[landing_sensor])
