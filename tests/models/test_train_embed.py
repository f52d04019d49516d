"""Training learns; embeddings are finite, unit-norm, resumable shard by shard, and identical after a kill."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from scipy.stats import rankdata

from clip_assets.core.calibration import spearman
from clip_assets.io.drops import add_tar_member, index_drop, index_shard
from clip_assets.io.tables import fixed_list_to_numpy
from clip_assets.models.embed import embed_drop
from clip_assets.models.evaluate import ratio_spearman
from clip_assets.models.loading import ModelSpec, load_model
from clip_assets.models.train import TrainConfig, train_contrastive
from clip_assets.world import write_drops

# A test budget: ~45 CPU seconds of training (zero-shot ~0.75, Spearman ~0.9); the default TrainConfig is the
# ~2 CPU-minute one (~0.98 / ~0.98).
TEST_TRAIN = TrainConfig(steps=400, batch_size=128, lr=5e-3, warmup_steps=20, eval_images=400)


@pytest.fixture(scope="module")
def drops(tmp_path_factory):
    out = tmp_path_factory.mktemp("landing")
    train, held = write_drops(out, drops=2, pairs=4000, seed=11, shard_size=2000)
    return train, held


@pytest.fixture(scope="module")
def trained(drops, tmp_path_factory):
    return train_contrastive(drops[0], TEST_TRAIN, name="synthetic-test", out_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def loaded(trained):
    # through the same local-checkpoint path as any user checkpoint; 1 thread (shared CI CPUs)
    return load_model(
        ModelSpec(name="ignored-name", checkpoint=str(trained.checkpoint_path), device="cpu", batch_size=64,
                  workers=0, threads=1)
    )


@pytest.fixture(scope="module")
def eval_shards(drops):
    # 3 small shards of the held-out drop (pointer tables with raw_pairs' columns)
    tables = index_drop(drops[1])
    rows = pa.concat_tables(tables).slice(0, 450)
    return [
        rows.slice(i * 150, 150).drop_columns(["shard"]).append_column("shard", pa.array([f"{i:05d}"] * 150))
        for i in range(3)
    ]


def test_training_learns_and_records_everything(trained):
    m = trained.metrics
    assert m["zero_shot_accuracy"] >= 0.5, m  # chance is 0.25 (4 shapes); ~0.75 with this budget
    assert m["zero_shot_chance"] == 0.25
    loss = trained.curves["loss"]
    assert len(loss) == TEST_TRAIN.steps == len(trained.curves["logit_scale"])
    assert np.mean(loss[-10:]) < np.mean(loss[:10]) - 0.3
    assert trained.plot_png.startswith(b"\x89PNG")
    cfg = json.loads((trained.checkpoint_dir / "open_clip_config.json").read_text())
    assert cfg["model_name"] == TEST_TRAIN.model and "vision_cfg" in cfg["model_cfg"]
    assert cfg["clip_assets"]["train_config"]["steps"] == TEST_TRAIN.steps
    assert cfg["clip_assets"]["data"]["pairs"] == 4000 and len(cfg["clip_assets"]["data"]["uids_sha256"]) == 64
    assert cfg["clip_assets"]["data"]["world_json_sha256"]
    assert cfg["clip_assets"]["metrics"]["zero_shot_accuracy"] == m["zero_shot_accuracy"]


def test_training_is_seeded(drops, tmp_path):
    cfg = TrainConfig(steps=3, batch_size=32, warmup_steps=1, eval_images=16, max_pairs=200)
    a = train_contrastive(drops[0], cfg, name="a", out_dir=tmp_path)
    b = train_contrastive(drops[0], cfg, name="b", out_dir=tmp_path)
    assert a.curves["loss"] == b.curves["loss"]
    assert a.model_id_str.split("@")[1] == b.model_id_str.split("@")[1]  # same weights, same sha256


def test_ratio_ranks_true_log_ratio(loaded, drops):
    r = ratio_spearman(loaded, drops[1], max_pairs=1500)
    assert r["pairs"] == 1500
    assert r["spearman"] > 0.8, r["spearman"]  # ~0.9 with the test budget; the default budget reaches ~0.98


def test_spearman_helper_matches_definition():
    x = np.array([3.0, 1.0, 2.0, 2.0, 5.0])
    assert rankdata(x).tolist() == [4.0, 1.0, 2.5, 2.5, 5.0]
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(x, x**3) == pytest.approx(1.0)


def _read(path):
    return pq.read_table(path)


def read_embedding_file(path):
    """(uids, image_emb (n, d) float32, text_emb (n, d) float32, model_id) of one embeddings file."""
    t = pq.read_table(path)
    mids = pc.unique(t.column("model_id")).to_pylist()
    return (t.column("uid").to_pylist(), fixed_list_to_numpy(t["image_emb"]), fixed_list_to_numpy(t["text_emb"]),
            ",".join(map(str, mids)))


def output_matches(path, uids, model_id) -> bool:
    """True if ``path`` is a readable embeddings file for exactly these uids (in order) and this model."""
    try:
        t = pq.read_table(path)
    except Exception:
        return False
    return t.column("uid").to_pylist() == list(uids) and t.schema.metadata[b"clip_assets.model_id"].decode() == model_id


def test_embeddings_finite_unit_norm_and_aligned(loaded, eval_shards, tmp_path):
    res = embed_drop(eval_shards, loaded, tmp_path / "emb", workers=0)
    assert res.shards_total == 3 and res.shards_written == 3 and res.rows_written == 450
    for t, f in zip(eval_shards, res.files):
        assert f.name == f"part-{t.column('shard')[0].as_py()}.parquet"
        uids, u, v, mid = read_embedding_file(f)
        assert uids == t.column("uid").to_pylist()  # same rows, same order
        assert mid == loaded.model_id_str
        assert u.shape == v.shape == (150, loaded.embed_dim)
        assert np.isfinite(u).all() and np.isfinite(v).all()
        np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, atol=5e-3)  # float16 storage
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=5e-3)
        schema = pq.read_schema(f)
        assert str(schema.field("image_emb").type) == f"fixed_size_list<element: halffloat>[{loaded.embed_dim}]"
        assert schema.metadata[b"clip_assets.model_id"].decode() == loaded.model_id_str
    # the stored embeddings are the model's own (to float16 precision), pair by pair
    uids, u, v, _ = read_embedding_file(res.files[0])
    ref_v = loaded.encode_texts(eval_shards[0].column("caption").to_pylist()[:8]).numpy()
    np.testing.assert_allclose(v[:8], ref_v, atol=2e-3)
    # a second run skips everything
    again = embed_drop(eval_shards, loaded, tmp_path / "emb", workers=0)
    assert again.shards_skipped == 3 and again.shards_written == 0


def test_kill_and_resume_gives_identical_parquet(loaded, eval_shards, tmp_path):
    full = embed_drop(eval_shards, loaded, tmp_path / "full", workers=2)  # uninterrupted, 2 loader workers

    calls = []

    def killer(done, total, ips):
        calls.append((done, total))
        if done == 1:
            raise KeyboardInterrupt("simulated kill after the first shard")

    with pytest.raises(KeyboardInterrupt):
        embed_drop(eval_shards, loaded, tmp_path / "resumed", progress=killer, workers=0)
    assert calls == [(1, 3)]
    visible = sorted(p.name for p in (tmp_path / "resumed").iterdir() if not p.name.startswith("."))
    assert visible == ["part-00000.parquet"]

    seen = []
    res = embed_drop(eval_shards, loaded, tmp_path / "resumed", progress=lambda *a: seen.append(a), workers=0)
    assert res.skipped == ["00000"] and res.written == ["00001", "00002"]
    assert [s[:2] for s in seen] == [(2, 3), (3, 3)] and all(s[2] > 0 for s in seen)

    # a damaged output (truncated file, wrong rows) is detected and recomputed
    victim = tmp_path / "resumed" / "part-00001.parquet"
    victim.write_bytes(victim.read_bytes()[:100])
    assert not output_matches(victim, eval_shards[1].column("uid").to_pylist(), loaded.model_id_str)
    res2 = embed_drop(eval_shards, loaded, tmp_path / "resumed", workers=0)
    assert res2.written == ["00001"] and sorted(res2.skipped) == ["00000", "00002"]

    for f in full.files:
        a, b = _read(f), _read(tmp_path / "resumed" / f.name)
        assert a.equals(b, check_metadata=True)


def test_torch_decode_path_matches_pil_on_cpu(loaded, eval_shards, tmp_path):
    one = eval_shards[:1]
    pil = embed_drop(one, loaded, tmp_path / "pil", decode="pil", workers=0)
    tv = embed_drop(one, loaded, tmp_path / "tv", decode="torch", workers=0)
    _, u1, v1, _ = read_embedding_file(pil.files[0])
    _, u2, v2, _ = read_embedding_file(tv.files[0])
    assert np.array_equal(v1, v2)
    cos = (u1 * u2).sum(axis=1)
    assert cos.min() > 0.98, cos.min()  # torchvision's resize vs Pillow's: small pixel differences only


def test_from_raw_pairs_folder_polars_and_single_shard(loaded, eval_shards, tmp_path):
    raw = tmp_path / "raw_pairs" / "drop=x"
    raw.mkdir(parents=True)
    for t in eval_shards[:2]:
        pq.write_table(t, raw / f"part-{t.column('shard')[0].as_py()}.parquet")
    a = embed_drop(raw, loaded, tmp_path / "a", workers=0)
    b = embed_drop([pl.from_arrow(t) for t in eval_shards[:2]], loaded, tmp_path / "b", workers=0)
    c = embed_drop([eval_shards[1]], loaded, tmp_path / "c", workers=0)
    assert [f.name for f in a.files] == [f.name for f in b.files] == ["part-00000.parquet", "part-00001.parquet"]
    for fa, fb in zip(a.files, b.files):
        assert _read(fa).equals(_read(fb))
    assert _read(c.files[0]).equals(_read(a.files[1]))


def test_only_pointed_rows_reach_the_model(loaded, eval_shards, tmp_path):
    # A shard tar where one image is corrupt: ingestion rejected it, so raw_pairs has no pointer to it and the
    # embedding never touches those bytes.
    src = eval_shards[0]
    tar_path = tmp_path / "00000.tar"
    good = src.slice(0, 5).to_pylist()
    with tarfile.open(tar_path, "w") as tar:
        def add(name, data):
            add_tar_member(tar, name, data)

        add("bad.jpg", b"\xff\xd8 this is not a jpeg")
        add("bad.txt", b"a photo of a circle")
        for r in good:
            with open(r["tar_path"], "rb") as fh:
                fh.seek(r["offset"])
                add(f"{r['key']}.jpg", fh.read(r["size"]))
            add(f"{r['key']}.txt", r["caption"].encode())
    ptr = index_shard(tar_path, "00000")
    assert ptr.num_rows == 6
    clean = ptr.filter(pc.not_equal(ptr.column("key"), "bad"))  # what raw_pairs holds
    res = embed_drop([clean], loaded, tmp_path / "out", workers=0)
    uids, u, _, _ = read_embedding_file(res.files[0])
    assert uids == [r["uid"] for r in good] and np.isfinite(u).all()
    # and if a bad pointer did slip through, the error names the shard and uid instead of writing garbage
    with pytest.raises(RuntimeError, match="cannot decode image of uid"):
        embed_drop([ptr], loaded, tmp_path / "out2", workers=0)
    assert not (tmp_path / "out2" / "part-00000.parquet").exists()
