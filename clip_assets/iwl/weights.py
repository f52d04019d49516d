"""One drop's importance weights: w(x) = exp(a' <u_x, v_t*> + b') per target prompt, as a table, with the summary,
histogram and top examples an asset records."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure  # no pyplot: no global backend state

from clip_assets.core.iwl import ImportanceWeights
from clip_assets.core.iwl import importance_weights as compute_weights
from clip_assets.io.commit import stage_dir
from clip_assets.io.tables import read_embeddings, read_partition
from clip_assets.io.warehouse import partition_dir
from clip_assets.models.card import load_current_model

ASSET = "importance_weights"
WEIGHTS_SCHEMA = pa.schema(
    [
        pa.field("uid", pa.string()),
        pa.field("prompt", pa.string()),
        pa.field("log_weight", pa.float64()),  # a' <u_x, v_prompt> + b'
        pa.field("weight", pa.float64()),  # exp(log_weight - weight_shift)
        pa.field("weight_shift", pa.float64()),  # 0 unless exp(log_weight) would overflow float64
        pa.field("a_prime", pa.float64()),
        pa.field("b_prime", pa.float64()),
        pa.field("model_id", pa.string()),
    ]
)


class ModelMismatchError(ValueError):
    """The drop's embeddings were computed with another model than the current contrastive_model."""


@dataclass
class DropWeights:
    """What :func:`weigh_drop` wrote and measured."""

    drop: str
    table: pa.Table
    log_w: dict[str, np.ndarray]  # prompt -> (M,) log weights, in embeddings order
    summary: list[dict]  # one row per prompt: ess, ess_fraction, range, max/mean, shift
    uids: list[str]
    model_id: str
    seconds: float
    path: Path


def _prompt_table(uids: pa.ChunkedArray, prompt: str, res, a: float, b: float, model_id: str) -> pa.Table:
    m = len(uids)
    return pa.table({
        "uid": uids, "prompt": pa.array([prompt] * m, pa.string()),
        "log_weight": pa.array(res.log_weight, pa.float64()), "weight": pa.array(res.weight, pa.float64()),
        "weight_shift": pa.array(np.full(m, res.shift), pa.float64()),
        "a_prime": pa.array(np.full(m, a), pa.float64()), "b_prime": pa.array(np.full(m, b), pa.float64()),
        "model_id": pa.array([model_id] * m, pa.string()),
    }, schema=WEIGHTS_SCHEMA)


def _summary(prompt: str, res, m: int) -> dict:
    nan = float("nan")
    return {"prompt": prompt, "ess": round(res.ess, 1), "ess_fraction": round(res.ess_fraction, 4),
            "log_w_min": float(res.log_weight.min()) if m else nan,
            "log_w_max": float(res.log_weight.max()) if m else nan,
            "max_over_mean": float(res.weight.max() / res.weight.mean()) if m else nan, "shift": res.shift}


def check_model(drop: str, stored_model_ids, loaded) -> None:
    """ModelMismatchError unless the drop's embeddings were computed with the current contrastive_model."""
    stored = sorted(set(stored_model_ids))
    if stored and stored != [loaded.model_id_str]:
        raise ModelMismatchError(
            f"drop {drop!r}: embeddings were computed with {stored} but the current contrastive_model is "
            f"{loaded.model_id_str!r}; re-materialize embeddings for this drop first")


def commit_weights(drop: str, home: Path, uids: pa.ChunkedArray, weights: dict[str, ImportanceWeights],
                   a_prime: float, b_prime: float, model_id: str, t0: float) -> DropWeights:
    """The weights table of ``uids`` (embeddings order), one block of rows per prompt in ``weights``' order, and
    the per-prompt summary; ``warehouse/importance_weights/drop=<drop>/`` replaced as one commit. Every executor
    ends here."""
    m = len(uids)
    bad = {p: len(r.log_weight) for p, r in weights.items() if len(r.log_weight) != m}
    if bad:
        raise ValueError(f"drop {drop}: {m} uids but weights of other lengths {bad}")
    parts = [_prompt_table(uids, p, r, a_prime, b_prime, model_id) for p, r in weights.items()]
    summary = [_summary(p, r, m) for p, r in weights.items()]
    table = pa.concat_tables(parts)
    out_dir = partition_dir(ASSET, drop, home)
    with stage_dir(out_dir) as w:
        w.write_table("part-00000.parquet", table)
    return DropWeights(drop, table, {p: r.log_weight for p, r in weights.items()}, summary, uids.to_pylist(),
                       model_id, time.perf_counter() - t0, out_dir)


def weigh_drop(drop: str, home: Path, prompts: Sequence[str], a_prime: float, b_prime: float) -> DropWeights:
    """Weights of every stored image embedding of ``drop`` for each prompt, from the current contrastive_model;
    ``warehouse/importance_weights/drop=<drop>/`` is replaced as one commit."""
    t0 = time.perf_counter()
    emb, u, _ = read_embeddings(drop, home)  # u: (M, d) float32 (stored float16)
    loaded = load_current_model(home)
    check_model(drop, emb.column("model_id").unique().to_pylist(), loaded)
    v = loaded.encode_texts(list(prompts)).cpu().numpy()  # (P, d)
    weights = {prompt: compute_weights(u, v[p], a_prime, b_prime) for p, prompt in enumerate(prompts)}
    return commit_weights(drop, home, emb.column("uid"), weights, a_prime, b_prime, loaded.model_id_str, t0)


def top_examples(dw: DropWeights, home: Path, k: int = 10) -> list[dict]:
    """The ``k`` highest-weighted images of the first prompt, with their captions from raw_pairs."""
    lw0 = next(iter(dw.log_w.values()))
    raw = read_partition("raw_pairs", dw.drop, home, columns=["uid", "caption"])
    cap = dict(zip(raw.column("uid").to_pylist(), raw.column("caption").to_pylist()))
    rel = np.exp(lw0 - lw0.max())
    return [{"uid": dw.uids[i], "caption": cap.get(dw.uids[i], ""), "log_weight": float(lw0[i]),
             "w / mean w": float(rel[i] / rel.mean())} for i in np.argsort(-lw0, kind="stable")[:k]]


def weights_problems(drop: str, home: Path, expected_rows: int) -> dict:
    """Read back what readers will see: row count and weights that are not finite and > 0."""
    back = read_partition(ASSET, drop, home, columns=["weight", "log_weight"])
    wv = back.column("weight").to_numpy()
    lv = back.column("log_weight").to_numpy()
    n_bad = int((~np.isfinite(wv) | (wv <= 0) | ~np.isfinite(lv)).sum())
    return {"rows": back.num_rows, "expected_rows": expected_rows, "non_finite_or_non_positive": n_bad,
            "passed": bool(back.num_rows == expected_rows and n_bad == 0)}


def histogram(log_w_by_prompt: dict[str, np.ndarray], a_prime: float) -> Figure:
    """log w per prompt, one panel each, log-scaled counts."""
    k = len(log_w_by_prompt)
    fig = Figure(figsize=(4.2 * k, 3.0), dpi=100)
    axes = fig.subplots(1, k, squeeze=False)[0]
    for ax, (prompt, lw) in zip(axes, log_w_by_prompt.items()):
        ax.hist(lw, bins=50, color="tab:red", alpha=0.8)
        ax.set_yscale("log")
        ax.set_xlabel(f"log w = {a_prime:g} <u, v> + b'")
        ax.set_ylabel("images")
        ax.set_title(prompt if len(prompt) <= 40 else prompt[:37] + "...", fontsize=9)
    fig.tight_layout()
    return fig
