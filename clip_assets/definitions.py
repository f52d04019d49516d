"""The code location: merges every domain's definitions, applies the shared asset defaults once, binds resources
and the executor. No logic here.

The in-process executor runs every step of a run in the run's own process: a one-drop run from the UI starts no
step worker per asset (about 15 s each with torch to import), and the steps of one run execute one after another.
"""

import dagster as dg

from clip_assets.defs import curate, embed, ingest, iwl, ops, score
from clip_assets.defs.automation import curation_automation
from clip_assets.defs.resources import HomeResource
from clip_assets.defs.specs import with_shared_defaults

defs = with_shared_defaults(dg.Definitions.merge(
    ingest.defs,
    embed.defs,
    score.defs,
    curate.defs,
    iwl.defs,
    ops.defs,
    dg.Definitions(sensors=[curation_automation], resources={"home": HomeResource()},
                   executor=dg.in_process_executor),
))
