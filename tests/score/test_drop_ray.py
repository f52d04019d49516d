"""The ray executor of pair_scores + kl_stats writes what the local path writes: same uids in the same order, every
score and KL column equal to 1e-6 (the same float32 inputs through the same row-wise function), the same lineage,
whether the drop is cut per embeddings file or into row blocks inside files; and the scores asset dispatches to
it from its run config.

A local Ray cluster of 2 CPUs for the module (fixed ports: run one Ray test module at a time); skipped when the
optional extra ``ray`` is not installed.
"""

from __future__ import annotations


import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets.defs.resources import HomeResource
from clip_assets.defs.score.assets import scores
from clip_assets.io.commit import resolve, write_table
from clip_assets.io.ingest import ingest_drop
from clip_assets.io.reference import sample_reference, write_reference
from clip_assets.io.tables import plan_embeddings, read_partition
from clip_assets.io.warehouse import partition_dir
from clip_assets.models.card import write_card
from clip_assets.models.embed import embedding_schema
from clip_assets.score.drop import KL_COLUMNS, PAIR_COLUMNS, score_drop
from clip_assets.world import write_drops
from ray_support import attempts, kill_blocks, own_cluster

DIM = 16
SHARDS = (80, 80, 40)


@pytest.fixture(scope="module")
def ray_cluster():
    with own_cluster() as desc:  # this module's own local cluster (tests/ray_support.py)
        yield desc


def _world(home, siglip: bool) -> str:
    """One ingested synthetic drop whose embeddings (random unit float16 vectors for its uids) lie in three files
    like three shards, a reference set of 50 and a card (a SigLIP-like one with a logit bias when ``siglip``)."""
    (path,) = write_drops(home / "landing", drops=1, pairs=sum(SHARDS), seed=3, shard_size=sum(SHARDS))
    ingest_drop(path, home=home)
    drop = path.name
    uids = read_partition("raw_pairs", drop, home, columns=["uid"])["uid"].to_pylist()
    assert len(uids) == sum(SHARDS)
    rng = np.random.default_rng(1)
    lo = 0
    for i, m in enumerate(SHARDS):
        cols = []
        for _ in "uv":
            x = rng.normal(size=(m, DIM))
            x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
            cols.append(pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float16()), DIM))
        t = pa.table([pa.array(uids[lo:lo + m]), *cols, pa.array(["m"] * m)], schema=embedding_schema(DIM))
        write_table(partition_dir("embeddings", drop, home) / f"part-{i:05d}.parquet", t)
        lo += m
    table, info = sample_reference([drop], 50, 0, home)
    write_reference(table, info, home)
    write_card({}, {"logit_scale": 30.0, "logit_bias": -8.0 if siglip else None}, "m", home=home)
    return drop


def _tables(drop, home):
    return {a: pq.read_table(partition_dir(a, drop, home)) for a in ("pair_scores", "kl_stats")}


def _versions(drop, home) -> dict[str, str]:
    """The version folder each of the drop's pair_scores / kl_stats pointers names (a commit moves both)."""
    out = {a: str(resolve(partition_dir(a, drop, home))) for a in ("pair_scores", "kl_stats")}
    assert all(".v-" in v for v in out.values()), out  # versioned commits (clip_assets.io.commit)
    return out


def _assert_same(local: dict[str, pa.Table], other: dict[str, pa.Table]) -> None:
    """Same schema, uids in the same order, same lineage columns, every statistic equal to 1e-6 (nulls alike)."""
    for asset, cols in (("pair_scores", PAIR_COLUMNS), ("kl_stats", KL_COLUMNS)):
        a, b = local[asset], other[asset]
        assert a.schema.equals(b.schema) and a.num_rows == b.num_rows == sum(SHARDS)
        for c in ("uid", "drop", "model_id", "reference_id"):
            assert a[c].to_pylist() == b[c].to_pylist(), (asset, c)
        for c in cols:
            assert a[c].null_count == b[c].null_count, (asset, c)
            if a[c].null_count == a.num_rows:
                continue
            x, y = a[c].to_numpy(), b[c].to_numpy()
            assert np.isfinite(x).all() and np.ptp(x) > 0, (asset, c)  # real statistics, not a constant
            np.testing.assert_allclose(y, x, rtol=0, atol=1e-6, err_msg=f"{asset}.{c}")


@pytest.mark.parametrize("siglip", [False, True], ids=["clip", "siglip"])
def test_ray_scores_equal_the_local_path(ray_cluster, home, siglip):
    from clip_assets.score.drop_ray import score_drop_ray

    drop = _world(home, siglip)
    tau = 127.0 if siglip else None
    local = score_drop(drop, home, budget_elems=2**10, siglip_tau=tau)
    local_t = _tables(drop, home)
    assert local_t["pair_scores"]["log_r_siglip"].null_count == (0 if siglip else sum(SHARDS))
    for block_rows in (0, 30):  # one task per shard file; row blocks inside files (8 tasks, 80 = 30 + 30 + 20)
        plan = plan_embeddings(drop, home, block_rows)
        assert [b.hi - b.lo for b in plan.blocks] == ([80, 80, 40] if block_rows == 0 else [30, 30, 20] * 2 + [30, 10])
        sd = score_drop_ray(drop, home, budget_elems=2**10, siglip_tau=tau, block_rows=block_rows)
        assert sd.rows == local.rows and sd.reference.reference_id == local.reference.reference_id
        assert sd.stats.keys() == local.stats.keys()
        assert sd.pair_scores.equals(_tables(drop, home)["pair_scores"])  # what it returns is what it committed
        _assert_same(local_t, _tables(drop, home))


def _scored_locally(home) -> tuple[str, dict[str, pa.Table]]:
    """A CLIP-like world scored by the local path: its drop and the committed tables the kill tests compare to."""
    drop = _world(home, siglip=False)
    score_drop(drop, home, budget_elems=2**10, siglip_tau=None)
    return drop, _tables(drop, home)


def test_killed_score_workers_are_retried_and_the_result_equals_the_local_path(ray_cluster, home, tmp_path,
                                                                               monkeypatch):
    import clip_assets.score.drop_ray as drop_ray
    from clip_assets.score.drop_ray import score_drop_ray

    drop, local_t = _scored_locally(home)
    kill_blocks(monkeypatch, drop_ray, tmp_path, times=2)  # two block tasks lose their worker mid-task
    assert len(plan_embeddings(drop, home, 30).blocks) == 8
    sd = score_drop_ray(drop, home, budget_elems=2**10, siglip_tau=None, block_rows=30)  # 8 tasks
    assert sd.rows == sum(SHARDS) and attempts(tmp_path) == 8 + 2  # every block once, the two killed twice
    _assert_same(local_t, _tables(drop, home))


def test_score_workers_killed_past_the_retry_bound_fail_cleanly_and_a_rerun_completes(ray_cluster, home, tmp_path,
                                                                                      monkeypatch):
    import ray

    import clip_assets.score.drop_ray as drop_ray
    from clip_assets.models.executors import TASK_MAX_RETRIES
    from clip_assets.score.drop_ray import score_drop_ray

    drop, local_t = _scored_locally(home)
    versions = _versions(drop, home)
    with monkeypatch.context() as m:
        kill_blocks(m, drop_ray, tmp_path, times=None)  # every attempt of every block dies
        with pytest.raises(ray.exceptions.WorkerCrashedError):
            score_drop_ray(drop, home, budget_elems=2**10, siglip_tau=None, block_rows=0)  # 3 tasks
    assert 1 + TASK_MAX_RETRIES <= attempts(tmp_path) <= 3 * (1 + TASK_MAX_RETRIES)  # bounded
    # nothing partial is visible: no commit happened (the pointers name the versions the local run committed; a
    # commit of equal values would move them) and the committed partitions are the earlier ones
    assert _versions(drop, home) == versions
    after = _tables(drop, home)
    assert all(after[a].equals(local_t[a], check_metadata=True) for a in local_t)
    score_drop_ray(drop, home, budget_elems=2**10, siglip_tau=None, block_rows=0)  # the re-run, no kills
    _assert_same(local_t, _tables(drop, home))


def test_scores_asset_with_the_ray_executor_writes_the_local_rows(ray_cluster, home):
    drop = _world(home, siglip=False)

    def run(executor_name):
        with dg.instance_for_test() as inst:
            inst.add_dynamic_partitions("drops", [drop])
            res = dg.materialize([scores], partition_key=drop, instance=inst,
                                 resources={"home": HomeResource(home=str(home))},
                                 run_config={"ops": {"scores": {"config": {"executor": executor_name}}}})
            assert res.success
            metas = [m.materialization.metadata for m in res.get_asset_materialization_events()]
            assert len(metas) == 2 and all(m["executor"].value == executor_name for m in metas)
            checks = res.get_asset_check_evaluations()
            assert len(checks) == 3 and all(c.passed for c in checks)
        return _tables(drop, home)

    _assert_same(run("local"), run("ray"))


def test_the_reference_set_is_put_in_the_object_store_once(ray_cluster, home, monkeypatch):
    import ray

    from clip_assets.io.reference import load_reference
    from clip_assets.score.drop_ray import score_drop_ray

    drop = _world(home, siglip=False)
    puts, put = [], ray.put
    monkeypatch.setattr(ray, "put", lambda value, **kw: puts.append(value) or put(value, **kw))
    sd = score_drop_ray(drop, home, budget_elems=2**10, siglip_tau=None, block_rows=30)  # 8 tasks, one put
    assert sd.rows == sum(SHARDS) and len(puts) == 1
    ref = load_reference(home)
    assert all(np.array_equal(puts[0]["ref"][k], getattr(ref, k)) for k in ("images", "texts", "image_cov"))
