"""Agreement between estimates and ground truth: rank and linear correlation, and AUC.

* Spearman rho = Pearson correlation of the (average-tie) ranks.
* AUC of a score for separating positives from negatives = P(score(pos) > score(neg)) + 0.5 P(tie)
  = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg), R_pos = sum of the positives' ranks (Mann-Whitney U).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _finite_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def pearson(x, y) -> float:
    x, y = _finite_pair(x, y)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x, y) -> float:
    x, y = _finite_pair(x, y)
    if x.size < 2:
        return float("nan")
    return pearson(rankdata(x), rankdata(y))


def auc(scores, positive) -> float:
    """Area under the ROC curve of ``scores`` for the boolean labels ``positive`` (ties count one half)."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    ok = np.isfinite(s)
    s, pos = s[ok], pos[ok]
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
