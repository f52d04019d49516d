"""Pair scores and log density ratios of a CLIP-style model (PAPER.md section 1).

u: L2-normalised image embeddings, v: L2-normalised text embeddings, a = exp(logit_scale), b = logit_bias
(SigLIP); a and b are always passed in, read from the model. All results are float64 arrays (M,).

    clip_score(x, y) = <u_x, v_y> / (||u_x|| ||v_y||)                      (cosine; DataComp's "CLIP score")
    s(x, y)          = a <u_x, v_y>
    log r_img(x, y)  = s(x, y) - logsumexp_j s(x, t_j) + log N   (image-conditioned; t_j ~ p(y), N texts)
                     ~= log p(y|x)/p(y)
    log r_txt(x, y)  = s(x, y) - logsumexp_j s(i_j, y) + log N   (text-conditioned; i_j ~ p(x), N images)
                     ~= log p(x|y)/p(x)
    siglip:  log r(x, y) = s(x, y) + b + log tau                  (NCE reading, tau = negatives per positive)

Any constant added to every s cancels in r_img and r_txt (so the SigLIP bias does too). The logsumexp terms
come from the chunked engine `core.kl.kl_against_reference`, whose ONE pass also yields D_KL / D_KLR; pass its
result as `stats=` to reuse it rather than scoring the reference set twice.
"""

from __future__ import annotations

import math

import numpy as np

from clip_assets.core.kl import DEFAULT_BUDGET_ELEMS, _check_2d, _check_scale, kl_against_reference

__all__ = [
    "clip_score",
    "pair_scores",
    "log_ratio_from_stats",
    "log_ratio_image_conditioned",
    "log_ratio_text_conditioned",
    "siglip_log_ratio",
    "pair_statistics",
]

_CHUNK = 65536


def _check_pairs(u, v) -> tuple[np.ndarray, np.ndarray]:
    U = _check_2d("u", u)
    V = _check_2d("v", v)
    if U.shape != V.shape:
        raise ValueError(f"paired rows need equal shapes, got u {U.shape} and v {V.shape}")
    return U, V


def _rowdot(U: np.ndarray, V: np.ndarray) -> np.ndarray:
    """<u_i, v_i> in float64, streamed over row chunks (inputs may be float16)."""
    out = np.empty(U.shape[0])
    for i in range(0, U.shape[0], _CHUNK):
        out[i:i + _CHUNK] = np.einsum(
            "ij,ij->i", U[i:i + _CHUNK].astype(np.float64), V[i:i + _CHUNK].astype(np.float64)
        )  # (m, d) . (m, d) -> (m,)
    return out


def clip_score(u, v) -> np.ndarray:
    """Row-wise cosine <u_i, v_i> / (||u_i|| ||v_i||) of paired rows (M, d) -> (M,), float64.

    Normalises explicitly, so float16-stored (slightly non-unit) embeddings give the true cosine. A zero row
    gives NaN.
    """
    U, V = _check_pairs(u, v)
    nu = np.sqrt(_rowdot(U, U))
    nv = np.sqrt(_rowdot(V, V))
    with np.errstate(divide="ignore", invalid="ignore"):
        return _rowdot(U, V) / (nu * nv)


def pair_scores(u, v, a: float) -> np.ndarray:
    """s_i = a <u_i, v_i> of paired rows (M, d) -> (M,), float64. Embeddings used as given (not renormalised),
    consistently with the reference-set scores of `core.kl`."""
    U, V = _check_pairs(u, v)
    return _check_scale(a) * _rowdot(U, V)


def log_ratio_from_stats(s_pair, lse, n_ref: int) -> np.ndarray:
    """log r = s_pair - lse + log N, given the conditioning side's lse = logsumexp_j s_j over N references."""
    if int(n_ref) < 1:
        raise ValueError(f"n_ref must be >= 1, got {n_ref}")
    return np.asarray(s_pair, dtype=np.float64) - np.asarray(lse, dtype=np.float64) + math.log(int(n_ref))


def _lse(targets, refs, a, stats, budget_elems, dtype) -> np.ndarray:
    if stats is None:
        stats = kl_against_reference(targets, refs, a, budget_elems=budget_elems, dtype=dtype)
    lse = np.asarray(stats["lse"], dtype=np.float64)
    if lse.shape != (np.shape(targets)[0],):
        raise ValueError(f"stats['lse'] has shape {lse.shape}, expected ({np.shape(targets)[0]},)")
    return lse


def log_ratio_image_conditioned(
    u, v, ref_texts, a: float, *, budget_elems: int = DEFAULT_BUDGET_ELEMS, dtype=np.float64,
    stats: dict | None = None,
) -> np.ndarray:
    """log r_img(x_i, y_i) = s(x_i, y_i) - logsumexp_j a<u_i, t_j> + log N  ~= log p(y|x)/p(y), (M,) float64.

    u (M, d) images, v (M, d) their paired texts, ref_texts (N, d) ~ p(y). `stats`: the result of
    kl_against_reference(u, ref_texts, a) if already computed (its "lse" is reused; ref_texts then only gives N).
    """
    U, V = _check_pairs(u, v)
    R = _check_2d("ref_texts", ref_texts)
    lse = _lse(U, R, a, stats, budget_elems, dtype)
    return log_ratio_from_stats(pair_scores(U, V, a), lse, R.shape[0])


def log_ratio_text_conditioned(
    u, v, ref_images, a: float, *, budget_elems: int = DEFAULT_BUDGET_ELEMS, dtype=np.float64,
    stats: dict | None = None,
) -> np.ndarray:
    """log r_txt(x_i, y_i) = s(x_i, y_i) - logsumexp_j a<i_j, v_i> + log N  ~= log p(x|y)/p(x), (M,) float64.

    u (M, d) images, v (M, d) their paired texts, ref_images (N, d) ~ p(x). `stats`: the result of
    kl_against_reference(v, ref_images, a) if already computed.
    """
    U, V = _check_pairs(u, v)
    R = _check_2d("ref_images", ref_images)
    lse = _lse(V, R, a, stats, budget_elems, dtype)
    return log_ratio_from_stats(pair_scores(U, V, a), lse, R.shape[0])


def siglip_log_ratio(u, v, a: float, b: float, tau: float) -> np.ndarray:
    """SigLIP read as NCE: log r(x_i, y_i) = a <u_i, v_i> + b + log tau, (M,) float64, no normaliser.

    tau = ratio of negatives to positives in training (the authors' code uses N - 1 for a batch of N).
    """
    tau = float(tau)
    if not tau > 0 or not math.isfinite(tau):
        raise ValueError(f"tau (negatives per positive) must be finite and > 0, got {tau!r}")
    b = float(b)
    if not math.isfinite(b):
        raise ValueError(f"the logit bias b must be finite, got {b!r}")
    return pair_scores(u, v, a) + b + math.log(tau)


def pair_statistics(
    u, v, ref_texts, ref_images, a: float, *, budget_elems: int = DEFAULT_BUDGET_ELEMS, dtype=np.float64,
) -> dict[str, np.ndarray]:
    """Everything per pair from two engine passes (images vs ref_texts, texts vs ref_images), float64 (M,):

    clip_score, s, log_r_img, log_r_txt, kl_img, klr_img (image-side D_KL / D_KLR = KL(p(y|x)||p(y)) and
    reverse), kl_txt, klr_txt (text side: KL(p(x|y)||p(x)) and reverse).
    """
    U, V = _check_pairs(u, v)
    RT = _check_2d("ref_texts", ref_texts)
    RI = _check_2d("ref_images", ref_images)
    img = kl_against_reference(U, RT, a, budget_elems=budget_elems, dtype=dtype)
    txt = kl_against_reference(V, RI, a, budget_elems=budget_elems, dtype=dtype)
    s = pair_scores(U, V, a)
    return {
        "clip_score": clip_score(U, V),
        "s": s,
        "log_r_img": log_ratio_from_stats(s, img["lse"], RT.shape[0]),
        "log_r_txt": log_ratio_from_stats(s, txt["lse"], RI.shape[0]),
        "kl_img": img["d_kl"],
        "klr_img": img["d_klr"],
        "kl_txt": txt["d_kl"],
        "klr_txt": txt["d_klr"],
    }
