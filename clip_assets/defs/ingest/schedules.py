"""The catch-up schedule: after downtime or failed runs, re-scan the landing folder and fill the gaps.

The landing sensor handles the happy path (a drop lands, it becomes a partition, one run). This schedule repairs
everything else, once an hour:

1. it re-scans ``<home>/landing/`` (:func:`~clip_assets.defs.ingest.sensors.plan_landing`) and registers complete
   drops that are not partitions yet (the sensor was stopped, the daemon was down) directly on the instance
   (``instance.add_dynamic_partitions``: schedules, unlike sensors, cannot return dynamic-partition requests);
2. for every known drop that is complete in the landing folder it asks the instance which per-drop assets are
   materialized (``instance.get_materialized_partitions(key)`` for each key of
   ``AssetSelection.tag("grain", "drop")`` & the process_drop job's selection, resolved on
   ``context.repository_def.asset_graph``, which the schedule daemon passes to every tick in Dagster 1.13 -- so
   assets other domains add to the job later are covered without a change here; per-drop assets outside the job,
   such as scores that follow by automation, are the automation sensor's business, not this schedule's);
3. a known drop re-landed with other contents (:func:`~clip_assets.defs.ingest.sensors.relanded_drops`) gets one
   ``process_drop`` run (the run key the landing sensor would use, so the two never both launch it);
4. it requests one ``process_drop`` run for exactly the drops missing at least one of them
   (:func:`missing_partitions`), minus drops that already have a run queued or in progress and drops whose last
   ``GIVE_UP_AFTER`` runs all failed (those need a person; materializing the drop from the UI resets it). A run
   whose process died is marked failed by the run-health sensor (clip_assets/defs/ops/run_health.py), which
   frees its pool slots; such runs do not count towards giving up, so the next tick retries the drop.

Idempotence. The daemon de-duplicates run keys only within one tick (it looks for a run with the same schedule,
scheduled time and run key, so a retried tick never launches twice). Across ticks it is the state that makes the
schedule idempotent: a drop whose assets are all materialized, or whose run is queued/started, is not requested
again. The run key ``catchup:<drop>:<missing assets digest>`` names what the run is for.

Default status: RUNNING. Catch-up is only useful if nobody has to remember to switch it on after the downtime it is
meant to repair; a tick with nothing to do costs one directory scan and one query per per-drop asset, and the
give-up rule stops a broken drop from being retried every hour forever. Toggle it in the UI (Automation page).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import dagster as dg

from clip_assets.defs.ingest.sensors import (
    PARTITION_TAG, in_flight_drops, plan_landing, process_drop_job, reland_request, relanded_drops,
)
from clip_assets.defs.ops.run_health import FAILURE_TAG, PROCESS_GONE
from clip_assets.defs.partitions import drops_partitions
from clip_assets.defs.resources import HomeResource
from clip_assets.io.drops import scan_landing

CATCHUP_CRON = "0 * * * *"  # hourly, on the hour (UTC)
CATCHUP_DEFAULT_STATUS = dg.DefaultScheduleStatus.RUNNING
GIVE_UP_AFTER = 3  # consecutive failed runs of a drop (run_retries makes 1 + max_retries of them per attempt)
PER_DROP = dg.AssetSelection.tag("grain", "drop")


def missing_partitions(known_drops: Iterable[str], materialized_by_asset: Mapping[object, Iterable[str]]) -> list[str]:
    """Drops (in ``known_drops`` order, no duplicates) that at least one per-drop asset has not materialized.

    ``materialized_by_asset`` maps each per-drop asset (any key) to the partitions it has materialized. With no
    per-drop assets nothing is missing.
    """
    done = [set(parts) for parts in materialized_by_asset.values()]
    out, seen = [], set()
    for drop in known_drops:
        if drop in seen:
            continue
        seen.add(drop)
        if any(drop not in parts for parts in done):
            out.append(drop)
    return out


def per_drop_asset_keys(asset_graph) -> list[dg.AssetKey]:
    """The drop-partitioned assets that a ``process_drop`` run materializes, sorted.

    That is ``AssetSelection.tag("grain", "drop")`` intersected with the job's own selection (which may be
    narrower: per-drop scores can follow by automation instead), resolved on the repository's asset graph.
    Counting an asset the job does not materialize would request the same run every hour without ever filling
    the gap.
    """
    keys = (PER_DROP & process_drop_job.selection).resolve(asset_graph)
    return sorted(
        (k for k in keys if asset_graph.get(k).is_materializable
         and asset_graph.get(k).partitions_def == drops_partitions),
        key=lambda k: k.to_user_string(),
    )


def run_key_for(drop: str, missing_assets: Iterable[dg.AssetKey]) -> str:
    digest = hashlib.sha256(",".join(sorted(k.to_user_string() for k in missing_assets)).encode()).hexdigest()
    return f"catchup:{drop}:{digest[:12]}"


def _gave_up(instance: dg.DagsterInstance, drop: str) -> bool:
    """The drop's last GIVE_UP_AFTER runs all failed; runs whose process was killed (the run-health sensor's
    verdict) are not the drop's fault and do not count."""
    runs = instance.get_runs(dg.RunsFilter(tags={PARTITION_TAG: drop}), limit=4 * GIVE_UP_AFTER)
    runs = [r for r in runs if r.tags.get(FAILURE_TAG) != PROCESS_GONE][:GIVE_UP_AFTER]
    return len(runs) >= GIVE_UP_AFTER and all(r.status == dg.DagsterRunStatus.FAILURE for r in runs)


@dg.schedule(
    name="catchup_schedule",
    cron_schedule=CATCHUP_CRON,
    execution_timezone="UTC",
    job=process_drop_job,
    default_status=CATCHUP_DEFAULT_STATUS,
    description=(
        "Hourly catch-up (default RUNNING): re-scans the landing area (`$CLIP_ASSETS_LANDING`, else "
        "`<home>/landing/`), registers complete "
        "drops that are not partitions yet, and requests a process_drop run for every complete drop missing at "
        "least one of the per-drop assets that job materializes, except drops with a run already queued or in "
        f"progress and drops whose last {GIVE_UP_AFTER} runs all failed. Skips when nothing is missing."
    ),
)
def catchup_schedule(context: dg.ScheduleEvaluationContext, home: HomeResource):
    instance = context.instance
    landing = home.landing()
    known = list(instance.get_dynamic_partitions(drops_partitions.name))
    new, incomplete, bad = plan_landing(landing, set(known))
    if bad:
        context.log.warning(f"skipping landing folders with unsafe names: {bad}")
    if new:
        instance.add_dynamic_partitions(drops_partitions.name, new)
        context.log.info(f"registered {len(new)} new drop partition(s): {new}")
    complete = {st.name for st in scan_landing(landing) if st.complete}
    gone = [d for d in known if d not in complete]
    if gone:
        context.log.warning(f"known drops not complete in {landing} (moved or deleted?), not requested: {gone}")
    candidates = [d for d in [*known, *new] if d in complete]

    keys = per_drop_asset_keys(context.repository_def.asset_graph)
    materialized = {k: instance.get_materialized_partitions(k) for k in keys}
    missing = missing_partitions(candidates, materialized)
    relands = {r.drop: r for r in relanded_drops(landing, set(known), home.path())}
    in_flight = in_flight_drops(instance) if missing or relands else set()
    requests, waiting, given_up = [], [], []
    for drop, r in relands.items():
        if drop in in_flight:
            waiting.append(drop)
        elif drop not in missing:
            requests.append(reland_request(r))
    for drop in missing:
        if drop in in_flight:
            waiting.append(drop)
        elif _gave_up(instance, drop):
            given_up.append(drop)
        else:
            todo = [k for k in keys if drop not in materialized[k]]
            requests.append(dg.RunRequest(run_key=run_key_for(drop, todo), partition_key=drop,
                                          tags={"clip_assets/trigger": "catchup"}))
    if given_up:
        context.log.warning(f"last {GIVE_UP_AFTER} runs failed, not retrying (materialize from the UI): {given_up}")
    if not requests:
        return dg.SkipReason(
            f"nothing to catch up: {len(candidates)} complete drop(s), {len(keys)} per-drop asset(s), "
            f"{len(waiting)} with a run in flight, {len(given_up)} given up, {len(incomplete)} incomplete"
        )
    context.log.info(f"requesting process_drop for {[r.partition_key for r in requests]}")
    return requests
