"""The code location: merges every domain's definitions and binds resources. No logic here."""

import dagster as dg

from clip_assets.defs import curate, embed, ingest, iwl, ops, score
from clip_assets.defs.automation import curation_automation
from clip_assets.defs.resources import HomeResource

defs = dg.Definitions.merge(
    ingest.defs,
    embed.defs,
    score.defs,
    curate.defs,
    iwl.defs,
    ops.defs,
    dg.Definitions(sensors=[curation_automation], resources={"home": HomeResource()}),
)
