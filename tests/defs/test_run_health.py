"""The run-health sensor: a run whose process is gone is failed, its pool slots freed, and catch-up retries it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import dagster as dg
import pytest

from clip_assets.definitions import defs
from clip_assets.defs.ingest.schedules import GIVE_UP_AFTER, _gave_up
from clip_assets.defs.ingest.sensors import in_flight_drops
from clip_assets.defs.ops.run_health import (
    FAILURE_TAG,
    HOST_TAG,
    PID_TAG,
    PROCESS_GONE,
    dead_runs,
    fail_dead_runs,
    process_alive,
    run_health_sensor,
)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _add_run(instance, drop: str, pid: int, host: str | None = None) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="process_drop", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                   tags={"dagster/partition": drop, PID_TAG: str(pid),
                                         HOST_TAG: host or socket.gethostname()}))
    return run_id


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def test_process_alive_tells_live_dead_zombie_and_reused_pids():
    assert process_alive(os.getpid())
    assert not process_alive(_dead_pid())
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 20
    while process_alive(zombie.pid) and time.monotonic() < deadline:  # exits, not yet reaped: a zombie
        time.sleep(0.05)
    assert not process_alive(zombie.pid)
    zombie.wait()
    # a process that started after its run did is a reused pid, not the run's process
    assert not process_alive(os.getpid(), started_by=time.time() - 86400)


def test_dead_run_is_failed_and_catchup_retries_its_drop(instance):
    alive = _add_run(instance, "busy", os.getpid())
    elsewhere = _add_run(instance, "remote", _dead_pid(), host="some-other-host")
    dead = _add_run(instance, "killed", _dead_pid())
    assert in_flight_drops(instance) == {"busy", "remote", "killed"}
    assert [r.run_id for r, _ in dead_runs(instance)] == [dead]

    with dg.build_sensor_context(instance=instance) as ctx:
        result = run_health_sensor(ctx)
    assert dead in result.skip_message
    run = instance.get_run_by_id(dead)
    assert run.status == dg.DagsterRunStatus.FAILURE and run.tags[FAILURE_TAG] == PROCESS_GONE
    assert instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED
    assert instance.get_run_by_id(elsewhere).status == dg.DagsterRunStatus.STARTED
    assert in_flight_drops(instance) == {"busy", "remote"}  # so the catch-up schedule requests "killed" again
    assert fail_dead_runs(instance) == []  # idempotent


def test_killed_runs_do_not_make_catchup_give_up(instance):
    for _ in range(GIVE_UP_AFTER):
        _add_run(instance, "d", _dead_pid())
    fail_dead_runs(instance)
    assert not _gave_up(instance, "d")
    for _ in range(GIVE_UP_AFTER):
        instance.add_run(dg.DagsterRun(job_name="process_drop", run_id=str(uuid.uuid4()),
                                       status=dg.DagsterRunStatus.FAILURE, tags={"dagster/partition": "d"}))
    assert _gave_up(instance, "d")


def test_sensor_is_part_of_the_code_location():
    assert "run_health_sensor" in {s.name for s in defs.sensors}
