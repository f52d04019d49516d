"""Keep-fraction threshold semantics against a brute-force sort."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from clip_assets.core.selection import (
    keep_count,
    keep_fraction_decision,
    keep_fraction_threshold,
    threshold_decision,
    threshold_filter,
)


def brute(values, f):
    """Documented semantics, written as plainly as possible."""
    vals = [float(x) for x in values]
    n = len(vals)
    k = math.floor(Fraction(str(f)) * n)
    if n == 0:
        return float("nan"), []
    if k == 0:
        return float("inf"), [False] * n
    desc = sorted((x for x in vals if not math.isnan(x)), reverse=True)
    if not desc:
        return float("nan"), [False] * n
    t = desc[min(k, len(desc)) - 1]  # 1-based rank k in the descending sort
    return t, [(not math.isnan(x)) and x >= t for x in vals]


def check(values, f):
    t, keep = keep_fraction_threshold(values, f)
    bt, bkeep = brute(values, f)
    assert keep.dtype == bool and keep.tolist() == bkeep
    assert (math.isnan(t) and math.isnan(bt)) or t == bt
    return t, keep


def test_hand_cases():
    t, keep = check([3.0, 1.0, 2.0, 2.0], 0.5)  # k = 2, 2nd largest = 2, ties kept -> 3 rows
    assert t == 2.0 and keep.tolist() == [True, False, True, True]
    t, keep = check([5.0, 4.0, 3.0, 2.0], 0.5)  # no ties: exactly k rows
    assert t == 4.0 and keep.sum() == 2
    t, keep = check([1.0, 2.0, 3.0], 0.0)  # f = 0 keeps nothing
    assert t == math.inf and not keep.any()
    t, keep = check([1.0, 2.0, 3.0], 0.3)  # floor(0.9) = 0 keeps nothing
    assert t == math.inf and not keep.any()
    t, keep = check([np.inf, 2.0], 0.0)  # not even +inf
    assert not keep.any()
    t, keep = check([1.0, 2.0, 3.0, 1.0], 1.0)  # f = 1 keeps all
    assert t == 1.0 and keep.all()
    t, keep = check([], 0.25)  # empty pool
    assert math.isnan(t) and keep.shape == (0,)
    t, keep = check([np.nan, 3.0, np.nan, 1.0], 1.0)  # NaN never kept; k = 4 > 2 non-NaN -> keep all non-NaN
    assert t == 1.0 and keep.tolist() == [False, True, False, True]
    t, keep = check([np.nan, np.nan], 0.5)  # all NaN
    assert math.isnan(t) and not keep.any()
    t, keep = check([np.nan, 5.0, 4.0, 3.0], 0.5)  # N counts NaN rows: k = 2 -> threshold 4
    assert t == 4.0 and keep.tolist() == [False, True, True, False]


def test_decimal_exact_k():
    assert 0.29 * 100 < 29  # the float product would floor to 28
    assert keep_count(0.29, 100) == 29
    assert keep_count(0.25, 10) == 2 and keep_count(1.0, 7) == 7 and keep_count(0.0, 7) == 0
    t, keep = check(np.arange(100.0), 0.29)
    assert keep.sum() == 29 and t == 71.0


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "x"])
def test_bad_fraction_raises(bad):
    with pytest.raises(ValueError, match="fraction"):
        keep_fraction_threshold([1.0, 2.0], bad)


def test_random_against_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(0, 40))
        vals = rng.integers(0, 6, size=n).astype(np.float64)  # many ties
        vals[rng.random(n) < 0.15] = np.nan
        vals[rng.random(n) < 0.05] = np.inf
        f = float(rng.choice([0.0, 0.1, 0.25, 0.29, 0.3, 0.5, 0.75, 0.99, 1.0, rng.random()]))
        t, keep = check(vals, f)
        k = keep_count(f, n)
        n_valid = int((~np.isnan(vals)).sum())
        # at least min(k, n_valid) rows kept, and exactly that many when the threshold value is unique
        assert keep.sum() >= min(k, n_valid) if k else keep.sum() == 0
        if k and n_valid and np.sum(vals == t) == 1:
            assert keep.sum() == min(k, n_valid)


def test_threshold_filter():
    v = np.array([0.1, 0.28, 0.3, np.nan])
    assert threshold_filter(v, 0.28).tolist() == [False, True, True, False]
    assert not threshold_filter(v, float("nan")).any()


def test_decisions_carry_reasons_and_counts():
    v = np.array([1.5, np.nan, 0.2, 3.0, 1.234])
    d = keep_fraction_decision(v, 0.5, name="kl_text")  # k = 2 -> threshold 1.5
    assert d.threshold == 1.5 and d.k == 2
    assert d.keep.tolist() == [True, False, False, True, False]
    assert d.reason.tolist() == [None, "kl_text is NaN", "kl_text < 1.5 (keep top 50%)", None,
                                 "kl_text < 1.5 (keep top 50%)"]
    assert d.n_in == d.n_kept + d.n_rejected == 5 and d.n_kept == 2
    z = keep_fraction_decision(v, 0.0, name="kl_text")
    assert z.n_kept == 0 and all(r is not None for r in z.reason)
    f = threshold_decision(np.array([0.3, 0.1]), 0.28, name="clip_score")
    assert f.keep.tolist() == [True, False] and f.reason.tolist() == [None, "clip_score < 0.28"]
    assert keep_fraction_decision(np.array([1.0, 2.0, 3.0, 4.0]), 0.25, "x").reason[0] == "x < 4 (keep top 25%)"
