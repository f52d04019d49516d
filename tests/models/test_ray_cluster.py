"""A two-node Ray cluster on this machine (``ray start --head`` + a second ``ray start --address`` node with its own
custom resource, 1 CPU each), reached through RAY_ADDRESS like a real one: the embeddings, scores and importance
weights jobs write exactly what the local path writes, and Ray's state API (list_tasks / list_actors, with the
node of each) shows that both nodes did part of the work.

Placement is not forced: with one CPU per node, the embeddings job's model actor holds one node's CPU for the
whole job, so its decode tasks can only run on the other node; the row-block tasks of scoring and weights are
spread over the nodes (``SPREAD``, :func:`clip_assets.models.executors.map_blocks`).

Set-up notes (Ray 2.60): the nodes run with RAY_AUTH_MODE=disabled. Left unset, Ray turns token authentication
on for a head whenever ~/.ray/auth_token exists (any earlier local ray.init() writes one) but not for a joining
node, which is then refused; and a driver takes its auth mode from its environment when it imports ray, so a test
cannot switch it on afterwards. A real cluster sets RAY_AUTH_MODE=token and the token in every node's and
driver's environment (README). The dashboard, which serves the state API, listens on 127.0.0.1 only. Ray
re-addresses ``--node-ip-address 127.0.0.1`` to the machine's own address on Linux (and its GCS port listens on
every interface), so "loopback" here is the address we give, not a guarantee of Ray's. Fixed ports
(GCS 6390, dashboard 8290): run one Ray test module at a time. Skipped without the optional extra ``ray``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from clip_assets.io.ingest import ingest_drop
from clip_assets.io.reference import sample_reference, write_reference
from clip_assets.io.warehouse import partition_dir
from clip_assets.models.card import write_card
from clip_assets.models.embed import embed_drop
from clip_assets.models.loading import ModelSpec, load_model
from clip_assets.world import write_drops
from ray_support import import_or_skip

GCS_PORT, DASHBOARD_PORT = 6390, 8290
ADDRESS = f"127.0.0.1:{GCS_PORT}"
STATE_API = f"http://127.0.0.1:{DASHBOARD_PORT}"
SPEC = ModelSpec(name="clip-assets-tiny", device="cpu", workers=0, batch_size=32, threads=1)
REPO = Path(__file__).resolve().parents[2]


def _ray_cli(*args: str, env: dict[str, str], timeout: float = 120) -> None:
    ray_bin = Path(sys.executable).parent / "ray"  # the CLI of the ray this interpreter imports
    done = subprocess.run([str(ray_bin), *args], env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"ray {' '.join(args)} exited {done.returncode}:\n{done.stdout[-2000:]}\n"
                           f"{done.stderr[-4000:]}")


@pytest.fixture(scope="module")
def cluster():
    ray = import_or_skip("ray")
    import_or_skip("aiohttp", reason="Ray's state API needs its dashboard (ray[default])")
    from clip_assets.models.executors import init_ray

    auth = {"RAY_AUTH_MODE": "disabled"}  # see the module doc
    # the nodes' workers import this clip_assets tree (the driver's); no usage stats, nothing leaves the machine
    env = {**os.environ, **auth, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                                                   if p)}
    store = str(150 * 2**20)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_ADDRESS", ADDRESS)
        try:
            _ray_cli("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(GCS_PORT), "--num-cpus", "1",
                     "--include-dashboard=true", "--dashboard-host", "127.0.0.1", "--dashboard-port",
                     str(DASHBOARD_PORT), "--object-store-memory", store, "--disable-usage-stats", env=env)
            _ray_cli("start", "--address", ADDRESS, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                     "--resources", '{"second_node": 1}', "--object-store-memory", store, "--disable-usage-stats",
                     env=env)
            desc = init_ray()
            ray.data.DataContext.get_current().enable_progress_bars = False
            yield desc
        finally:
            ray.shutdown()
            _ray_cli("stop", "--force", env=env, timeout=60)


@pytest.fixture(scope="module")
def nodes(cluster):
    """{node_id: has the second_node resource} of the alive nodes."""
    import ray

    return {n["NodeID"]: "second_node" in n["Resources"] for n in ray.nodes() if n["Alive"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An ingested synthetic drop of 3 shards (40 each), the tiny model and its card, and the local path's
    embeddings of it (in their own folder)."""
    home = tmp_path_factory.mktemp("cluster") / "home"
    (path,) = write_drops(home / "landing", drops=1, pairs=120, seed=21, shard_size=40)
    ingest_drop(path, home=home)
    lm = load_model(SPEC)
    write_card(SPEC.to_dict(), lm.model_id, lm.model_id_str, home=home)
    local = embed_drop(partition_dir("raw_pairs", path.name, home), lm, home / "local-embeddings", workers=0)
    return home, path.name, lm, local


def _work_nodes(name_part: str, expect: set[str] | None = None, wait_s: float = 20.0) -> set[str]:
    """Nodes of the finished tasks and of the actors whose name holds ``name_part`` (Ray's state API), asked
    again until they are ``expect`` or ``wait_s`` passed (workers report task events about once a second; the
    actor table is current at once: no ``expect``, one look)."""
    from ray.util.state import list_actors, list_tasks

    deadline = time.monotonic() + wait_s
    while True:
        tasks = list_tasks(address=STATE_API, filters=[("state", "=", "FINISHED")], limit=10_000,
                           raise_on_missing_output=False)
        actors = list_actors(address=STATE_API, limit=10_000, raise_on_missing_output=False)
        found = ({t.node_id for t in tasks if name_part in t.name and t.node_id}
                 | {a.node_id for a in actors if name_part in (a.class_name or "") and a.node_id})
        if expect is None or found == expect or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_the_cluster_has_two_nodes_one_with_its_own_resource(cluster, nodes):
    assert f"connected to the cluster at {ADDRESS} (2 CPUs, 0 GPUs)" in cluster
    assert len(nodes) == 2 and sorted(nodes.values()) == [False, True]


@pytest.mark.timeout(300)
def test_embeddings_run_on_both_nodes_and_equal_the_local_path(cluster, nodes, world):
    from clip_assets.models.embed_ray import embed_drop_ray

    home, drop, lm, local = world
    out = partition_dir("embeddings", drop, home)
    res = embed_drop_ray(partition_dir("raw_pairs", drop, home), SPEC, out, concurrency=1, cpus_per_actor=1)
    assert res.written == ["00000", "00001", "00002"] and res.rows_written == 120
    for a, b in zip(local.files, res.files):
        assert a.name == b.name and pq.read_table(a).equals(pq.read_table(b), check_metadata=True)
    (model,) = _work_nodes("_EmbedActor")  # one actor, on one node
    decode = _work_nodes("_prepare", set(nodes) - {model})
    assert decode == set(nodes) - {model}, (decode, model)  # the actor on one node, decoding on the other


@pytest.mark.timeout(300)
def test_scores_and_weights_run_on_both_nodes_and_equal_the_local_path(cluster, nodes, world):
    from clip_assets.iwl.weights import weigh_drop
    from clip_assets.iwl.weights_ray import weigh_drop_ray
    from clip_assets.score.drop import score_drop
    from clip_assets.score.drop_ray import score_drop_ray

    home, drop, _, local = world
    out = partition_dir("embeddings", drop, home)
    out.mkdir(parents=True, exist_ok=True)
    for f in local.files:  # the local path's embeddings (the other test wrote the same bytes)
        (out / f.name).write_bytes(f.read_bytes())
    table, info = sample_reference([drop], 60, 0, home)
    write_reference(table, info, home)

    def stored(*assets):
        return [pq.read_table(partition_dir(a, drop, home)) for a in assets]

    score_drop(drop, home, budget_elems=2**12, siglip_tau=None)
    local_scores = stored("pair_scores", "kl_stats")
    score_drop_ray(drop, home, budget_elems=2**12, siglip_tau=None, block_rows=20)  # 6 tasks
    for a, b in zip(local_scores, stored("pair_scores", "kl_stats")):
        assert a.column_names == b.column_names and a["uid"].to_pylist() == b["uid"].to_pylist()
        for c in a.column_names:
            if a[c].type == "double" and a[c].null_count == 0:
                np.testing.assert_allclose(b[c].to_numpy(), a[c].to_numpy(), rtol=0, atol=1e-6, err_msg=c)
            else:
                assert a[c].to_pylist() == b[c].to_pylist(), c
    assert _work_nodes("_score_block", set(nodes)) == set(nodes)

    prompts = ["a photo of something red", "a circle"]
    weigh_drop(drop, home, prompts, 10.0, 0.0)
    (local_w,) = stored("importance_weights")
    weigh_drop_ray(drop, home, prompts, 10.0, 0.0, block_rows=20)
    (ray_w,) = stored("importance_weights")
    assert ray_w["uid"].to_pylist() == local_w["uid"].to_pylist() and ray_w["prompt"] == local_w["prompt"]
    np.testing.assert_allclose(ray_w["log_weight"].to_numpy(), local_w["log_weight"].to_numpy(), rtol=0, atol=1e-6)
    assert _work_nodes("_weigh_block", set(nodes)) == set(nodes)
