"""The ray executor of the embeddings stage writes what the local path writes, resumes per shard and fails on an
undecodable image the way the local path does; executor() picks local/ray from config or environment.

The Ray tests run a local cluster of 2 CPUs: one for the model actor (a pool of 1), one for the decode tasks (Ray
Data can hang when actors take every CPU). They are skipped when the optional extra ``ray`` is not installed.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from clip_assets.io.drops import index_drop
from clip_assets.io.tables import fixed_list_to_numpy
from clip_assets.models.embed import embed_drop
from clip_assets.models.executors import EXECUTOR_ENV, executor
from clip_assets.models.loading import ModelSpec, load_model
from clip_assets.world import write_drops
from ray_support import own_cluster

BATCH = 32
SPEC = ModelSpec(name="clip-assets-tiny", device="cpu", workers=0, batch_size=BATCH, threads=1)


@pytest.fixture(scope="module")
def ray_cluster():
    with own_cluster() as desc:  # this module's own local cluster (tests/ray_support.py)
        yield desc


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    (drop,) = write_drops(tmp_path_factory.mktemp("landing"), drops=1, pairs=200, seed=5, shard_size=80)
    t = index_drop(drop)
    assert [x.num_rows for x in t] == [80, 80, 40]
    return t


@pytest.fixture(scope="module")
def loaded():
    return load_model(SPEC)


@pytest.fixture(scope="module")
def local(tables, loaded, tmp_path_factory):
    return embed_drop(tables, loaded, tmp_path_factory.mktemp("local"), workers=0)


def _ray_cpus():
    import ray

    return ray.available_resources().get("CPU", 0.0), ray.cluster_resources().get("CPU", 0.0)


def _all_cpus_free_within(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        free, total = _ray_cpus()
        if free == total:
            return True
        time.sleep(0.5)
    return False


def _same_rows(a, b):
    """Same uids in the same order, same schema and metadata, embeddings equal within float16 storage."""
    ta, tb = pq.read_table(a), pq.read_table(b)
    assert ta.schema.equals(tb.schema, check_metadata=True)
    assert ta.column("uid").to_pylist() == tb.column("uid").to_pylist()
    assert ta.column("model_id").to_pylist() == tb.column("model_id").to_pylist()
    for col in ("image_emb", "text_emb"):
        np.testing.assert_allclose(fixed_list_to_numpy(ta[col]), fixed_list_to_numpy(tb[col]), rtol=0, atol=1e-3)
    return ta.equals(tb, check_metadata=True)  # bit for bit (it is on CPU: same batches, same kernels)


def test_executor_from_env_and_config(monkeypatch):
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    assert executor() == "local" and executor("") == "local" and executor("ray") == "ray"
    monkeypatch.setenv(EXECUTOR_ENV, "ray")
    assert executor() == "ray" and executor("local") == "local"
    monkeypatch.setenv(EXECUTOR_ENV, " Local ")
    assert executor() == "local"
    monkeypatch.setenv(EXECUTOR_ENV, "spark")
    with pytest.raises(ValueError, match=r"unknown executor 'spark' \(from \$CLIP_ASSETS_EXECUTOR\).*local, ray"):
        executor()
    with pytest.raises(ValueError, match=r"unknown executor 'dask' \(from the run config's executor\)"):
        executor("dask")


def test_decode_tasks_take_several_small_batches_and_keep_every_cpu_busy():
    from clip_assets.models import embed_ray as er

    assert er._batches_per_task(256, 32) == 8 * 4  # 8192 samples of 12 KiB (float32) each
    assert er._batches_per_task(32, 32) == 256
    assert er._batches_per_task(256, 224) == 1  # 154 MB of float32 pixels: one batch (two would pass 256 MiB) ...
    assert er._batches_per_task(256, 224, itemsize=1) == 6  # ... six as uint8 (38.5 MB each)
    assert er._batches_per_task(64, 224) == 6 and er._batches_per_task(16384, 32) == 1  # never none
    assert er._decode_blocks(80, 256, 32, cpus=2) == 3  # a 20k-pair drop on 2 CPUs: 3 tasks of at most 32 batches
    assert er._decode_blocks(80, 256, 32, cpus=16) == 16  # ... on 16 CPUs: one task per CPU at least
    assert er._decode_blocks(3, 256, 32, cpus=16) == 3  # never more blocks than batches
    assert er._decode_blocks(100_000, 256, 224, cpus=64) == 100_000  # 154 MB float32 batches: one per task, no cap
    assert er._decode_blocks(100_000, 256, 224, cpus=64, itemsize=1) == 16_667  # 6 uint8 batches per task
    assert er._decode_task_memory(256, 32) == er.DECODE_WORKER_MEMORY + 2 * 32 * 256 * 3 * 32 * 32 * 4
    assert er._decode_task_memory(256, 224, 1) == er.DECODE_WORKER_MEMORY + 2 * 6 * 256 * 3 * 224 * 224


def test_actors_load_the_callers_device_on_a_gpu_cluster():
    from clip_assets.models import embed_ray as er

    auto = ModelSpec(name="clip-assets-tiny", device="auto")
    assert er._actor_spec(auto, gpus=True).device == "cuda"  # each actor's own GPU (cuda:0 inside it)
    assert er._actor_spec(dataclasses.replace(auto, device="cuda:3"), gpus=True).device == "cuda"
    assert er._actor_spec(dataclasses.replace(auto, device="cpu"), gpus=True).device == "cpu"  # asked for
    assert er._actor_spec(auto, gpus=False).device == "cpu"
    with pytest.raises(ValueError, match=r"asks for device 'cuda:1' but the Ray cluster has no GPU"):
        er._actor_spec(dataclasses.replace(auto, device="cuda:1"), gpus=False)


def test_an_actor_pool_that_leaves_no_cpu_for_decoding_is_refused_before_any_work(ray_cluster, tables, loaded,
                                                                                   tmp_path, monkeypatch):
    from clip_assets.models.embed_ray import embed_drop_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # the local cluster: it cannot grow
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"does not fit the cluster: 2 actor\(s\) x 1 CPU = 2 of the cluster's 2 "
                                         r"CPUs, leaving less than one for the decode tasks.*ray_actors"):
        embed_drop_ray(tables, loaded, tmp_path / "out", concurrency=2, cpus_per_actor=1)  # would hang in Ray Data
    assert time.monotonic() - t0 < 30 and not list((tmp_path / "out").glob("part-*"))
    assert _all_cpus_free_within(10)  # nothing was started
    seen = []
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # a cluster of its own: an autoscaler may add nodes, so a warning
    from clip_assets.models import embed_ray as er

    er._check_pool_fits(2, 1.0, False, seen.append)
    assert len(seen) == 1 and "waiting for the cluster to grow" in seen[0]
    er._check_pool_fits(1, 1.0, False, seen.append)  # fits: says nothing
    assert len(seen) == 1


def test_local_cluster_is_on_loopback_only(ray_cluster):
    import ray

    assert "local cluster on 127.0.0.1 (2 CPUs, 256 MB object store, no dashboard)" in ray_cluster
    assert [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]] == ["127.0.0.1"]
    assert ray.cluster_resources()["CPU"] == 2


def test_decode_tasks_carry_uint8_pixels_that_the_actor_finishes_exactly(ray_cluster, tables, loaded, tmp_path):
    from clip_assets.models import embed_ray as er
    from clip_assets.models.embed import split_preprocess

    split = split_preprocess(loaded.preprocess, loaded.image_size)
    assert split is not None  # open_clip's eval transform splits
    shard = er._Shard("00002", tables[2], tmp_path / "part-00002.parquet", tables[2].num_rows)
    (item,) = er._batch_items([shard], 40)  # the 40-row shard as one model batch
    batch = pa.Table.from_pylist([item])
    u8 = er._prepare(batch, er._pickled_transforms(loaded, split), loaded.context_length).to_pylist()[0]
    f32 = er._prepare(batch, er._pickled_transforms(loaded, None), loaded.context_length).to_pylist()[0]
    assert u8["images_shape"] == [40, 32, 32, 3] and len(u8["images"]) == 40 * 32 * 32 * 3
    assert f32["images_shape"] == [40, 3, 32, 32] and len(f32["images"]) == 4 * len(u8["images"])
    actor_u8 = er._EmbedActor(SPEC, 1, dataclasses.replace(split, pil=None))
    actor_f32 = er._EmbedActor(SPEC, 1, None)
    assert torch.equal(actor_u8._images(u8), actor_f32._images(f32))  # the model sees the same pixels
    a, b = actor_u8(pa.Table.from_pylist([u8])).to_pylist()[0], actor_f32(pa.Table.from_pylist([f32])).to_pylist()[0]
    assert a["img"] == b["img"] and a["txt"] == b["txt"]


def test_a_transform_that_does_not_split_travels_as_float32_to_the_same_rows(ray_cluster, tables, loaded, local,
                                                                            tmp_path, monkeypatch):
    from clip_assets.models import embed_ray as er

    monkeypatch.setattr(er, "split_preprocess", lambda *a: None)  # the driver decides what the tasks carry
    res = er.embed_drop_ray(tables, loaded, tmp_path / "ray", concurrency=1, cpus_per_actor=1)
    assert res.written == ["00000", "00001", "00002"]
    assert all(_same_rows(a, b) for a, b in zip(local.files, res.files))  # bit for bit, as with uint8


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_writes_the_local_rows_and_resumes_per_shard(ray_cluster, tables, loaded, local, tmp_path):
    from clip_assets.models.embed_ray import embed_drop_ray

    out = tmp_path / "ray"
    out.mkdir()
    kept = out / "part-00001.parquet"
    shutil.copy2(local.files[1], kept)  # a valid output from an earlier (killed) run
    kept_mtime = kept.stat().st_mtime_ns
    (out / "part-99999.parquet").write_bytes(b"a shard no longer in the drop")
    seen = []
    res = embed_drop_ray(tables, SPEC, out, progress=lambda *a: seen.append(a[:2]), concurrency=1,
                         cpus_per_actor=1)
    assert res.skipped == ["00001"] and res.written == ["00000", "00002"] and res.removed == ["99999"]
    assert res.rows_total == 200 and res.rows_written == 120 and res.model_id == loaded.model_id_str
    assert sorted(seen) == [(2, 3), (3, 3)]
    assert kept.stat().st_mtime_ns == kept_mtime  # not recomputed
    assert [f.name for f in res.files] == [f.name for f in local.files]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [f.name for f in local.files]
    exact = [_same_rows(a, b) for a, b in zip(local.files, res.files)]
    assert all(exact), exact  # within float16 was checked above; on CPU they are identical
    # everything valid now: nothing to compute, no Ray job
    again = embed_drop_ray(tables, loaded, out)
    assert again.skipped == ["00000", "00001", "00002"] and again.written == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_undecodable_image_fails_like_the_local_path(ray_cluster, tables, loaded, local, tmp_path):
    from clip_assets.models.embed_ray import embed_drop_ray

    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\xff\xd8 not an image at all" * 10)
    t = tables[1].to_pylist()
    t[5] = {**t[5], "tar_path": str(garbage), "offset": 0, "size": garbage.stat().st_size}
    bad = [tables[0], pa.Table.from_pylist(t, schema=tables[1].schema), tables[2]]
    uid = t[5]["uid"]

    with pytest.raises(RuntimeError, match=f"cannot decode image of uid {uid}") as lerr:
        embed_drop(bad, loaded, tmp_path / "local", workers=0)
    with pytest.raises(RuntimeError, match=f"cannot decode image of uid {uid}") as rerr:
        embed_drop_ray(bad, SPEC, tmp_path / "ray", concurrency=1, cpus_per_actor=1)
    same = lambda e: re.sub(r" at 0x[0-9a-f]+", "", str(e))  # noqa: E731 - Pillow names a BytesIO by address
    assert same(rerr.value) == same(lerr.value)
    # the failed job's model actor is gone while the error is still held (here by pytest): its CPU is free for
    # the next job, whose actor would otherwise wait behind its own decode tasks for ever on 2 CPUs
    assert _all_cpus_free_within(30), _ray_cpus()
    for d in ("local", "ray"):
        names = sorted(p.name for p in (tmp_path / d).iterdir() if not p.name.startswith("."))
        assert "part-00001.parquet" not in names, names
        for n in names:  # whatever was completed before the error is the good output
            assert _same_rows(tmp_path / d / n, local.files[int(n[5:10])])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_embeddings_asset_with_the_ray_executor_writes_the_local_rows(ray_cluster, loaded, tmp_path):
    import dagster as dg

    from clip_assets.defs.embed.assets import embeddings
    from clip_assets.defs.partitions import drops_partitions
    from clip_assets.defs.resources import HomeResource
    from clip_assets.io.ingest import ingest_drop
    from clip_assets.io.warehouse import partition_dir
    from clip_assets.models.card import write_card

    home = tmp_path / "home"
    (drop_dir,) = write_drops(home / "landing", drops=1, pairs=100, seed=9, shard_size=50)
    ingest_drop(drop_dir, home=home)
    write_card(SPEC.to_dict(), loaded.model_id, loaded.model_id_str, home=home)
    drop = drop_dir.name
    out = partition_dir("embeddings", drop, home)

    def run(executor_name):
        with dg.instance_for_test() as inst:
            inst.add_dynamic_partitions(drops_partitions.name, [drop])
            res = dg.materialize([embeddings], partition_key=drop, instance=inst,
                                 resources={"home": HomeResource(home=str(home))},
                                 run_config={"ops": {"embeddings": {"config": {"executor": executor_name}}}})
            assert res.success
            (mat,) = res.get_asset_materialization_events()
            meta = mat.materialization.metadata
            assert meta["executor"].value == executor_name and meta["shards_written"].value == 2
            assert all(c.passed for c in res.get_asset_check_evaluations())
        files = sorted(out.glob("part-*.parquet"))
        tables = {f.name: pq.read_table(f) for f in files}
        for f in files:
            f.unlink()
        return tables

    local_rows = run("local")
    ray_rows = run("ray")
    assert sorted(local_rows) == sorted(ray_rows) == ["part-00000.parquet", "part-00001.parquet"]
    for name, t in local_rows.items():
        assert t.equals(ray_rows[name], check_metadata=True)
