"""Paired comparison statistics: IWL minus baseline per seed, summarised with a t confidence interval.

For paired differences ``d_i = x_i - y_i`` (i = 1..n, one per seed)::

    mean  = (1/n) sum_i d_i
    std   = sqrt( sum_i (d_i - mean)^2 / (n - 1) )          (sample std, ddof = 1)
    sem   = std / sqrt(n)
    CI    = mean -/+ t_{1 - (1 - level)/2, n - 1} * sem      (Student t, n - 1 degrees of freedom)

With one pair the std, sem and interval are undefined (NaN), not zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    """Summary of paired differences ``x - y``."""

    n: int
    mean: float
    std: float
    sem: float
    t_crit: float
    ci_low: float
    ci_high: float
    level: float

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def excludes_zero(self) -> bool:
        """The interval lies strictly above or strictly below 0."""
        return bool(self.ci_low > 0 or self.ci_high < 0)


def paired_difference(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> PairedDifference:
    """Mean, sample std and ``level`` t interval of ``x_i - y_i`` (see the module doc)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need two 1-d sequences of one length, got shapes {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired_difference needs at least one pair, got none")
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired values must be finite")
    d = a - b
    n, mean = int(d.size), float(d.mean())
    if n < 2:
        nan = float("nan")
        return PairedDifference(n, mean, nan, nan, nan, nan, nan, level)
    std = float(d.std(ddof=1))
    sem = std / math.sqrt(n)
    t_crit = float(stats.t.ppf(1.0 - (1.0 - level) / 2.0, n - 1))
    return PairedDifference(n, mean, std, sem, t_crit, mean - t_crit * sem, mean + t_crit * sem, level)
