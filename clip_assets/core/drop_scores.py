"""Every per-pair score and per-sample KL statistic of a batch of pairs against one reference set.

For pairs (u_i, v_i), reference images I (N, d) and reference texts T (N, d), a = exp(logit_scale):

    clip_score_i = <u_i, v_i> / (|u_i| |v_i|);      s_i = a <u_i, v_i>
    log_r_img_i  = s_i - logsumexp_j a <u_i, t_j> + log N     (image-conditioned, self-normalised over T)
    log_r_txt_i  = s_i - logsumexp_j a <i_j, v_i> + log N     (text-conditioned, self-normalised over I)
    image side   D_KL, D_KLR of u_i against T;  D_C, D_W with mean of I and covariance of T
    text side    D_KL, D_KLR of v_i against I;  D_C, D_W with mean of T and covariance of I
    log_r_siglip = s_i + b + log tau     (SigLIP's exact NCE reading; only with a logit bias b and a given tau,
                                          the training ratio of negatives to positives, e.g. batch size - 1)

Second-order forms carry the 1/2 of the exponential-family expansion (``second_order_stats(half=True)``); the
tests show that this constant, not the authors' 1, matches the exact D_KL as u approaches the mean.
"""

from __future__ import annotations

import numpy as np

from clip_assets.core.kl import DEFAULT_BUDGET_ELEMS, second_order_stats
from clip_assets.core.scores import pair_statistics, siglip_log_ratio


def drop_statistics(
    u, v, ref_images, ref_texts, image_mean, text_mean, image_cov, text_cov, a: float, *,
    b: float | None = None, tau: float | None = None, budget_elems: int = DEFAULT_BUDGET_ELEMS,
    dtype=np.float64,
) -> dict[str, np.ndarray]:
    """All statistics above as float64 arrays of shape (M,), keyed by their warehouse column names."""
    st = pair_statistics(u, v, ref_texts, ref_images, a, budget_elems=budget_elems, dtype=dtype)
    img2 = second_order_stats(u, image_mean, text_cov, a, half=True)
    txt2 = second_order_stats(v, text_mean, image_cov, a, half=True)
    out = {
        "clip_score": st["clip_score"], "s": st["s"], "log_r_img": st["log_r_img"], "log_r_txt": st["log_r_txt"],
        "image_kl": st["kl_img"], "image_klr": st["klr_img"], "image_dc": img2["d_c"], "image_dw": img2["d_w"],
        "text_kl": st["kl_txt"], "text_klr": st["klr_txt"], "text_dc": txt2["d_c"], "text_dw": txt2["d_w"],
    }
    if b is not None and tau is not None:
        out["log_r_siglip"] = siglip_log_ratio(u, v, a, b, tau)
    return out
