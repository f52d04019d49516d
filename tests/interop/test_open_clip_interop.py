"""open_clip's own tools around the chain, no network.

One module-scoped run feeds every test here:
1. open_clip's trainer (``open_clip_train.main --siglip``) trains the project's sigmoid model
   (clip-assets-tiny-sigmoid) for a few steps on a synthetic landing drop: a sigmoid-loss checkpoint as its
   users hold them (``epoch_1.pt``, a dict with ``state_dict``);
2. the Dagster chain (raw_pairs -> contrastive_model from that checkpoint -> embeddings -> reference_set ->
   pair_scores/kl_stats with siglip_tau -> curated_subsets with a filter on the NCE column);
3. the NCE subset exported as a webdataset, and open_clip's trainer run on the export with clip-assets-tiny,
   recording every sample its data pipeline reads (tests/interop/trainer_probe.py).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from clip_assets.cli import materialize
from clip_assets.core.scores import siglip_log_ratio
from clip_assets.io.exports import decisions_path, export_subset, subsets_dir
from clip_assets.io.tables import read_embeddings, read_partition
from clip_assets.models.card import read_card
from clip_assets.models.loading import ModelSpec, file_sha256, load_model
from clip_assets.models.small import TINY, TINY_SIGMOID
from clip_assets.world import write_drops

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("trainer_probe.py")
PAIRS, SIGLIP_BATCH = 120, 20
TAU = SIGLIP_BATCH - 1  # negatives per positive in one SigLIP batch (the authors' N - 1)
EXPORT_BATCH, EXPORT_SHARD = 8, 16
KEEP = 0.5
CHAIN = ("key:raw_pairs or key:rejected_pairs or key:contrastive_model or key:embeddings or key:reference_set "
         "or key:pair_scores or key:kl_stats or key:curated_subsets")
FILTERS = f"""filters:
  - name: nce
    column: log_r_siglip
    keep_fraction: {KEEP}
    description: top half by the exact NCE reading log r = s + b + log tau
  - name: everything
    keep: all
"""
TRAIN_LINE = re.compile(r"Train Epoch: 0 \[\s*(\d+)/(\d+) \((\d+)%\)\].*Loss: ([0-9.naninf]+)")


def _train(logs: Path, name: str, data: str, samples: int, model: str, batch: int, *extra: str,
           seen: Path | None = None) -> dict:
    """One open_clip trainer run (1 epoch, CPU, fp32, no loggers) in a subprocess; its log lines and checkpoint."""
    args = ["--dataset-type", "webdataset", "--train-data", data, "--train-num-samples", str(samples),
            "--model", model, "--pretrained", "", "--device", "cpu", "--precision", "fp32", "--workers", "0",
            "--batch-size", str(batch), "--epochs", "1", "--warmup", "1", "--seed", "0", "--report-to", "",
            "--log-every-n-steps", "1", "--logs", str(logs), "--name", name, *extra]
    cmd = [sys.executable, str(PROBE), str(seen), *args] if seen else [
        sys.executable, "-m", "clip_assets.models.open_clip_trainer", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (logs / name / "out.log").read_text()
    return {"steps": [m.groups() for m in TRAIN_LINE.finditer(log)],
            "checkpoint": logs / name / "checkpoints" / "epoch_1.pt"}


def _shards(folder: Path) -> str:
    """The tars of a folder as the brace pattern users pass to --train-data."""
    ids = sorted(p.stem for p in folder.glob("*.tar"))
    return str(folder / f"{{{ids[0]}..{ids[-1]}}}.tar") if len(ids) > 1 else str(folder / f"{ids[0]}.tar")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("interop")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIP_ASSETS_HOME", str(home))
        mp.setenv("DAGSTER_HOME", str(root / "dagster"))
        (root / "dagster").mkdir()
        (root / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        (drop,) = write_drops(home / "landing", drops=1, pairs=PAIRS, seed=5, shard_size=PAIRS // 2)
        siglip = _train(root / "logs", "siglip", _shards(drop), PAIRS, TINY_SIGMOID, SIGLIP_BATCH, "--siglip")
        (root / "filters.yaml").write_text(FILTERS)
        run_config = {"ops": {
            "contrastive_model": {"config": {"source": "checkpoint", "name": TINY_SIGMOID,
                                             "checkpoint": str(siglip["checkpoint"]), "device": "cpu",
                                             "precision": "fp32", "workers": 0}},
            "reference_set": {"config": {"n": 100}},
            "scores": {"config": {"siglip_tau": float(TAU)}},
            "curated_subsets": {"config": {"filters_path": str(root / "filters.yaml")}},
        }}
        materialize(CHAIN, None, all_drops=True, run_config=run_config, log=lambda s: None)
        export = export_subset("nce", "webdataset", root / "exports", home=home, samples_per_shard=EXPORT_SHARD)
        seen = root / "seen.jsonl"
        tiny = _train(root / "logs", "export", _shards(export.path), export.rows, TINY, EXPORT_BATCH, seen=seen)
        yield {"home": home, "drop": drop.name, "siglip": siglip, "export": export, "tiny": tiny,
               "seen": [json.loads(line) for line in seen.read_text().splitlines()]}


def test_sigmoid_checkpoint_from_open_clips_trainer_is_the_chains_model(run):
    steps = run["siglip"]["steps"]
    assert [int(s[0]) for s in steps] == [SIGLIP_BATCH * (i + 1) for i in range(PAIRS // SIGLIP_BATCH)]
    assert all(math.isfinite(float(s[3])) for s in steps)
    ckpt = run["siglip"]["checkpoint"]
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    card = read_card(run["home"])
    assert card["model_id_str"] == f"{TINY_SIGMOID}@sha256:{file_sha256(ckpt)[:12]}"
    # a and b are the trained checkpoint's (the sigmoid loss moved b off its init of -10)
    assert card["model_id"]["logit_scale"] == pytest.approx(float(sd["logit_scale"].exp()), rel=1e-6)
    assert card["model_id"]["logit_bias"] == pytest.approx(float(sd["logit_bias"]), rel=1e-6)
    assert card["model_id"]["logit_bias"] != pytest.approx(-10.0, abs=1e-5)


def test_nce_columns_are_s_plus_b_plus_log_tau_from_the_stored_embeddings(run):
    home, drop = run["home"], run["drop"]
    emb, u, v = read_embeddings(drop, home, dtype=np.float64)
    scores = read_partition("pair_scores", drop, home)
    assert scores["uid"].to_pylist() == emb["uid"].to_pylist()
    card = read_card(home)
    a, b = card["model_id"]["logit_scale"], card["model_id"]["logit_bias"]
    nce = np.asarray(scores["log_r_siglip"].to_pylist(), dtype=np.float64)
    assert scores.num_rows == len(read_partition("raw_pairs", drop, home, columns=["uid"])) > 0
    np.testing.assert_allclose(nce, a * np.einsum("md,md->m", u, v) + b + math.log(TAU), rtol=0, atol=1e-9)
    np.testing.assert_allclose(nce, siglip_log_ratio(u, v, a, b, TAU), rtol=0, atol=1e-9)
    np.testing.assert_allclose(nce, scores["s"].to_numpy() + b + math.log(TAU), rtol=0, atol=1e-9)
    # the self-normalised readings are still there, and every row names this model
    assert np.isfinite(scores["log_r_img"].to_numpy()).all() and np.isfinite(scores["log_r_txt"].to_numpy()).all()
    assert set(scores["model_id"].to_pylist()) == {card["model_id_str"]}


def test_curated_subset_keeps_the_top_fraction_by_the_nce_column(run):
    home, drop = run["home"], run["drop"]
    scores = read_partition("pair_scores", drop, home, columns=["uid", "log_r_siglip"]).to_pydict()
    values = np.asarray(scores["log_r_siglip"])
    k = math.floor(KEEP * len(values))
    threshold = np.sort(values)[::-1][k - 1]
    expected = sorted(u for u, x in zip(scores["uid"], values) if x >= threshold)
    decisions = pq.read_table(decisions_path("nce", subsets_dir(home))).to_pydict()
    assert sorted(u for u, keep in zip(decisions["uid"], decisions["keep"]) if keep) == expected
    assert run["export"].rows == len(expected) >= k


def test_open_clips_trainer_reads_every_exported_sample(run):
    export = run["export"]
    exported = {}
    for sidecar in sorted(export.path.glob("*.parquet")):
        for row in pq.read_table(sidecar, columns=["key", "sha256", "caption"]).to_pylist():
            exported[row["key"]] = row
    assert len(exported) == export.rows and export.shards == math.ceil(export.rows / EXPORT_SHARD) > 1
    seen = run["seen"]
    counts = Counter(s["key"] for s in seen)
    assert set(counts) == set(exported)  # every exported sample read, nothing else
    for s in seen:  # the bytes and caption the trainer got are the exported ones
        assert (s["sha256"], s["caption"]) == (exported[s["key"]]["sha256"], exported[s["key"]]["caption"])
        assert Path(s["url"]).parent == export.path
    # it trained on them: ceil(N / B) full batches (open_clip repeats a few samples to fill the last one)
    batches = math.ceil(export.rows / EXPORT_BATCH)
    steps = run["tiny"]["steps"]
    assert [int(s[0]) for s in steps] == [EXPORT_BATCH * (i + 1) for i in range(batches)]
    assert all(math.isfinite(float(s[3])) for s in steps)
    assert len(seen) >= export.rows


def test_the_trainers_checkpoint_loads_as_one_of_our_models(run):
    lm = load_model(ModelSpec(name=TINY, checkpoint=str(run["tiny"]["checkpoint"]), device="cpu", workers=0))
    assert lm.model_id_str == f"{TINY}@sha256:{file_sha256(run['tiny']['checkpoint'])[:12]}"
    assert lm.logit_bias is None and lm.embed_dim == 64
