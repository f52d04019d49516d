"""Checkpoints as users hold them (hub cache folders, local-dir folders, .safetensors files), a SigLIP model
through load -> embed -> NCE score, and open_clip's random-init warning only where it is true. No network."""

from __future__ import annotations

import io
import json
import logging
import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from huggingface_hub import constants
from PIL import Image
from safetensors.torch import save_file

from clip_assets.core.scores import siglip_log_ratio
from clip_assets.models import small
from clip_assets.io.drops import index_drop
from clip_assets.models.embed import embed_drop
from clip_assets.models.loading import ModelLoadError, ModelSpec, file_sha256, load_model
from clip_assets.models.train import save_checkpoint
from clip_assets.world import write_drops


REPO = "clip-assets/tiny-test"
REV = "0123456789abcdef0123456789abcdef01234567"
RANDOM_INIT = "initialized randomly"


def _perturbed(name: str = small.TINY, seed: int = 1) -> torch.nn.Module:
    """A model whose weights differ from the seeded random init (so a load that silently fell back shows)."""
    model = load_model(ModelSpec(name=name, device="cpu", workers=0)).model
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    return model


def _plain_sd(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _config(name: str = small.TINY) -> dict:
    # what a hub repo of open_clip holds: model_cfg + preprocess_cfg, no model_name
    return {"model_cfg": small.small_config(name),
            "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}


@pytest.fixture(scope="module")
def reference():
    return _perturbed()


@pytest.fixture(scope="module")
def hub_cache(reference, tmp_path_factory):
    """A hub cache as huggingface_hub lays it out: blobs/, refs/main, snapshots/<rev>/ with links into blobs."""
    root = tmp_path_factory.mktemp("hub")
    repo = root / f"models--{REPO.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    snap = repo / "snapshots" / REV
    snap.mkdir(parents=True)
    sd = _plain_sd(reference)
    files = {"open_clip_config.json": lambda p: p.write_text(json.dumps(_config())),
             "open_clip_model.safetensors": lambda p: save_file(sd, str(p)),
             "open_clip_pytorch_model.bin": lambda p: torch.save(sd, p)}
    for name, write in files.items():
        blob = repo / "blobs" / f"blob-{name}"
        write(blob)
        os.symlink(os.path.relpath(blob, snap), snap / name)
    return root, repo, snap


def _probe_inputs(lm, n=4):
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]
    x = torch.stack([lm.preprocess(im) for im in imgs])
    return x, ["a photo of a circle", "an image", "a photo of something red", "a photo of a large blue cross"][:n]


def _assert_same(lm, reference):
    x, texts = _probe_inputs(lm)
    with torch.no_grad():
        u = torch.nn.functional.normalize(reference.encode_image(x), dim=-1)
        v = torch.nn.functional.normalize(reference.encode_text(lm.tokenizer(texts)), dim=-1)
    assert torch.allclose(lm.encode_images(x), u, atol=1e-6)
    assert torch.allclose(lm.encode_texts(texts), v, atol=1e-6)


def test_hub_cache_repo_and_snapshot_folders(hub_cache, reference):
    _, repo, snap = hub_cache
    sha = file_sha256(snap / "open_clip_model.safetensors")  # open_clip's preference over the .bin
    for folder in (repo, snap):
        lm = load_model(ModelSpec(name="whatever", checkpoint=str(folder), device="cpu", workers=0))
        _assert_same(lm, reference)
        assert lm.model_id["name"] == f"hf-hub:{REPO}" and lm.model_id["checkpoint_sha256"] == sha
        assert lm.model_id_str == f"hf-hub:{REPO}@sha256:{sha[:12]}"


def test_hf_hub_name_offline_from_the_cache(hub_cache, reference, monkeypatch):
    root, _, snap = hub_cache
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    lm = load_model(ModelSpec(name=f"hf-hub:{REPO}", device="cpu", workers=0))
    _assert_same(lm, reference)
    assert lm.model_id["checkpoint_sha256"] == file_sha256(snap / "open_clip_model.safetensors")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE=0") as e:
        load_model(ModelSpec(name="hf-hub:clip-assets/not-cached", device="cpu"))
    assert "hf-hub:clip-assets/not-cached" in str(e.value)


def test_local_dir_folders_and_safetensors_files(reference, tmp_path):
    sd = _plain_sd(reference)
    bin_dir = tmp_path / "bin"
    save_checkpoint(bin_dir, sd, {**_config(), "model_name": small.TINY})
    lm = load_model(ModelSpec(name=f"local-dir:{bin_dir}", device="cpu", workers=0))
    _assert_same(lm, reference)
    assert lm.model_id_str.startswith(f"{small.TINY}@sha256:")
    # a lone .safetensors file: the architecture comes from the name
    lone = tmp_path / "lone" / "weights.safetensors"
    lone.parent.mkdir()
    save_file(sd, str(lone))
    lm2 = load_model(ModelSpec(name=small.TINY, checkpoint=str(lone), device="cpu", workers=0))
    _assert_same(lm2, reference)
    assert lm2.model_id["checkpoint_sha256"] == file_sha256(lone)
    with pytest.raises(ModelLoadError, match="unknown open_clip model name"):
        load_model(ModelSpec(name="no-such-arch", checkpoint=str(lone), device="cpu"))


def test_random_init_warning_only_where_true(reference, tmp_path, caplog):
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, _plain_sd(reference), {**_config(), "model_name": small.TINY})
    with caplog.at_level(logging.WARNING):
        load_model(ModelSpec(name="x", checkpoint=str(folder), device="cpu", workers=0))
    assert not [r for r in caplog.records if RANDOM_INIT in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_model(ModelSpec(name=small.SMALL, device="cpu", workers=0))  # no weights: the warning is true
    assert [r for r in caplog.records if RANDOM_INIT in r.getMessage() and small.SMALL in r.getMessage()]
    assert not logging.getLogger().filters  # the filter is gone after the load


def test_siglip_model_loaded_embedded_and_scored(tmp_path):
    model = _perturbed(small.TINY_SIGMOID, seed=2)
    folder = tmp_path / "siglip"
    save_checkpoint(folder, _plain_sd(model), {**_config(small.TINY_SIGMOID), "model_name": small.TINY_SIGMOID})
    lm = load_model(ModelSpec(name="x", checkpoint=str(folder), device="cpu", workers=0, threads=1))
    b = float(model.logit_bias.detach().reshape(-1)[0])
    a = float(model.logit_scale.detach().exp().reshape(-1)[0])
    assert lm.model_id["logit_bias"] == pytest.approx(b) and abs(b + 10) < 0.1  # init_logit_bias -10, recorded
    assert lm.logit_scale == pytest.approx(a) and abs(a - 10) < 0.2  # init log 10

    (drop,) = write_drops(tmp_path / "landing", drops=1, pairs=40, seed=4, shard_size=40)
    (shard,) = index_drop(drop)
    res = embed_drop([shard], lm, tmp_path / "emb", workers=0, decode="pil")
    t = pq.read_table(res.files[0])
    u = np.asarray(t["image_emb"].combine_chunks().values.to_numpy(zero_copy_only=False), np.float64).reshape(40, -1)
    v = np.asarray(t["text_emb"].combine_chunks().values.to_numpy(zero_copy_only=False), np.float64).reshape(40, -1)
    tau = 39.0  # negatives per positive in a batch of 40 (the authors' N - 1)
    log_r = siglip_log_ratio(u, v, lm.logit_scale, lm.logit_bias, tau)
    # the model's own sigmoid logits on the diagonal, at full precision: a <u, v> + b
    x = torch.stack([lm.preprocess(_pil(p)) for p in _bytes(shard)])
    with torch.no_grad():
        out = lm.model(x, lm.tokenizer(shard.column("caption").to_pylist()))
    scale, bias = (out["logit_scale"], out["logit_bias"]) if isinstance(out, dict) else (out[2], out[3])
    feats = (out["image_features"], out["text_features"]) if isinstance(out, dict) else out[:2]
    logits = (scale * feats[0] @ feats[1].T + bias).double().diagonal().numpy()
    np.testing.assert_allclose(log_r, logits + math.log(tau), atol=0.05)  # float16 storage of u, v
    # NCE reading: sigmoid(log r - log tau) is the model's probability that the pair is positive
    p_model = torch.sigmoid(torch.from_numpy(logits)).numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-(log_r - math.log(tau)))), p_model, atol=0.02)


def _bytes(shard):
    out = []
    for path, off, size in zip(*(shard.column(c).to_pylist() for c in ("tar_path", "offset", "size"))):
        with open(path, "rb") as fh:
            fh.seek(off)
            out.append(fh.read(size))
    return out


def _pil(data: bytes):
    return Image.open(io.BytesIO(data)).convert("RGB")
