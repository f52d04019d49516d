"""The ray executor of importance_weights writes what the local path writes: same uids and prompts in the same
order, log weights equal to 1e-6, weights equal to float rounding, and the SAME overflow shift of the whole drop
when a' is large enough to need one (a per-block shift would differ between blocks); the asset dispatches to it
from its run config.

A local Ray cluster of 2 CPUs for the module (fixed ports: run one Ray test module at a time); skipped when the
optional extra ``ray`` is not installed.
"""

from __future__ import annotations


import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets.defs.iwl.assets import importance_weights
from clip_assets.defs.resources import HomeResource
from clip_assets.io.ingest import ingest_drop
from clip_assets.io.tables import plan_embeddings
from clip_assets.io.warehouse import partition_dir
from clip_assets.iwl.weights import weigh_drop
from clip_assets.models.card import write_card
from clip_assets.models.embed import embed_drop
from clip_assets.models.loading import ModelSpec, load_model
from clip_assets.world import write_drops
from ray_support import attempts, kill_blocks, own_cluster

SPEC = ModelSpec(name="clip-assets-tiny", device="cpu", workers=0, batch_size=32, threads=1)
PROMPTS = ["a photo of something red", "a circle"]


@pytest.fixture(scope="module")
def ray_cluster():
    with own_cluster() as desc:  # this module's own local cluster (tests/ray_support.py)
        yield desc


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One ingested synthetic drop of 3 shards (80, 80, 40), embedded by the tiny model, and its card."""
    home = tmp_path_factory.mktemp("iwl-ray") / "home"
    (path,) = write_drops(home / "landing", drops=1, pairs=200, seed=13, shard_size=80)
    ingest_drop(path, home=home)
    lm = load_model(SPEC)
    embed_drop(partition_dir("raw_pairs", path.name, home), lm, partition_dir("embeddings", path.name, home),
               workers=0)
    write_card(SPEC.to_dict(), lm.model_id, lm.model_id_str, home=home)
    assert [b.hi - b.lo for b in plan_embeddings(path.name, home).blocks] == [80, 80, 40]
    return home, path.name


def _stored(home, drop) -> pa.Table:
    return pq.read_table(partition_dir("importance_weights", drop, home))


def _assert_same(a: pa.Table, b: pa.Table) -> None:
    assert a.schema.equals(b.schema) and a.num_rows == b.num_rows == 200 * len(PROMPTS)
    for c in ("uid", "prompt", "model_id", "a_prime", "b_prime", "weight_shift"):
        assert a[c].to_pylist() == b[c].to_pylist(), c
    lw_a, lw_b = a["log_weight"].to_numpy(), b["log_weight"].to_numpy()
    assert np.ptp(lw_a) > 0  # real weights, not a constant
    np.testing.assert_allclose(lw_b, lw_a, rtol=0, atol=1e-6)
    np.testing.assert_allclose(b["weight"].to_numpy(), a["weight"].to_numpy(), rtol=1e-9, atol=0)


@pytest.mark.parametrize("b_prime", [0.5, 760.0], ids=["unshifted", "shifted"])
def test_ray_weights_equal_the_local_path(ray_cluster, world, b_prime):
    from clip_assets.iwl.weights_ray import weigh_drop_ray

    home, drop = world
    local = weigh_drop(drop, home, PROMPTS, 10.0, b_prime)
    local_t = _stored(home, drop)
    shifts = set(local_t["weight_shift"].to_pylist())
    # b' = 760: log w = 10 cos + 760 > 700 (SAFE_LOG_MAX), so each prompt's weights carry one shift > 0 of the
    # whole drop; a shift taken per block would differ between blocks (each has its own max)
    assert (shifts == {0.0}) if b_prime < 700 else (len(shifts) == len(PROMPTS) and min(shifts) > 0)
    for block_rows in (0, 30):  # one task per shard file; row blocks inside files
        dw = weigh_drop_ray(drop, home, PROMPTS, 10.0, b_prime, block_rows=block_rows)
        assert dw.uids == local.uids and dw.summary == local.summary and dw.model_id == local.model_id
        assert dw.table.equals(_stored(home, drop))  # what it returns is what it committed
        _assert_same(local_t, _stored(home, drop))


def test_killed_weight_workers_are_retried_and_the_result_equals_the_local_path(ray_cluster, world, tmp_path,
                                                                               monkeypatch):
    import clip_assets.iwl.weights_ray as weights_ray

    home, drop = world
    weigh_drop(drop, home, PROMPTS, 10.0, 0.5)
    local_t = _stored(home, drop)
    kill_blocks(monkeypatch, weights_ray, tmp_path, times=2)  # the first two block attempts lose their worker
    n_blocks = len(plan_embeddings(drop, home, 30).blocks)
    dw = weights_ray.weigh_drop_ray(drop, home, PROMPTS, 10.0, 0.5, block_rows=30)
    assert attempts(tmp_path) == n_blocks + 2 and len(dw.uids) == 200  # every block once, the two killed twice
    _assert_same(local_t, _stored(home, drop))


def test_importance_weights_asset_with_the_ray_executor_writes_the_local_rows(ray_cluster, world):
    home, drop = world

    def run(executor_name):
        with dg.instance_for_test() as inst:
            inst.add_dynamic_partitions("drops", [drop])
            res = dg.materialize([importance_weights], partition_key=drop, instance=inst,
                                 resources={"home": HomeResource(home=str(home))},
                                 run_config={"ops": {"importance_weights": {"config": {
                                     "executor": executor_name, "prompts": PROMPTS}}}})
            assert res.success
            (mat,) = res.get_asset_materialization_events()
            assert mat.materialization.metadata["executor"].value == executor_name
            (check,) = res.get_asset_check_evaluations()
            assert check.passed
        return _stored(home, drop)

    _assert_same(run("local"), run("ray"))
