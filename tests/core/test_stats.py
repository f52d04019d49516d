"""Paired-difference statistics against closed-form values."""

import math

import numpy as np
import pytest

from clip_assets.core.stats import paired_difference


def _t_df2(q: float) -> float:
    """Student t quantile with 2 degrees of freedom in closed form: (2q - 1) / sqrt(2 q (1 - q))."""
    return (2 * q - 1) / math.sqrt(2 * q * (1 - q))


def test_paired_difference_closed_form():
    # d = [1, 2, 3]: mean 2, std 1, sem 1/sqrt(3), t_{0.975, 2} = 0.95 / sqrt(0.04875) = 4.3027
    r = paired_difference([3.0, 5.0, 8.0], [2.0, 3.0, 5.0])
    assert r.n == 3 and r.mean == pytest.approx(2.0) and r.std == pytest.approx(1.0)
    assert r.sem == pytest.approx(1 / math.sqrt(3))
    assert r.t_crit == pytest.approx(_t_df2(0.975), rel=1e-9)
    half = _t_df2(0.975) / math.sqrt(3)
    assert (r.ci_low, r.ci_high) == (pytest.approx(2 - half), pytest.approx(2 + half))

def test_interval_sign_and_level():
    r = paired_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])  # d = [1, 2, 3]: CI 2 -/+ 2.484 contains 0
    assert r.ci_low < 0 < r.ci_high and not r.excludes_zero
    tight = paired_difference([1.0, 1.1, 0.9, 1.0, 1.05], [0.0] * 5)
    assert tight.excludes_zero and tight.ci_low > 0
    r90 = paired_difference([1.0, 1.1, 0.9], [0.0] * 3, level=0.90)  # t_{0.95, 2}
    assert r90.t_crit == pytest.approx(_t_df2(0.95), rel=1e-9)
    assert r90.ci_high - r90.ci_low == pytest.approx(2 * _t_df2(0.95) * 0.1 / math.sqrt(3))
    # t with 1 degree of freedom is Cauchy: t_q = tan(pi (q - 1/2))
    assert paired_difference([1.0, 3.0], [0.0, 0.0]).t_crit == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)


def test_one_pair_has_no_interval_and_bad_input_is_named():
    r = paired_difference([0.5], [0.25])
    assert r.mean == 0.25 and math.isnan(r.std) and math.isnan(r.ci_low)
    with pytest.raises(ValueError, match="shapes"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="level"):
        paired_difference([1.0, 2.0], [0.0, 0.0], level=1.5)
    with pytest.raises(ValueError, match="finite"):
        paired_difference([np.nan, 1.0], [0.0, 0.0])
