"""Pair scores and self-normalised log density ratios vs slow per-sample references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clip_assets.core.kl import kl_against_reference
from clip_assets.core.scores import (
    clip_score,
    log_ratio_from_stats,
    log_ratio_image_conditioned,
    log_ratio_text_conditioned,
    pair_scores,
    pair_statistics,
    siglip_log_ratio,
)


def unit(rng, n, d, dtype=np.float64):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def dot(x, y):
    return math.fsum(float(p) * float(q) for p, q in zip(x, y))


def slow_log_ratio(cond, other_pair, refs, a):
    """log r_i = a<c_i, o_i> - log sum_j exp(a<c_i, r_j>) + log N, with an explicit max-shifted log-sum-exp."""
    out = []
    for c, o in zip(cond, other_pair):
        s_ref = [a * dot(c, r) for r in refs]
        mx = max(s_ref)
        lse = mx + math.log(math.fsum(math.exp(s - mx) for s in s_ref))
        out.append(a * dot(c, o) - lse + math.log(len(refs)))
    return np.array(out)


@pytest.fixture
def world():
    rng = np.random.default_rng(0)
    return dict(u=unit(rng, 9, 6), v=unit(rng, 9, 6), rt=unit(rng, 41, 6), ri=unit(rng, 29, 6), a=64.0)


def test_clip_score_and_pair_scores(world):
    u, v = world["u"], world["v"]
    cs = clip_score(3.0 * u, v)  # cosine: scale-free
    for i in range(len(u)):
        assert math.isclose(cs[i], dot(u[i], v[i]), abs_tol=1e-12)
    np.testing.assert_allclose(pair_scores(u, v, 64.0), 64.0 * np.einsum("ij,ij->i", u, v), atol=1e-12)
    with pytest.raises(ValueError, match="equal shapes"):
        clip_score(u, v[:3])
    assert np.isnan(clip_score(np.zeros((1, 6)), v[:1]))[0]


def test_log_ratio_image_conditioned_vs_reference(world):
    u, v, rt, a = world["u"], world["v"], world["rt"], world["a"]
    want = slow_log_ratio(u, v, rt, a)  # image conditions: its own scores against reference texts
    got = log_ratio_image_conditioned(u, v, rt, a, budget_elems=17)
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_log_ratio_text_conditioned_vs_reference(world):
    u, v, ri, a = world["u"], world["v"], world["ri"], world["a"]
    want = slow_log_ratio(v, u, ri, a)  # text conditions: its scores against reference images
    got = log_ratio_text_conditioned(u, v, ri, a, budget_elems=17)
    np.testing.assert_allclose(got, want, atol=1e-9)
    # the two directions differ in general
    assert not np.allclose(got, log_ratio_image_conditioned(u, v, world["rt"], a))


def test_one_pass_reuse(world):
    u, v, rt, a = world["u"], world["v"], world["rt"], world["a"]
    stats = kl_against_reference(u, rt, a)
    np.testing.assert_allclose(log_ratio_image_conditioned(u, v, rt, a, stats=stats),
                               log_ratio_image_conditioned(u, v, rt, a), atol=1e-12)
    np.testing.assert_allclose(log_ratio_from_stats(pair_scores(u, v, a), stats["lse"], len(rt)),
                               slow_log_ratio(u, v, rt, a), atol=1e-9)
    with pytest.raises(ValueError, match="lse"):
        log_ratio_image_conditioned(u, v, rt, a, stats={"lse": stats["lse"][:2]})


def test_constant_shift_cancels(world):
    # an extra dimension holding 1 on one side and c/a on the other adds c to EVERY score (a SigLIP-like bias)
    u, v, rt, a = world["u"], world["v"], world["rt"], world["a"]
    c = 37.0
    us = np.hstack([u, np.ones((len(u), 1))])
    vs = np.hstack([v, np.full((len(v), 1), c / a)])
    rts = np.hstack([rt, np.full((len(rt), 1), c / a)])
    np.testing.assert_allclose(log_ratio_image_conditioned(us, vs, rts, a),
                               log_ratio_image_conditioned(u, v, rt, a), atol=1e-9)


def test_siglip_log_ratio(world):
    u, v = world["u"], world["v"]
    a, b, tau = 112.0, -16.5, 31.0
    got = siglip_log_ratio(u, v, a, b, tau)
    for i in range(len(u)):
        assert math.isclose(got[i], a * dot(u[i], v[i]) + b + math.log(tau), abs_tol=1e-10)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="tau"):
            siglip_log_ratio(u, v, a, b, bad)


def test_float16_inputs_and_pair_statistics(world):
    u16, v16 = world["u"].astype(np.float16), world["v"].astype(np.float16)
    rt, ri, a = world["rt"].astype(np.float16), world["ri"].astype(np.float16), world["a"]
    st = pair_statistics(u16, v16, rt, ri, a, budget_elems=50)
    assert all(x.dtype == np.float64 and x.shape == (9,) for x in st.values())
    u, v = u16.astype(np.float64), v16.astype(np.float64)
    np.testing.assert_allclose(st["log_r_img"], slow_log_ratio(u, v, rt.astype(np.float64), a), atol=1e-9)
    np.testing.assert_allclose(st["log_r_txt"], slow_log_ratio(v, u, ri.astype(np.float64), a), atol=1e-9)
    np.testing.assert_allclose(st["kl_txt"], kl_against_reference(v, ri, a)["d_kl"], atol=1e-9)
    np.testing.assert_allclose(st["klr_img"], kl_against_reference(u, rt, a)["d_klr"], atol=1e-9)
    fast = pair_statistics(u16, v16, rt, ri, a, dtype=np.float32)
    np.testing.assert_allclose(fast["log_r_img"], st["log_r_img"], atol=1e-4)
