"""Importance Weight Learning (IWL, PAPER.md section 4): weights from one target prompt, the weighted CLIP loss.

Notation: u_x is the L2-normalised image embedding of a FROZEN reference CLIP, v* the L2-normalised embedding of
the one target prompt t* (e.g. "a photo of something red"). Under covariate shift toward the target domain the
importance weight of a training image is the density ratio

    w(x) = p(x | t*) / p(x)  ∝  exp(a' <u_x, v*> + b')                                        (1)

with a reduced scale a' (the authors use a' = 10 instead of the model's a ~ 100) and an optional bias b'.
The weighted contrastive loss over a batch of B pairs (image_j, text_j) with logits L = a u_i^T v_j is

    L_w = (1/B) sum_j w_j * 0.5 * (CE(L[j, :], j) + CE(L[:, j], j))                           (2)

and the weights are NOT normalised by their sum within the batch (as in the authors' code): with w = 1 it is
exactly open_clip's ``ClipLoss``. A constant factor on every weight (equivalently a change of b') scales the loss
and its gradients by that factor; training code that wants the unweighted loss's magnitude divides the weights of
the whole pool by their mean once (see :func:`normalise_to_mean`), which is a choice of b', not a per-batch
normalisation.

Numerics (decided and tested here):

* log weights are computed in float64 from float64 copies of the inputs (any input precision: float16,
  bfloat16, float32, float64), after re-normalising u and v* to unit length (half-precision storage leaves
  |u| = 1 +- 1e-3). So log w = a' cos + b' with cos in [-1, 1]: |log w| <= |a'| + |b'|.
* w = exp(log w - shift) where ``shift = max(0, max(log w) - SAFE_LOG_MAX)``, SAFE_LOG_MAX = 700 (float64
  overflows above exp(709.78)). For every configuration with |a'| + |b'| <= 700 -- the default a' = 10 gives
  w in [e^-10, e^10] ~ [4.5e-5, 2.2e4] -- the shift is 0 and w = exp(log w) exactly; otherwise the weights are
  rescaled by the recorded constant exp(-shift) (a change of b', harmless for relative weights, the ESS and
  any mean-normalised use). Weights below exp(-745) underflow to 0 (only possible when |a'| + |b'| > 372).
* the ESS, (sum w)^2 / sum w^2, is scale invariant and computed from w / max(w), so w^2 never overflows.
* :func:`weighted_clip_loss` computes the cross entropies in at least float32 (half-precision logits are
  promoted, as autocast does for ``F.cross_entropy``) and multiplies by the weights in that dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "SAFE_LOG_MAX",
    "ImportanceWeights",
    "log_importance_weights",
    "importance_weights",
    "weights_from_log",
    "effective_sample_size",
    "effective_sample_size_log",
    "normalise_to_mean",
    "weighted_clip_loss",
    "zero_shot_predict",
    "classification_report",
]

#: Largest log weight that is exponentiated without a shift: exp(700) ~ 1.0e304 < float64 max ~ 1.8e308.
SAFE_LOG_MAX: float = 700.0


def _as_f64(x, name: str) -> np.ndarray:
    """Any tensor/array (incl. float16/bfloat16 torch tensors) -> float64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int((~np.isfinite(arr)).reshape(arr.shape[0], -1).any(axis=1).sum()) if arr.ndim else 1
        raise ValueError(f"{name} has {bad} row(s) with non-finite values (NaN/inf); fix the embeddings upstream")
    return arr


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float64; all-zero rows stay zero (cosine 0 with anything)."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def log_importance_weights(u, v_prompt, a_prime: float = 10.0, b_prime: float = 0.0) -> np.ndarray:
    """log w(x_i) = a' <u_i, v*> + b'   (eq. 1), float64.

    Args:
        u: (M, d) image embeddings of the frozen reference model (any float dtype, numpy or torch).
        v_prompt: (d,) (or (1, d)) embedding of the target prompt.
        a_prime: reduced scale a' (default 10, the authors' value); b_prime: bias b'.
    Returns: (M,) float64, in [-|a'| + b', |a'| + b'] since both sides are re-normalised to unit length.
    """
    if not (math.isfinite(float(a_prime)) and math.isfinite(float(b_prime))):
        raise ValueError(f"a_prime and b_prime must be finite numbers, got a'={a_prime!r}, b'={b_prime!r}")
    uu = _as_f64(u, "u")
    vv = _as_f64(v_prompt, "v_prompt")
    if uu.ndim != 2:
        raise ValueError(f"u must be (M, d), got shape {uu.shape}")
    vv = vv.reshape(-1)
    if vv.shape[0] != uu.shape[1]:
        raise ValueError(f"v_prompt has dimension {vv.shape[0]} but u has {uu.shape[1]}")
    cos = _unit(uu) @ _unit(vv[None, :])[0]  # (M, d) @ (d,) -> (M,)
    return float(a_prime) * np.clip(cos, -1.0, 1.0) + float(b_prime)


@dataclass(frozen=True)
class ImportanceWeights:
    """Weights of eq. (1) for M images: ``weight = exp(log_weight - shift)`` (shift = 0 unless it would overflow)."""

    log_weight: np.ndarray  # (M,) float64, a' <u, v*> + b' (unshifted)
    weight: np.ndarray  # (M,) float64, finite, >= 0
    shift: float  # subtracted from log_weight before exp; 0.0 whenever max(log_weight) <= SAFE_LOG_MAX

    @property
    def ess(self) -> float:
        return effective_sample_size_log(self.log_weight)

    @property
    def ess_fraction(self) -> float:
        n = len(self.log_weight)
        return self.ess / n if n else 0.0


def importance_weights(u, v_prompt, a_prime: float = 10.0, b_prime: float = 0.0) -> ImportanceWeights:
    """w = exp(a' <u, v*> + b') computed in float64 with no overflow (see the module doc for the range)."""
    return weights_from_log(log_importance_weights(u, v_prompt, a_prime, b_prime))


def weights_from_log(log_weight) -> ImportanceWeights:
    """The weights of (M,) log weights of one pool: w = exp(log w - shift), with the one shift of the whole pool
    (the module doc). Log weights are row-wise, the shift is not: a distributed executor computes log weights per
    block and calls this once on all of them, so its weights equal the in-process ones."""
    lw = np.asarray(log_weight, dtype=np.float64).reshape(-1)
    shift = max(0.0, float(lw.max()) - SAFE_LOG_MAX) if lw.size else 0.0
    return ImportanceWeights(log_weight=lw, weight=np.exp(lw - shift), shift=shift)


def effective_sample_size(w) -> float:
    """ESS = (sum_i w_i)^2 / sum_i w_i^2 in [1, M] for non-negative weights (0 when all are 0 or M = 0).

    Scale invariant; computed from w / max(w) in float64 so that w^2 cannot overflow."""
    ww = _as_f64(w, "w").reshape(-1)
    if ww.size == 0:
        return 0.0
    if np.any(ww < 0):
        raise ValueError("importance weights must be non-negative")
    m = ww.max()
    if m <= 0:
        return 0.0
    r = ww / m
    return float(r.sum() ** 2 / (r * r).sum())


def effective_sample_size_log(log_w) -> float:
    """ESS from log weights: with r_i = exp(log w_i - max_j log w_j), ESS = (sum r)^2 / sum r^2."""
    lw = _as_f64(log_w, "log_w").reshape(-1)
    if lw.size == 0:
        return 0.0
    r = np.exp(lw - lw.max())
    return float(r.sum() ** 2 / (r * r).sum())


def normalise_to_mean(log_w) -> tuple[np.ndarray, float]:
    """Weights divided by their mean over the whole pool: w_i / mean(w) = exp(log w_i - c), c = log mean(w).

    Returns (weights with mean 1 in float64, c). Equivalent to choosing b' <- b' - c; computed with logsumexp so it
    never overflows. Used once per training pool, never per batch (the loss itself does not normalise)."""
    lw = _as_f64(log_w, "log_w").reshape(-1)
    if lw.size == 0:
        return lw.copy(), 0.0
    m = lw.max()
    c = float(m + np.log(np.exp(lw - m).mean()))
    return np.exp(lw - c), c


def weighted_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_w = (1/B) sum_j w_j * 0.5 * (CE(image_j -> text_j) + CE(text_j -> image_j))   (eq. 2).

    Args:
        image_features, text_features: (B, d) L2-normalised features (any float dtype).
        logit_scale: a = exp(logit_scale) as open_clip's model output gives it (a scalar tensor or float).
        weights: (B,) per-pair weights (no gradient flows into them), or None for all ones (= open_clip ClipLoss).
    Returns: the scalar loss, in float32 for half-precision inputs (else the features' dtype).
    """
    if image_features.ndim != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            f"image_features and text_features must both be (B, d), got {tuple(image_features.shape)} and "
            f"{tuple(text_features.shape)}"
        )
    b = image_features.shape[0]
    logits_per_image = logit_scale * image_features @ text_features.T  # (B, d) @ (d, B) -> (B, B)
    logits_per_text = logit_scale * text_features @ image_features.T  # (B, B)
    if logits_per_image.dtype in (torch.float16, torch.bfloat16):
        logits_per_image, logits_per_text = logits_per_image.float(), logits_per_text.float()
    labels = torch.arange(b, device=image_features.device)
    per_pair = 0.5 * (
        F.cross_entropy(logits_per_image, labels, reduction="none")
        + F.cross_entropy(logits_per_text, labels, reduction="none")
    )  # (B,)
    if weights is None:
        return per_pair.mean()
    w = torch.as_tensor(weights).detach().to(device=per_pair.device, dtype=per_pair.dtype).reshape(-1)
    if w.shape[0] != b:
        raise ValueError(f"weights has {w.shape[0]} entries for a batch of {b} pairs")
    return (w * per_pair).mean()


def zero_shot_predict(image_emb, class_text_emb) -> np.ndarray:
    """argmax_c <u_i, v_c> for (n, d) image and (C, d) class-prompt embeddings -> (n,) int64 predictions."""
    u = _as_f64(image_emb, "image_emb")
    v = _as_f64(class_text_emb, "class_text_emb")
    return np.argmax(u @ v.T, axis=1).astype(np.int64)  # (n, d) @ (d, C) -> (n, C)


def classification_report(y_true, y_pred, class_names: Sequence[str]) -> dict:
    """Accuracy, macro F1 and per-class precision/recall/F1/support for labels 0..C-1.

    F1_c = 2 P_c R_c / (P_c + R_c) (0 when P_c + R_c = 0; a class never predicted has P_c = 0). Macro F1 averages
    F1_c over the classes present in ``y_true`` or ``y_pred`` (scikit-learn's ``f1_score(average="macro")``
    with ``zero_division=0``), so a class absent from the evaluation set does not count as a zero.
    """
    yt = np.asarray(y_true, dtype=np.int64).reshape(-1)
    yp = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    c = len(class_names)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred differ in length: {yt.shape[0]} vs {yp.shape[0]}")
    if yt.size and (yt.min() < 0 or yt.max() >= c or yp.min() < 0 or yp.max() >= c):
        raise ValueError(f"labels must be in [0, {c}) for {c} class names")
    conf = np.zeros((c, c), dtype=np.int64)  # rows: true, columns: predicted
    np.add.at(conf, (yt, yp), 1)
    tp = np.diag(conf).astype(np.float64)
    support = conf.sum(axis=1)
    predicted = conf.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(c), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(c), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(c), where=denom > 0)
    present = (support > 0) | (predicted > 0)
    per_class = [
        {"class": class_names[i], "support": int(support[i]), "precision": float(precision[i]),
         "recall": float(recall[i]), "f1": float(f1[i])}
        for i in range(c)
    ]
    return {
        "n": int(yt.size),
        "accuracy": float((yt == yp).mean()) if yt.size else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": per_class,
        "confusion": conf.tolist(),
    }
