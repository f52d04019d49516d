"""The landing sensor: each complete drop becomes a ``drops`` partition and gets a run of the per-drop chain; a
known drop re-landed with other contents under the same name gets a run too (its ingest replaces the old rows,
embeddings re-embed the shards whose uids changed and drop the stale ones, downstream follows by automation)."""


import json

import dagster as dg

from clip_assets.defs.partitions import drops_partitions
from clip_assets.defs.resources import HomeResource
from clip_assets.io.drops import scan_landing
from clip_assets.io.ingest import Reland, relanded

PARTITION_TAG = "dagster/partition"
TRIGGER_TAG = "clip_assets/trigger"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

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
    """Split the landing folder (a local path, or a store URL such as ``s3://bucket/landing``) into (new complete
    drops, incomplete drops, bad names). Known drops are skipped."""
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


def relanded_drops(landing, known: set[str], home) -> list[Reland]:
    """Known, complete drops of the landing folder whose content differs from what was ingested under their name
    (:func:`clip_assets.io.ingest.relanded`), sorted by name."""
    out = []
    for st in scan_landing(landing):
        if st.name_error is None and st.name in known and st.complete:
            if (r := relanded(st.path, home)) is not None:
                out.append(r)
    return out


def reland_request(r: Reland) -> dg.RunRequest:
    """One run for a re-landed drop; the key names the outdated ingest and the new content, so each change is
    requested once and a later change again."""
    return dg.RunRequest(run_key=f"reland:{r.drop}:{r.ingest_id[:12]}:{r.fingerprint[:12]}", partition_key=r.drop,
                         tags={TRIGGER_TAG: "reland"})


def in_flight_drops(instance: dg.DagsterInstance) -> set[str]:
    """Drops with a run queued or in progress."""
    runs = instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT))
    return {r.tags[PARTITION_TAG] for r in runs if PARTITION_TAG in r.tags}


@dg.sensor(
    job=process_drop_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches the landing area (`$CLIP_ASSETS_LANDING`: a folder or an s3:// prefix; else `<home>/landing/`). "
        "A drop folder is complete when every NNNNN.tar has its NNNNN_stats.json "
        "(or _SUCCESS exists). Each new complete drop is added as a partition of 'drops' and one process_drop "
        "run is requested for it. A known drop re-landed with other contents (its fingerprint differs from the "
        "one its ingest recorded) gets one process_drop run, which replaces its rows. Incomplete drops are left "
        "alone until they complete; folders with unsafe names are reported and skipped."
    ),
)
def landing_sensor(context: dg.SensorEvaluationContext, home: HomeResource):
    known = set(context.instance.get_dynamic_partitions(drops_partitions.name))
    new, incomplete, bad = plan_landing(home.landing(), known)
    if bad:
        context.log.warning(f"skipping landing folders with unsafe names: {bad}")
    busy = in_flight_drops(context.instance)
    changed = [r for r in relanded_drops(home.landing(), known, home.path()) if r.drop not in busy]
    if changed:
        context.log.info(f"re-landed with other contents, reprocessing: {[r.drop for r in changed]}")
    if not new and not changed:
        return dg.SkipReason(
            f"no new or re-landed complete drop in {home.landing()} ({len(known)} known, {len(incomplete)} "
            "incomplete" + (f", {len(bad)} bad names" if bad else "") + ")"
        )
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"drop:{d}", partition_key=d) for d in new]
        + [reland_request(r) for r in changed],
        dynamic_partitions_requests=[drops_partitions.build_add_request(new)] if new else [],
        cursor=json.dumps({"last_added": new[-1] if new else None, "incomplete": incomplete}),
    )
