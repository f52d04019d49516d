"""Model loading: by name (custom config, no weights), by local checkpoint, and the failures users will meet."""

from __future__ import annotations

import math
import shutil
import time

import numpy as np
import open_clip
import pytest
import torch
from huggingface_hub import constants
from PIL import Image

from clip_assets.models import small
from clip_assets.models.loading import ModelLoadError, ModelSpec, hub_offline, load_model
from clip_assets.models.train import TrainConfig, train_contrastive
from clip_assets.world import write_drops


@pytest.fixture(scope="module")
def drop(tmp_path_factory):
    out = tmp_path_factory.mktemp("landing")
    (path,) = write_drops(out, drops=1, pairs=600, seed=3, shard_size=300)
    return path


@pytest.fixture(scope="module")
def trained20(drop, tmp_path_factory):
    cfg = TrainConfig(steps=20, batch_size=64, warmup_steps=5, eval_images=64)
    return train_contrastive(drop, cfg, name="t20", out_dir=tmp_path_factory.mktemp("models"))


def _probe_inputs(lm, n=4):
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]
    x = torch.stack([lm.preprocess(im) for im in imgs])
    texts = ["a photo of a circle", "an image", "a photo of something red", "a photo of a large blue cross"][:n]
    return x, texts


def test_load_custom_config_by_name_without_weights():
    spec = ModelSpec(name=small.TINY, device="cpu", workers=0)
    lm = load_model(spec)
    assert not lm.model.training
    assert lm.device.type == "cpu" and lm.precision == "fp32"
    assert lm.model_id["name"] == small.TINY
    assert lm.model_id["pretrained"] is None and lm.model_id["checkpoint_sha256"] is None
    assert lm.model_id["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-5)  # open_clip's init, a = exp(log 1/0.07)
    assert lm.model_id["logit_bias"] is None
    assert lm.model_id["embed_dim"] == lm.embed_dim == 64
    assert lm.model_id_str == f"{small.TINY}@random-init"
    x, texts = _probe_inputs(lm)
    assert x.shape == (4, 3, 32, 32)
    u, v = lm.encode_images(x), lm.encode_texts(texts)
    assert u.shape == v.shape == (4, 64)
    assert torch.allclose(u.norm(dim=1), torch.ones(4), atol=1e-5)
    # random init is seeded: loading again gives the same weights (and the same id)
    lm2 = load_model(spec)
    assert torch.equal(lm2.encode_images(x), u)


def test_precision_is_fp32_on_cpu_and_spec_validation():
    assert load_model(ModelSpec(name=small.TINY, device="cpu", precision="bf16", workers=0)).precision == "fp32"
    for bad in (dict(device="tpu"), dict(precision="int8"), dict(batch_size=0), dict(workers=-1)):
        with pytest.raises(ModelLoadError):
            ModelSpec(name=small.TINY, **bad)
    with pytest.raises(ModelLoadError, match="not both"):
        ModelSpec(name="ViT-B-32", pretrained="openai", checkpoint="/x.pt")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load_model(ModelSpec(name=small.TINY, device="cuda"))


def test_unknown_model_name_lists_close_matches():
    with pytest.raises(ModelLoadError) as e:
        load_model(ModelSpec(name="ViT-B-31", device="cpu"))
    msg = str(e.value)
    assert "ViT-B-31" in msg and "ViT-B-32" in msg and "list_models" in msg


def test_unknown_pretrained_tag_lists_known_tags():
    with pytest.raises(ModelLoadError) as e:
        load_model(ModelSpec(name="ViT-B-32", pretrained="no_such_tag", device="cpu"))
    msg = str(e.value)
    assert "no_such_tag" in msg and "laion2b_s34b_b79k" in msg


def test_hub_tag_not_in_cache_fails_at_once(monkeypatch, tmp_path):
    # The real call into open_clip / huggingface_hub with an empty hub cache; HF_HUB_OFFLINE unset, so the load
    # runs offline (never reaching a hub) and fails at once instead of retrying.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError) as e:
        load_model(ModelSpec(name="ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu"))
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "ViT-B-32" in msg and "laion2b_s34b_b79k" in msg
    assert "cannot be downloaded" in msg and "checkpoint=" in msg and "cache" in msg
    assert "HF_HUB_OFFLINE=0" in msg  # what to do to allow the download
    assert isinstance(e.value.__cause__, Exception)  # the real open_clip error is chained


def test_checkpoint_roundtrip_same_outputs(trained20):
    res = trained20
    assert res.checkpoint_path.is_file() and (res.checkpoint_dir / "open_clip_config.json").is_file()
    assert len(res.curves["loss"]) == 20
    lm = load_model(ModelSpec(name=small.TINY, checkpoint=str(res.checkpoint_path), device="cpu", workers=0))
    assert lm.model_id_str == res.model_id_str
    assert lm.model_id_str.startswith(f"{small.TINY}@sha256:")
    assert lm.model_id["logit_scale"] == pytest.approx(res.curves["logit_scale"][-1], rel=1e-5)
    x, texts = _probe_inputs(lm)
    assert torch.equal(lm.encode_images(x), res.loaded.encode_images(x))
    assert torch.equal(lm.encode_texts(texts), res.loaded.encode_texts(texts))
    # the folder works too, and so does open_clip's own local-dir loader (hub format)
    lm_dir = load_model(ModelSpec(name="anything", checkpoint=str(res.checkpoint_dir), device="cpu"))
    assert torch.equal(lm_dir.encode_images(x), lm.encode_images(x))
    m = open_clip.create_model(f"local-dir:{res.checkpoint_dir}").eval()
    with torch.no_grad():
        assert torch.allclose(torch.nn.functional.normalize(m.encode_image(x), dim=-1), lm.encode_images(x), atol=1e-6)


def test_corrupt_missing_and_unsafe_checkpoints(trained20, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(trained20.checkpoint_dir, bad)
    weights = bad / trained20.checkpoint_path.name
    blob = weights.read_bytes()

    weights.write_bytes(blob[: len(blob) // 2])  # truncated
    with pytest.raises(ModelLoadError, match="corrupt") as e:
        load_model(ModelSpec(name=small.TINY, checkpoint=str(weights), device="cpu"))
    assert str(weights) in str(e.value)

    weights.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_model(ModelSpec(name=small.TINY, checkpoint=str(weights), device="cpu"))

    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(ModelSpec(name=small.TINY, checkpoint=str(tmp_path / "nope.pt"), device="cpu"))

    # arbitrary pickled objects are refused (weights_only=True)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "evil": _Evil()}, weights)
    with pytest.raises(ModelLoadError, match="corrupt|arbitrary"):
        load_model(ModelSpec(name=small.TINY, checkpoint=str(weights), device="cpu"))

    # a valid state_dict of another architecture
    other = tmp_path / "other.pt"
    torch.save(load_model(ModelSpec(name=small.SMALL, device="cpu")).model.state_dict(), other)
    with pytest.raises(ModelLoadError, match="does not match"):
        load_model(ModelSpec(name=small.TINY, checkpoint=str(other), device="cpu"))


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_logit_scale_recorded_matches_model(trained20):
    a = float(trained20.loaded.model.logit_scale.exp())
    assert trained20.model_id["logit_scale"] == pytest.approx(a)
    assert math.isfinite(a) and 1.0 <= a <= 100.0


def test_hub_offline_policy_respects_the_users_setting(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with hub_offline() as offline:  # not set by the user: offline during the load
        assert offline and constants.HF_HUB_OFFLINE is True
    assert constants.HF_HUB_OFFLINE is False  # restored
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user allows downloads
    with hub_offline() as offline:
        assert not offline and constants.HF_HUB_OFFLINE is False
