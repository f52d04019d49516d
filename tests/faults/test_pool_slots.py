"""Class 1: a run killed with SIGKILL while it holds the ``gpu`` pool's only slot must not block the next run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from clip_assets.defs.ops.run_health import FAILURE_TAG, PROCESS_GONE, run_health_sensor
from faultlib import dagster_home, wait_for  # noqa: F401 (dagster_home is a fixture)

HOLDER = Path(__file__).with_name("pool_holder.py")


@pytest.mark.slow
def test_killed_run_is_failed_its_slot_freed_and_the_next_run_proceeds(dagster_home, tmp_path, monkeypatch):
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    first, second = tmp_path / "first", tmp_path / "second"
    holder = subprocess.Popen([sys.executable, str(HOLDER), "hold", str(first)], env=env)
    waiter = None
    try:
        assert wait_for(first.exists, 60), "the holding run never started its step"
        monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
        instance = dg.DagsterInstance.get()
        info = instance.event_log_storage.get_concurrency_info("gpu")
        assert len(info.claimed_slots) == 1 and info.limit == 1
        killed_run = info.claimed_slots[0].run_id
        holder.kill()
        holder.wait(10)

        waiter = subprocess.Popen([sys.executable, str(HOLDER), "quick", str(second)], env=env)
        assert wait_for(lambda: instance.event_log_storage.get_concurrency_info("gpu").pending_run_ids, 60)
        assert not second.exists()  # blocked by the dead run's slot

        with dg.build_sensor_context(instance=instance) as ctx:
            result = run_health_sensor(ctx)
        assert killed_run in result.skip_message
        run = instance.get_run_by_id(killed_run)
        assert run.status == dg.DagsterRunStatus.FAILURE and run.tags[FAILURE_TAG] == PROCESS_GONE

        done = second.with_name(second.name + ".done")
        assert wait_for(done.exists, 45), "the next run stayed blocked after the slot was freed"
        assert done.read_text() == "True"
        assert waiter.wait(30) == 0
    finally:
        for p in (holder, waiter):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
