"""Operations domain: keeping the instance healthy (runs whose process died, pool slots they held)."""

import dagster as dg

from clip_assets.defs.ops.run_health import run_health_sensor

defs = dg.Definitions(sensors=[run_health_sensor])
