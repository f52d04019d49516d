"""A Ray worker killed mid-job (the embeddings job's model actor, SIGKILL to the pid Ray's state API names) does
not change what is written:

* with the module's bounded restarts (embed_ray.ACTOR_MAX_RESTARTS / ACTOR_MAX_TASK_RETRIES), Ray restarts the
  actor, resubmits its lost call, and the job writes exactly the local path's files;
* with restarts switched off (max_restarts 0), the call fails with Ray's actor-died error (Ray 2.60; a Ray that
  replaced the actor instead would have to write the local files), every shard file visible at any point is
  complete (equal to the local path's), and a re-run keeps the shards already written and writes the rest,
  ending with the local path's files.

The decode tasks take one model batch each here (embed_ray.DECODE_TASK_SAMPLES set to the batch size): with the
default, this small drop is two blocks (one per CPU), whose model calls can end before the driver commits its
first shard, so no actor would be left to kill mid-job. While the job runs, the driver thread waits in its progress callback after the first committed shard until the
actor has been killed, so the kill always lands mid-job, with shards left to compute. A local Ray cluster of
2 CPUs with its dashboard on 127.0.0.1 (it serves the state API); fixed ports, one Ray test module at a time;
skipped without the optional extra ``ray``.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from clip_assets.io.drops import index_drop
from clip_assets.models.embed import embed_drop
from clip_assets.models.loading import ModelSpec, load_model
from clip_assets.world import write_drops
from ray_support import import_or_skip, own_cluster

DASHBOARD_PORT = 8291
STATE_API = f"http://127.0.0.1:{DASHBOARD_PORT}"
SPEC = ModelSpec(name="clip-assets-tiny", device="cpu", workers=0, batch_size=4, threads=1)
SHARDS = 6


@pytest.fixture(scope="module")
def ray_cluster():
    import_or_skip("aiohttp", reason="Ray's state API needs its dashboard (ray[default])")

    def start() -> None:
        import ray

        from clip_assets.models.executors import _loopback_node_ip

        with _loopback_node_ip():  # as executors.init_ray starts a local cluster, plus a loopback dashboard
            ray.init(address="local", num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=True,
                     dashboard_host="127.0.0.1", dashboard_port=DASHBOARD_PORT, _node_ip_address="127.0.0.1",
                     runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}})

    with own_cluster(start):  # tests/ray_support.py: skips without ray, RAY_ADDRESS set aside, shut down after
        yield


@pytest.fixture(autouse=True)
def one_batch_per_decode_task(monkeypatch):
    from clip_assets.models import embed_ray

    monkeypatch.setattr(embed_ray, "DECODE_TASK_SAMPLES", SPEC.batch_size)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    (drop,) = write_drops(tmp_path_factory.mktemp("landing"), drops=1, pairs=SHARDS * 20, seed=17, shard_size=20)
    t = index_drop(drop)
    assert len(t) == SHARDS
    return t


@pytest.fixture(scope="module")
def local(tables, tmp_path_factory):
    return embed_drop(tables, load_model(SPEC), tmp_path_factory.mktemp("local"), workers=0)


def _visible(out: Path, local) -> list[str]:
    """The shard files a reader sees now; each must be complete: equal to the local path's file of that shard."""
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert all(n.startswith("part-") and n.endswith(".parquet") for n in names), names
    by_name = {f.name: f for f in local.files}
    for n in names:
        assert pq.read_table(out / n).equals(pq.read_table(by_name[n]), check_metadata=True), n
    return names


def _embed_actor() -> tuple[int, str]:
    from ray.util.state import list_actors

    alive = [a for a in list_actors(address=STATE_API, filters=[("state", "=", "ALIVE")], limit=1000,
                                    raise_on_missing_output=False) if "_EmbedActor" in (a.class_name or "")]
    assert len(alive) == 1, alive
    return int(alive[0].pid), alive[0].actor_id


def _run_and_kill(tables, out: Path, local) -> tuple[object, BaseException | None, list[str], str]:
    """embed_drop_ray in a thread; after its first committed shard, SIGKILL the model actor's process (the
    driver waits in the progress callback meanwhile). Returns (result or None, error or None, the files visible
    at the kill, the killed actor's id)."""
    from clip_assets.models.embed_ray import embed_drop_ray

    first, killed = threading.Event(), threading.Event()
    outcome: dict = {}

    def progress(done, total, ips):
        if not first.is_set():
            first.set()
            assert killed.wait(60), "the test never killed the actor"

    def job():
        try:
            outcome["res"] = embed_drop_ray(tables, SPEC, out, progress=progress, concurrency=1, cpus_per_actor=1)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome["err"] = e
        finally:
            first.set()

    t = threading.Thread(target=job)
    t.start()
    assert first.wait(240)
    assert "err" not in outcome and "res" not in outcome, outcome  # mid-job: the driver is in its callback
    pid, actor_id = _embed_actor()
    at_kill = _visible(out, local)
    assert 1 <= len(at_kill) < SHARDS, at_kill
    os.kill(pid, signal.SIGKILL)
    killed.set()
    t.join(240)
    assert not t.is_alive()
    return outcome.get("res"), outcome.get("err"), at_kill, actor_id


@pytest.mark.timeout(300)
def test_a_killed_model_actor_is_restarted_and_the_output_equals_the_local_path(ray_cluster, tables, local,
                                                                                tmp_path):
    from ray.util.state import get_actor

    out = tmp_path / "ray"
    res, err, at_kill, actor_id = _run_and_kill(tables, out, local)
    assert err is None, repr(err)
    assert res.written == [f"{i:05d}" for i in range(SHARDS)] and res.rows_written == SHARDS * 20
    assert _visible(out, local) == [f.name for f in local.files]
    restarted = get_actor(actor_id, address=STATE_API, _explain=False)
    assert restarted is not None and restarted.num_restarts >= 1  # Ray restarted it (bounded: ACTOR_MAX_RESTARTS)


@pytest.mark.timeout(300)
def test_without_restarts_the_job_fails_or_recovers_and_a_rerun_resumes_per_shard(ray_cluster, tables, local,
                                                                                 tmp_path, monkeypatch):
    from clip_assets.models import embed_ray
    from clip_assets.models.embed_ray import embed_drop_ray

    monkeypatch.setattr(embed_ray, "ACTOR_MAX_RESTARTS", 0)
    out = tmp_path / "ray"
    res, err, at_kill, _ = _run_and_kill(tables, out, local)
    assert (res is None) != (err is None)
    if err is not None:  # what Ray 2.60 does: the dead actor's call fails the job, naming the actor
        import ray

        assert isinstance(err, ray.exceptions.RayActorError), repr(err)
    after = _visible(out, local)  # whatever happened, only complete shards are visible
    assert set(at_kill) <= set(after)
    monkeypatch.undo()
    again = embed_drop_ray(tables, SPEC, out, concurrency=1, cpus_per_actor=1)
    assert again.skipped == [n[5:10] for n in after]  # kept, not recomputed
    assert sorted(again.skipped + again.written) == [f"{i:05d}" for i in range(SHARDS)]
    assert _visible(out, local) == [f.name for f in local.files]
