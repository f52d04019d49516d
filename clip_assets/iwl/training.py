"""Train the weighted/unweighted model pair for every seed, record them in one manifest, check they reload."""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from matplotlib.figure import Figure  # no pyplot: no global backend state

from clip_assets.models import iwl_train as iw
from clip_assets.models.train import TrainConfig


@dataclass
class TrainedPairs:
    """Every seed's (iwl, baseline) pair, the pool they trained on, where they live, and the time taken."""

    pool: iw.TrainingPool
    pairs: list
    root: Path
    seconds: float
    manifest: dict


def _manifest(pool, pairs: list, normalise: str, train_config: dict, seconds: float) -> dict:
    def entry(res) -> dict:
        return {"checkpoint": str(res.checkpoint_path), "model_id": res.model_id_str,
                "train_seconds": res.metrics["train_seconds"]}

    return {
        "prompt": pool.prompt, "drops": pool.drops, "pairs": pool.n, "left_out": pool.left_out,
        "uids_sha256": pool.uid_fingerprint(), "reference_model_id": pool.reference_model_id,
        "a_prime": pool.a_prime, "b_prime": pool.b_prime, "normalise": normalise, "train_config": train_config,
        "seeds": {str(pr.seed): {"iwl_model": entry(pr.iwl), "baseline_model": entry(pr.baseline)} for pr in pairs},
        "weights": pairs[0].weights, "seconds": seconds,
    }


def train_pairs(home: Path, seeds: Sequence[int], train_config: Callable[[int], TrainConfig], normalise: str,
                prompt: str | None = None, drops: Sequence[str] | None = None,
                log: Callable[[str], None] = lambda s: None) -> TrainedPairs:
    """One iwl/baseline pair per seed on the drops' weighted pool; writes ``<home>/models/iwl/manifest.json``.
    A pool that cannot be built (no weights, unknown prompt) raises ValueError."""
    pool = iw.load_training_pool(home, prompt=prompt, drops=list(drops) if drops else None)
    root = iw.iwl_root(home)
    world = iw.synthetic_world(home)  # only for train_contrastive's built-in sanity accuracy
    t0 = time.perf_counter()
    pairs = [iw.train_pair(pool, train_config(seed), root, normalise=normalise, log=log, world=world)
             for seed in seeds]
    seconds = time.perf_counter() - t0
    config = {k: v for k, v in train_config(0).to_dict().items() if k != "seed"}
    manifest = _manifest(pool, pairs, normalise, config, seconds)
    iw.write_manifest(root, manifest)
    return TrainedPairs(pool, pairs, root, seconds, manifest)


def reload_problems(pairs: list, kind: str) -> list[str]:
    """Seeds whose ``kind`` ("iwl" / "baseline") checkpoint does not reload to the same model id, or whose
    training loss was not finite."""
    problems = []
    for pr in pairs:
        res = getattr(pr, kind)
        try:
            again = iw.load_checkpoint(res.checkpoint_dir)
            if again.model_id_str != res.model_id_str:
                problems.append(f"seed {pr.seed}: reloaded id {again.model_id_str} != {res.model_id_str}")
        except Exception as e:  # reported by the check, not raised: the asset itself was written
            problems.append(f"seed {pr.seed}: {type(e).__name__}: {e}")
        if not all(math.isfinite(x) for x in res.curves["loss"]):
            problems.append(f"seed {pr.seed}: non-finite training loss")
    return problems


def curves_png(pairs: list) -> bytes:
    """Training loss per step of both models of every seed, as PNG bytes."""
    fig = Figure(figsize=(6.5, 3.0), dpi=100)
    ax = fig.subplots()
    for pr in pairs:
        ax.plot(pr.baseline.curves["step"], pr.baseline.curves["loss"], color="tab:gray", lw=1,
                label="baseline" if pr is pairs[0] else None)
        ax.plot(pr.iwl.curves["step"], pr.iwl.curves["loss"], color="tab:red", lw=1,
                label="IWL (weighted loss)" if pr is pairs[0] else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
