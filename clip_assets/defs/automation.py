"""Automation: how assets refresh on their own after new drops (see README, "Incremental behaviour").

* ``landing_sensor`` (ingest domain) adds each complete drop as a partition and runs ``process_drop``.
* This sensor evaluates the assets' automation conditions:
  - ``eager()`` on per-drop scores/weights and on global summaries: they follow their upstream (a new drop's
    embeddings lead to its scores, new scores lead to refreshed calibration, subsets, reports and catalog);
  - ``on_missing()`` on ``contrastive_model`` and ``reference_set``: built once when absent and then changed only
    when someone materializes them on purpose (then Dagster shows everything downstream as stale, and eager
    assets follow);
  - nothing on the IWL training assets: they train models and run only when asked.
"""

import dagster as dg

curation_automation = dg.AutomationConditionSensorDefinition(
    "curation_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates every asset's automation condition (eager downstream refresh, on-missing models).",
)
