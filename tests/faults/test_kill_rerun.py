"""Classes 1 and 5 end to end: ``clip-assets materialize`` killed with SIGKILL in the middle of ingesting a drop.

Nothing half-written is visible, the run-health sensor fails the dead run, and a re-run gives exactly the rows of
a clean run (sorted; paths into the landing folder compared relative to the home).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from clip_assets import cli
from clip_assets.defs.ops.run_health import FAILURE_TAG, PROCESS_GONE, fail_dead_runs
from clip_assets.world import write_drops
from faultlib import dagster_home, wait_for  # noqa: F401 (dagster_home is a fixture)

DROP = "synth-s5-000"
SELECT = "key:raw_pairs"


def _table(home, asset):
    t = pq.read_table(home / "warehouse" / asset / f"drop={DROP}")
    if "tar_path" in t.column_names:
        rel = pc.replace_substring(t["tar_path"], str(home), "<home>")
        t = t.set_column(t.column_names.index("tar_path"), "tar_path", rel)
    return t.sort_by([("uid", "ascending")]).to_pylist()


def _staging_started(home) -> bool:
    wh = home / "warehouse"
    return wh.is_dir() and any(p.name.startswith(".staging-") for a in wh.iterdir() for p in a.iterdir())


@pytest.mark.slow
def test_kill_during_ingest_then_rerun_equals_a_clean_run(tmp_path, dagster_home, monkeypatch):
    home, clean = tmp_path / "home", tmp_path / "clean"
    write_drops(home / "landing", drops=1, pairs=1500, seed=5, shard_size=500)
    shutil.copytree(home / "landing", clean / "landing")
    env = {**os.environ, "CLIP_ASSETS_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
    proc = subprocess.Popen([sys.executable, "-m", "clip_assets.cli", "materialize", "--drop", DROP,
                             "--select", SELECT], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _staging_started(home), 90, interval_s=0.01), "ingest never started writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (home / "warehouse" / "raw_pairs" / f"drop={DROP}").exists()  # nothing half-written visible

    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    instance = dg.DagsterInstance.get()
    (killed,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    assert len(fail_dead_runs(instance)) == 1
    assert instance.get_run_by_id(killed.run_id).tags[FAILURE_TAG] == PROCESS_GONE

    monkeypatch.setenv("CLIP_ASSETS_HOME", str(home))
    assert cli.main(["materialize", "--drop", DROP, "--select", SELECT]) == 0
    monkeypatch.setenv("CLIP_ASSETS_HOME", str(clean))
    assert cli.main(["materialize", "--drop", DROP, "--select", SELECT]) == 0
    for asset in ("raw_pairs", "rejected_pairs"):
        assert _table(home, asset) == _table(clean, asset)
    assert len(_table(home, "raw_pairs")) + len(_table(home, "rejected_pairs")) == 1500


@pytest.mark.slow
def test_sigterm_ends_a_materialize_run_and_frees_its_slots(tmp_path, dagster_home, monkeypatch):
    home = tmp_path / "home"
    write_drops(home / "landing", drops=1, pairs=1500, seed=5, shard_size=500)
    env = {**os.environ, "CLIP_ASSETS_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
    proc = subprocess.Popen([sys.executable, "-m", "clip_assets.cli", "materialize", "--drop", DROP,
                             "--select", SELECT], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: _staging_started(home), 90, interval_s=0.01), "ingest never started writing"
        proc.terminate()
        assert wait_for(lambda: proc.poll() is not None, 30), "SIGTERM was ignored"
    finally:
        if proc.poll() is None:
            proc.kill()
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    instance = dg.DagsterInstance.get()
    (run,) = instance.get_runs()
    assert run.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE), proc.stdout.read()
    assert instance.event_log_storage.get_concurrency_run_ids() <= {run.run_id}
    fail_dead_runs(instance)  # frees what an ended run still holds, at once
    assert instance.event_log_storage.get_concurrency_run_ids() == set()
