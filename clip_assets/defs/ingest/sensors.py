"""The landing sensor: each complete drop becomes a ``drops`` partition and gets a run of the per-drop chain."""


import json

import dagster as dg

from clip_assets.defs.partitions import drops_partitions
from clip_assets.defs.resources import HomeResource
from clip_assets.io.drops import scan_landing

process_drop_job = dg.define_asset_job(
    "process_drop",
    selection=dg.AssetSelection.tag("grain", "drop") & dg.AssetSelection.groups("ingest", "embed"),
    partitions_def=drops_partitions,
    description=(
        "Ingest one drop and embed it (raw_pairs, rejected_pairs, embeddings). Its scores, weights and the global "
        "summaries follow through the assets' automation conditions (see clip_assets/defs/automation.py)."
    ),
)


def plan_landing(landing, known: set[str]) -> tuple[list[str], list[str], list[str]]:
    """Split the landing folder into (new complete drops, incomplete drops, bad names). Known drops are skipped."""
    new, incomplete, bad = [], [], []
    for st in scan_landing(landing):
        if st.name_error is not None:
            bad.append(st.name)
        elif st.name in known:
            continue
        elif st.complete:
            new.append(st.name)
        else:
            incomplete.append(st.name)
    return new, incomplete, bad


@dg.sensor(
    job=process_drop_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches `<home>/landing/`. A drop folder is complete when every NNNNN.tar has its NNNNN_stats.json "
        "(or _SUCCESS exists). Each new complete drop is added as a partition of 'drops' and one process_drop "
        "run is requested for it. Incomplete drops are left alone until they complete; known drops are never "
        "re-added; folders with unsafe names are reported and skipped."
    ),
)
def landing_sensor(context: dg.SensorEvaluationContext, home: HomeResource):
    known = set(context.instance.get_dynamic_partitions(drops_partitions.name))
    new, incomplete, bad = plan_landing(home.landing(), known)
    if bad:
        context.log.warning(f"skipping landing folders with unsafe names: {bad}")
    if not new:
        return dg.SkipReason(
            f"no new complete drop in {home.landing()} ({len(known)} known, {len(incomplete)} incomplete"
            + (f", {len(bad)} bad names" if bad else "") + ")"
        )
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"drop:{d}", partition_key=d) for d in new],
        dynamic_partitions_requests=[drops_partitions.build_add_request(new)],
        cursor=json.dumps({"last_added": new[-1], "incomplete": incomplete}),
    )
