"""Run health: runs whose process is gone are marked failed and their concurrency-pool slots freed.

The default run launcher cannot check a run worker's health, so Dagster's run monitoring only fails runs stuck
in STARTING and frees the slots of runs that ended. A run killed with SIGKILL never reports its end: it stays
STARTED and keeps its pool slots, so the next run of that pool logs "Step blocked by limit for pool gpu" forever
and the catch-up schedule treats the drop as in flight.

Where a run's process is: the tags ``clip_assets/host`` and ``clip_assets/pid`` (``clip-assets materialize``
sets them), else the pid the run's own engine events report ("Started process for run (pid: N)", "Executing
steps in process (pid: N)") on the run launcher's machine (the default launcher starts run workers where the
daemon runs). A pid counts as gone when no such process exists, it is a zombie, or it started after the run did
(the pid was reused). Runs on another host, or launched by a launcher that puts them elsewhere, are left alone.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg

HOST_TAG = "clip_assets/host"
PID_TAG = "clip_assets/pid"
FAILURE_TAG = "clip_assets/failure"
PROCESS_GONE = "process_gone"
WATCHED = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
ENDED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
_STARTED_SLACK_S = 2.0


def _proc_start_time(pid: int) -> tuple[str, float] | None:
    """(state, start time as a Unix timestamp) of ``pid`` from /proc, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        btime = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3, starttime field 22
    return fields[0], btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_alive(pid: int, started_by: float | None = None) -> bool:
    """Whether ``pid`` is a live (non-zombie) process that started no later than ``started_by`` (a timestamp)."""
    if not Path("/proc/self/stat").exists():  # no procfs: existence is all that can be checked
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    info = _proc_start_time(pid)
    if info is None or info[0] in ("Z", "X"):
        return False
    return started_by is None or info[1] <= started_by + _STARTED_SLACK_S


def run_process(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[str | None, int | None]:
    """(host or None for the launcher's machine, pid or None when not known yet) of ``run``'s process."""
    if PID_TAG in run.tags:
        return run.tags.get(HOST_TAG), int(run.tags[PID_TAG])
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = record.dagster_event.event_specific_data if record.dagster_event else None
        pid = getattr(data, "metadata", {}).get("pid") if data is not None else None
        if pid is not None:
            return None, int(getattr(pid, "value", pid))
    return None, None


def dead_runs(instance: dg.DagsterInstance, host: str | None = None) -> list[tuple[dg.DagsterRun, str]]:
    """STARTED/CANCELING runs on this host whose process is gone, each with a sentence saying why."""
    host = host or socket.gethostname()
    local_launcher = isinstance(instance.run_launcher, dg.DefaultRunLauncher)
    out = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=WATCHED)):
        run = record.dagster_run
        run_host, pid = run_process(instance, run)
        if pid is None or (run_host is None and not local_launcher) or (run_host not in (None, host)):
            continue
        if not process_alive(pid, record.start_time or record.create_timestamp.timestamp()):
            out.append((run, f"the process of run {run.run_id} (pid {pid} on {run_host or host}) is gone "
                             f"(killed?): marked failed and its concurrency slots freed"))
    return out


def fail_dead_runs(instance: dg.DagsterInstance, host: str | None = None) -> list[str]:
    """Mark every dead run failed, free the pool slots it holds, and free the slots of ended runs at once.
    Returns one line per run acted on."""
    lines = []
    for run, why in dead_runs(instance, host):
        instance.add_run_tags(run.run_id, {FAILURE_TAG: PROCESS_GONE})
        instance.report_run_failed(run, message=why)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        lines.append(why)
    storage = instance.event_log_storage
    holders = storage.get_concurrency_run_ids() if storage.supports_global_concurrency_limits else set()
    if holders:
        ended = instance.get_runs(dg.RunsFilter(run_ids=list(holders), statuses=ENDED))
        for run in ended:
            storage.free_concurrency_slots_for_run(run.run_id)
            lines.append(f"run {run.run_id} ended ({run.status.value}) but held pool slots: freed")
    return lines


@dg.sensor(
    name="run_health_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Every 30 s: a STARTED run whose process is gone (kill -9, OOM kill, machine reboot) is marked failed and "
        "its concurrency-pool slots (gpu, duckdb) are freed, so the next run of the pool proceeds and the "
        "catch-up schedule retries the drop; ended runs that still hold slots are freed at once."
    ),
)
def run_health_sensor(context: dg.SensorEvaluationContext):
    lines = fail_dead_runs(context.instance)
    for line in lines:
        context.log.warning(line)
    return dg.SkipReason("; ".join(lines) if lines else "every started run's process is alive")
