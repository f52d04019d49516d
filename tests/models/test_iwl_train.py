"""IWL training plumbing: the weighted loop, the training pool join, evaluation sets and zero-shot evaluation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from clip_assets.io.commit import stage_dir
from clip_assets.io.warehouse import partition_dir
from clip_assets.models import iwl_train as iw
from clip_assets.models.small import TINY
from clip_assets.models.train import TrainConfig, train_contrastive
from clip_assets.world import write_drops

TINY = dict(model=TINY, steps=3, batch_size=16, warmup_steps=1, eval_images=8, threads=1)


@pytest.fixture(scope="module")
def drop_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("iwl_landing")
    return write_drops(out, drops=1, pairs=48, seed=5, shard_size=24)[0]


def _state(res):
    return torch.load(res.checkpoint_path, map_location="cpu", weights_only=True)


def test_unit_weights_train_exactly_like_the_plain_loss(drop_dir, tmp_path):
    cfg = TrainConfig(**TINY)
    base = train_contrastive(drop_dir, cfg, name="plain", out_dir=tmp_path)
    ones = train_contrastive(drop_dir, cfg, name="ones", out_dir=tmp_path, sample_weights=np.ones(48))
    sa, sb = _state(base), _state(ones)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k], sb[k], atol=1e-5), k
    np.testing.assert_allclose(base.curves["loss"], ones.curves["loss"], rtol=1e-5)


def test_weights_change_training_and_are_checked(drop_dir, tmp_path):
    cfg = TrainConfig(**TINY)
    base = train_contrastive(drop_dir, cfg, name="plain", out_dir=tmp_path)
    w = np.where(np.arange(48) % 2 == 0, 4.0, 0.25)
    weighted = train_contrastive(drop_dir, cfg, name="w", out_dir=tmp_path, sample_weights=w)
    assert weighted.curves["loss"][0] != pytest.approx(base.curves["loss"][0])
    assert any(not torch.equal(a, b) for a, b in zip(_state(base).values(), _state(weighted).values()))
    with pytest.raises(ValueError, match="sample_weights"):
        train_contrastive(drop_dir, cfg, name="bad", out_dir=tmp_path, sample_weights=np.ones(47))
    with pytest.raises(ValueError, match="sample_weights"):
        train_contrastive(drop_dir, cfg, name="bad", out_dir=tmp_path, sample_weights=-np.ones(48))


# ------------------------------------------------------------------ pool


def _write(asset: str, drop: str, home: Path, table: pa.Table) -> None:
    with stage_dir(partition_dir(asset, drop, home)) as w:
        w.write_table("part-00000.parquet", table)


def _raw(uids):
    n = len(uids)
    return pa.table({"uid": uids, "caption": [f"c{i}" for i in range(n)], "tar_path": ["/x.tar"] * n,
                     "offset": list(range(n)), "size": [1] * n})


def _weights(uids, prompt, lw, model_id="m@1"):
    n = len(uids)
    return pa.table({"uid": uids, "prompt": [prompt] * n, "log_weight": np.asarray(lw, float),
                     "weight": np.exp(lw), "weight_shift": np.zeros(n), "a_prime": np.full(n, 10.0),
                     "b_prime": np.zeros(n), "model_id": [model_id] * n})


def test_training_pool_joins_by_uid_and_reports_left_out(tmp_path):
    home = tmp_path / "home"
    _write("raw_pairs", "d1", home, _raw(["a", "b", "c", "d"]))
    _write("raw_pairs", "d2", home, _raw(["e", "f"]))
    w1 = pa.concat_tables([_weights(["d", "b", "a"], "red", [3.0, 2.0, 1.0]),  # "c" has no weight
                           _weights(["a", "b", "c", "d"], "blue", [0.0, 0.0, 0.0, 0.0])])
    _write("importance_weights", "d1", home, w1)
    _write("importance_weights", "d2", home, pa.concat_tables([_weights(["f", "e"], "red", [5.0, 4.0]),
                                                               _weights(["e", "f"], "blue", [1.0, 1.0])]))
    pool = iw.load_training_pool(home)  # first stored prompt: "red"
    assert pool.prompt == "red" and pool.drops == ["d1", "d2"] and pool.left_out == 1
    assert pool.pointers.column("uid").to_pylist() == ["a", "b", "d", "e", "f"]  # raw_pairs order
    np.testing.assert_allclose(pool.log_weight, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert pool.a_prime == 10.0 and pool.reference_model_id == "m@1"
    blue = iw.load_training_pool(home, prompt="blue", drops=["d2"])
    np.testing.assert_allclose(blue.log_weight, [1.0, 1.0])
    with pytest.raises(ValueError, match="stored prompts"):
        iw.load_training_pool(home, prompt="green")
    with pytest.raises(ValueError, match="no raw_pairs or no importance_weights"):
        iw.load_training_pool(home, drops=["nope"])
    with pytest.raises(ValueError, match="no drop has both"):
        iw.load_training_pool(tmp_path / "empty")
    _write("importance_weights", "d2", home, _weights(["e", "f"], "red", [1.0, 1.0], model_id="other@2"))
    with pytest.raises(ValueError, match="different reference models"):
        iw.load_training_pool(home)


def test_training_weights_normalisation():
    lw = np.array([0.0, np.log(3.0)])
    w, c = iw.training_weights(lw, "mean")
    np.testing.assert_allclose(w, [0.5, 1.5])
    assert c == pytest.approx(np.log(2.0))
    w2, c2 = iw.training_weights(lw, "none")
    np.testing.assert_allclose(w2, [1.0, 3.0]) and c2 == 0.0
    with pytest.raises(ValueError, match="overflows"):
        iw.training_weights(np.array([800.0]), "none")


# ------------------------------------------------------------------ evaluation sets


def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 12), colour).save(buf, format="JPEG")
    return buf.getvalue()


def test_eval_set_from_parquet_folder_and_errors(tmp_path):
    t = pa.table({"image": [_jpeg("red"), _jpeg("blue"), _jpeg("red")], "label": ["cat", "dog", "cat"]})
    pq.write_table(t, tmp_path / "eval.parquet")
    es = iw.load_eval_set(str(tmp_path / "eval.parquet"))
    assert es.class_names == ["cat", "dog"] and es.labels.tolist() == [0, 1, 0]
    x = es.images_u8(16)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.uint8
    # image_path column, integer labels with class names
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(_jpeg("green"))
    pq.write_table(pa.table({"image_path": ["imgs/a.jpg"], "label": [1]}), tmp_path / "paths.parquet")
    es2 = iw.load_eval_set(str(tmp_path / "paths.parquet"), class_names=["x", "y"])
    assert es2.labels.tolist() == [1] and es2.class_names == ["x", "y"]
    with pytest.raises(ValueError, match="class_names"):
        iw.load_eval_set(str(tmp_path / "paths.parquet"))
    # ImageFolder
    for cls, col in (("circle", "red"), ("square", "blue")):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        (tmp_path / "folder" / cls / "1.jpg").write_bytes(_jpeg(col))
    es3 = iw.load_eval_set(str(tmp_path / "folder"))
    assert es3.class_names == ["circle", "square"] and es3.labels.tolist() == [0, 1]
    # errors name what is missing
    with pytest.raises(FileNotFoundError, match="does not exist"):
        iw.load_eval_set(str(tmp_path / "missing.parquet"))
    pq.write_table(pa.table({"label": ["a"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="'image'"):
        iw.load_eval_set(str(tmp_path / "bad.parquet"))
    with pytest.raises(FileNotFoundError, match="not a synthetic one"):
        iw.load_eval_set("synthetic", home=tmp_path / "no_world_home")


def test_synthetic_eval_set_and_zero_shot_evaluation(drop_dir, tmp_path):
    home = tmp_path / "home"
    (home / "landing").mkdir(parents=True)
    (home / "landing" / "world.json").write_bytes((drop_dir.parent / "world.json").read_bytes())
    es = iw.load_eval_set("synthetic", home=home, target_domain="red", n=12, seed=1)
    assert es.n == 12 and es.class_names == ["circle", "square", "triangle", "cross"]
    with pytest.raises(ValueError, match="unknown target domain"):
        iw.load_eval_set("synthetic", home=home, target_domain="purple")
    res = train_contrastive(drop_dir, TrainConfig(**TINY), name="m", out_dir=tmp_path / "m")
    loaded = iw.load_checkpoint(res.checkpoint_dir)
    assert loaded.model_id_str == res.model_id_str
    r = iw.evaluate_zero_shot(loaded, es)  # 64 px world images resized to the 32 px model
    assert r["n"] == 12 and 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["macro_f1"] <= 1.0
    assert sum(row["support"] for row in r["per_class"]) == 12


def test_mean_std():
    assert iw.mean_std([1.0]) == (1.0, 0.0)
    m, s = iw.mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)


# ------------------------------------------------------------------ determinism and streaming


def _bytes(res) -> bytes:
    return b"".join(k.encode() + v.numpy().tobytes() for k, v in _state(res).items())


def test_same_seed_gives_identical_weights_and_metrics_with_or_without_workers(drop_dir, tmp_path):
    cfg = TrainConfig(**{**TINY, "steps": 4, "seed": 3})
    w = np.linspace(0.1, 3.0, 48)
    a = train_contrastive(drop_dir, cfg, name="a", out_dir=tmp_path, sample_weights=w)
    b = train_contrastive(drop_dir, cfg, name="b", out_dir=tmp_path, sample_weights=w)
    c = train_contrastive(drop_dir, TrainConfig(**{**TINY, "steps": 4, "seed": 3, "workers": 2}), name="c",
                          out_dir=tmp_path, sample_weights=w)
    assert _bytes(a) == _bytes(b) == _bytes(c)
    assert a.model_id_str == b.model_id_str == c.model_id_str
    assert a.curves["loss"] == b.curves["loss"] == c.curves["loss"]
    assert a.metrics["zero_shot_accuracy"] == b.metrics["zero_shot_accuracy"] == c.metrics["zero_shot_accuracy"]
    other = train_contrastive(drop_dir, TrainConfig(**{**TINY, "steps": 4, "seed": 4}), name="d", out_dir=tmp_path,
                              sample_weights=w)
    assert _bytes(other) != _bytes(a)
    assert not torch.are_deterministic_algorithms_enabled()  # the training's setting was restored


def test_batch_plan_is_seeded_and_each_epoch_a_permutation():
    from clip_assets.models.train import batch_plan

    p = batch_plan(10, 4, 6, seed=1)
    assert p.shape == (6, 4)
    np.testing.assert_array_equal(p, batch_plan(10, 4, 6, seed=1))
    assert not np.array_equal(p, batch_plan(10, 4, 6, seed=2))
    for epoch in (p[0:2], p[2:4], p[4:6]):  # 10 rows fill 2 batches of 4 per permutation
        assert len(set(epoch.ravel().tolist())) == 8
    assert batch_plan(3, 8, 2, seed=0).shape == (2, 3)  # batch capped at the pool size


def test_pair_batches_decode_the_planned_rows_in_step_order(drop_dir):
    from clip_assets.io.batches import decode_all
    from clip_assets.io.drops import index_drop
    from clip_assets.models.train import PairBatches, batch_plan

    ptr = pa.concat_tables(index_drop(drop_dir))
    plan = batch_plan(ptr.num_rows, 8, 7, seed=0)
    ref = decode_all([ptr], 32)
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(PairBatches(ptr, plan, 32), batch_size=None, num_workers=workers)
        steps = []
        for step, images in loader:
            steps.append(step)
            assert torch.equal(images, ref[torch.from_numpy(plan[step])])
        assert steps == list(range(7))


def test_decode_cache_returns_the_same_batches_within_its_budget(drop_dir):
    from clip_assets.io.batches import decode_all
    from clip_assets.io.drops import index_drop
    from clip_assets.models.train import PairBatches, batch_plan

    ptr = pa.concat_tables(index_drop(drop_dir))  # 48 rows
    plan = batch_plan(ptr.num_rows, 8, 18, seed=0)  # 3 epochs of 6 batches
    ref = decode_all([ptr], 32)
    per_image = 3 * 32 * 32
    for budget, decodes in ((0, 18 * 8), (48 * per_image, 48), (10 * per_image, 18 * 8 - 2 * 10)):
        ds = PairBatches(ptr, plan, 32, cache_bytes=budget)
        for step, images in ds:
            assert torch.equal(images, ref[torch.from_numpy(plan[step])])
        # the pool fits: each row decoded once; 10 fit: their 2 later visits (of 3) come from the cache
        assert ds.decodes == decodes, (budget, ds.decodes)
    for workers in (0, 2):  # the budget is shared out among workers; batches unchanged
        loader = torch.utils.data.DataLoader(PairBatches(ptr, plan, 32, cache_bytes=48 * per_image),
                                             batch_size=None, num_workers=workers)
        assert [s for s, im in loader if torch.equal(im, ref[torch.from_numpy(plan[s])])] == list(range(18))


def test_training_with_or_without_the_decode_cache_is_identical(drop_dir, tmp_path):
    cfg = dict(TINY, steps=8, seed=2)  # 48 rows, batches of 16: 3 epochs, so the cache serves 2 of them
    a = train_contrastive(drop_dir, TrainConfig(**cfg, decode_cache_mb=0), name="a", out_dir=tmp_path)
    b = train_contrastive(drop_dir, TrainConfig(**cfg), name="b", out_dir=tmp_path)
    assert _bytes(a) == _bytes(b) and a.curves["loss"] == b.curves["loss"]
    with pytest.raises(ValueError, match="decode_cache_mb"):
        TrainConfig(decode_cache_mb=-1)


def test_train_config_precision_and_device_are_checked(drop_dir, tmp_path):
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="CUDA"):
            train_contrastive(drop_dir, TrainConfig(**{**TINY, "device": "cuda"}), name="x", out_dir=tmp_path)
