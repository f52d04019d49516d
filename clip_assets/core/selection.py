"""Keep-fraction selection with one derived global threshold (PAPER.md section 3; DataComp's habit, ties kept).

Reference implementation: production thresholds are computed in DuckDB by the curation assets, and their tests
compare against this module. Semantics, exactly:

    N  = number of rows in the pool (NaN rows included: f is a fraction of the pool)
    k  = floor(f * N), computed exactly on the decimal value of f (f=0.29, N=100 -> k=29; the naive float
         product 0.29*100 = 28.999999999999996 would give 28). SQL: floor(CAST(f AS DECIMAL(18, 9)) * N).
    threshold = the k-th largest non-NaN value (1-based rank k in the descending sort; +inf and -inf are values)
    keep      = value >= threshold, NaN never kept

So exactly k rows are kept when there are no ties at the threshold and more when there are (ties kept).
Edge cases:
    k == 0 (f = 0, or f * N < 1)        -> threshold = +inf, keep nothing (not even +inf values)
    f == 1                               -> k = N, threshold = smallest non-NaN value, keep every non-NaN row
    k > number of non-NaN values         -> threshold = smallest non-NaN value, keep every non-NaN row (< k)
    empty pool (N == 0)                  -> threshold = NaN, empty mask
    k >= 1 but every value is NaN        -> threshold = NaN, keep nothing
    f outside [0, 1] or NaN              -> ValueError (a config error, raised at use with the bad value)

Every filter returns keep/drop plus a reason per dropped row (`Decision`): counts in = kept + rejected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = [
    "keep_count",
    "keep_fraction_threshold",
    "threshold_filter",
    "Decision",
    "keep_fraction_decision",
    "threshold_decision",
]


def _values(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}")
    return x


def _check_fraction(f) -> float:
    try:
        ff = float(f)
    except (TypeError, ValueError):
        raise ValueError(f"keep fraction f must be a number in [0, 1], got {f!r}") from None
    if not (0.0 <= ff <= 1.0):  # also rejects NaN
        raise ValueError(f"keep fraction f must be in [0, 1], got {f!r}")
    return ff


def keep_count(f: float, n: int) -> int:
    """k = floor(f * n), exact on the shortest decimal repr of f (Fraction(repr(f)))."""
    ff = _check_fraction(f)
    if n < 0:
        raise ValueError(f"pool size must be >= 0, got {n}")
    return int(math.floor(Fraction(repr(ff)) * int(n)))


def keep_fraction_threshold(values, f: float) -> tuple[float, np.ndarray]:
    """(threshold, keep_mask) for keeping the top fraction f of `values` (N,); semantics in the module docstring.

    threshold is a Python float (+inf when k == 0, NaN for an empty or all-NaN pool); keep_mask is bool (N,).
    """
    x = _values(values)
    k = keep_count(f, x.shape[0])
    n = x.shape[0]
    if n == 0:
        return float("nan"), np.zeros(0, dtype=bool)
    if k == 0:
        return float("inf"), np.zeros(n, dtype=bool)
    finite = x[~np.isnan(x)]
    if finite.size == 0:
        return float("nan"), np.zeros(n, dtype=bool)
    kk = min(k, finite.size)
    # k-th largest = element at index size - k of the ascending order; np.partition is O(N)
    t = float(np.partition(finite, finite.size - kk)[finite.size - kk])
    return t, threshold_filter(x, t)


def threshold_filter(values, t: float) -> np.ndarray:
    """keep = values >= t (bool (N,)); NaN values are never kept, and t = NaN keeps nothing."""
    x = _values(values)
    with np.errstate(invalid="ignore"):
        return x >= float(t)


@dataclass(frozen=True)
class Decision:
    """Outcome of one filter over N rows.

    keep: bool (N,); reason: object array (N,) holding None for kept rows and a human-readable reason string
    for dropped ones; threshold: the derived or given threshold; k: the target keep count for keep-fraction
    filters (None for fixed thresholds). n_in == n_kept + n_rejected always.
    """

    keep: np.ndarray
    reason: np.ndarray
    threshold: float
    name: str
    k: int | None = None

    @property
    def n_in(self) -> int:
        return int(self.keep.shape[0])

    @property
    def n_kept(self) -> int:
        return int(self.keep.sum())

    @property
    def n_rejected(self) -> int:
        return self.n_in - self.n_kept


def _fmt(t: float) -> str:
    return f"{t:.6g}"


def _reasons(x: np.ndarray, keep: np.ndarray, name: str, below: str) -> np.ndarray:
    reason = np.full(x.shape[0], None, dtype=object)
    nan = np.isnan(x)
    reason[nan] = f"{name} is NaN"
    reason[~keep & ~nan] = below
    return reason


def keep_fraction_decision(values, f: float, name: str = "value") -> Decision:
    """`keep_fraction_threshold` with a reason per dropped row, e.g. "kl_text < 1.234 (keep top 25%)"."""
    x = _values(values)
    t, keep = keep_fraction_threshold(x, f)
    k = keep_count(f, x.shape[0])
    pct = f"keep top {float(f) * 100:g}%"
    if k == 0:
        below = f"{name}: {pct} of {x.shape[0]} rows keeps 0"
    elif math.isnan(t):
        below = f"{name}: no non-NaN value in pool ({pct})"
    else:
        below = f"{name} < {_fmt(t)} ({pct})"
    return Decision(keep=keep, reason=_reasons(x, keep, name, below), threshold=t, name=name, k=k)


def threshold_decision(values, t: float, name: str = "value") -> Decision:
    """`threshold_filter` with reasons, e.g. "clip_score < 0.28"."""
    x = _values(values)
    keep = threshold_filter(x, t)
    return Decision(keep=keep, reason=_reasons(x, keep, name, f"{name} < {_fmt(float(t))}"),
                    threshold=float(t), name=name, k=None)
