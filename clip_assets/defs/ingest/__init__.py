"""Ingest domain: drops, raw_pairs, rejected_pairs, the DuckDB catalog, the landing sensor, the catch-up schedule."""

import dagster as dg

from clip_assets.defs.ingest.assets import defs_assets
from clip_assets.defs.ingest.checks import ingest_checks
from clip_assets.defs.ingest.schedules import catchup_schedule
from clip_assets.defs.ingest.sensors import landing_sensor, process_drop_job

defs = dg.Definitions(
    assets=defs_assets,
    asset_checks=ingest_checks,
    jobs=[process_drop_job],
    sensors=[landing_sensor],
    schedules=[catchup_schedule],
)
