"""Chunked KL engine vs closed forms, an independent slow reference, and the second-order forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clip_assets.core.kl import (
    conformity,
    kl_against_reference,
    kl_from_scores,
    plan_chunks,
    reference_moments,
    second_order_stats,
)


def unit(rng, n, d, dtype=np.float64):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def slow_reference(X, R, a):
    """Per-sample definitions with python loops and math.fsum; shares no code or identity with the engine."""
    N = len(R)
    rows = []
    for u in X:
        s = [a * math.fsum(float(ui) * float(vi) for ui, vi in zip(u, v)) for v in R]
        mx = max(s)
        lse = mx + math.log(math.fsum(math.exp(sj - mx) for sj in s))
        logpi = [sj - lse for sj in s]
        # KL(pi || U_N) = sum_j pi_j log(pi_j / (1/N));  KL(U_N || pi) = sum_j (1/N) log((1/N) / pi_j)
        d_kl = math.fsum(math.exp(lp) * (lp + math.log(N)) for lp in logpi)
        d_klr = math.fsum((-math.log(N) - lp) / N for lp in logpi)
        rows.append((d_kl, d_klr, lse, math.fsum(s) / N))
    arr = np.array(rows)
    return {"d_kl": arr[:, 0], "d_klr": arr[:, 1], "lse": arr[:, 2], "mean_s": arr[:, 3]}


KEYS = ("d_kl", "d_klr", "lse", "mean_s")


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_engine_matches_slow_reference(backend):
    rng = np.random.default_rng(0)
    X, R = unit(rng, 6, 5), unit(rng, 37, 5)
    ref = slow_reference(X, R, 87.3)
    out = kl_against_reference(X, R, 87.3, budget_elems=10, backend=backend)
    for k in KEYS:
        np.testing.assert_allclose(out[k], ref[k], rtol=0, atol=1e-9, err_msg=k)


def test_closed_form_identities():
    rng = np.random.default_rng(1)
    X, R = unit(rng, 40, 8), unit(rng, 101, 8)
    a = 30.0
    out = kl_against_reference(X, R, a)
    S = a * X @ R.T  # (M, N)
    P = np.exp(S - S.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)  # softmax
    N = R.shape[0]
    H = -(P * np.log(P)).sum(1)
    np.testing.assert_allclose(out["d_kl"], np.log(N) - H, atol=1e-9)
    kl_uniform_pi = (np.log(1.0 / N) - np.log(P)).sum(1) / N  # KL(U_N || pi)
    np.testing.assert_allclose(out["d_klr"], kl_uniform_pi, atol=1e-9)
    np.testing.assert_allclose(out["mean_s"], S.mean(1), atol=1e-9)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("budget,row_chunk,col_chunk", [(1, None, None), (7, 3, None), (91, 7, 13),
                                                        (500, 17, 29), (2**24, None, None)])
def test_chunked_equals_unchunked(backend, budget, row_chunk, col_chunk):
    rng = np.random.default_rng(2)
    M, N = 23, 101  # neither divisible by the chunk sizes
    X, R = unit(rng, M, 6), unit(rng, N, 6)
    a = 100.0
    rows, cols = plan_chunks(M, N, budget, row_chunk, col_chunk)
    assert rows * cols <= budget
    full = kl_from_scores(a * X @ R.T)  # one block
    out = kl_against_reference(X, R, a, budget_elems=budget, row_chunk=row_chunk, col_chunk=col_chunk,
                               backend=backend)
    for k in KEYS:
        np.testing.assert_allclose(out[k], full[k], rtol=0, atol=1e-9, err_msg=k)


def test_budget_forces_many_blocks():
    assert plan_chunks(23, 101, 91, 7, 13) == (7, 13)  # 4 row blocks x 8 column blocks
    assert plan_chunks(23, 101, 1) == (1, 1)
    assert plan_chunks(5, 3, 2**24) == (5, 3)
    with pytest.raises(ValueError, match="budget_elems"):
        plan_chunks(5, 3, 0)


def test_shift_invariance_lower_level():
    rng = np.random.default_rng(3)
    S = rng.normal(0, 20, size=(9, 61))
    base = kl_from_scores(S)
    for c in (-700.0, 3.5, 1e4):
        for col_chunk in (None, 8):
            sh = kl_from_scores(S + c, col_chunk=col_chunk)
            np.testing.assert_allclose(sh["d_kl"], base["d_kl"], atol=1e-9)
            np.testing.assert_allclose(sh["d_klr"], base["d_klr"], atol=1e-9)
            np.testing.assert_allclose(sh["lse"], base["lse"] + c, rtol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_shift_invariance_engine_via_extra_dimension(backend):
    # targets [u, 1] and refs [v, c/a] give s'_j = s_j + c for every j of every row
    rng = np.random.default_rng(4)
    X, R = unit(rng, 12, 7), unit(rng, 45, 7)
    a, c = 50.0, 250.0
    base = kl_against_reference(X, R, a, budget_elems=64, backend=backend)
    Xs = np.hstack([X, np.ones((12, 1))])
    Rs = np.hstack([R, np.full((45, 1), c / a)])
    sh = kl_against_reference(Xs, Rs, a, budget_elems=64, backend=backend)
    np.testing.assert_allclose(sh["d_kl"], base["d_kl"], atol=1e-9)
    np.testing.assert_allclose(sh["d_klr"], base["d_klr"], atol=1e-9)
    np.testing.assert_allclose(sh["lse"] - base["lse"], c, atol=1e-9)
    np.testing.assert_allclose(sh["mean_s"] - base["mean_s"], c, atol=1e-9)


@pytest.mark.parametrize("a", [0.0, 1e-3, 10.0, 100.0, 1e4])
def test_bounds(a):
    rng = np.random.default_rng(5)
    X, R = unit(rng, 30, 4), unit(rng, 64, 4)
    out = kl_against_reference(X, R, a, budget_elems=100)
    log_n = math.log(64)
    assert np.all(out["d_kl"] >= -1e-12) and np.all(out["d_kl"] <= log_n + 1e-12)
    assert np.all(out["d_klr"] >= -1e-12)
    if a == 0.0:  # uniform pi
        np.testing.assert_allclose(out["d_kl"], 0.0, atol=1e-12)
        np.testing.assert_allclose(out["d_klr"], 0.0, atol=1e-12)
    if a == 1e4:  # (nearly) one-hot pi: D_KL -> log N, except for rows with a near-tie at the top
        assert abs(np.median(out["d_kl"]) - log_n) < 1e-6


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_float32_and_float16_inputs(backend):
    rng = np.random.default_rng(6)
    X, R = unit(rng, 50, 32, np.float16), unit(rng, 300, 32, np.float16)
    exact = kl_against_reference(X, R, 100.0, backend=backend)  # float64 math on the float16 values
    ref = kl_from_scores(100.0 * X.astype(np.float64) @ R.astype(np.float64).T)
    for k in KEYS:
        np.testing.assert_allclose(exact[k], ref[k], atol=1e-9, err_msg=k)
    fast = kl_against_reference(X, R, 100.0, dtype=np.float32, budget_elems=999, backend=backend)
    for k in KEYS:
        np.testing.assert_allclose(fast[k], ref[k], atol=2e-4, err_msg=k)


def test_nan_target_row_is_isolated_and_bad_inputs_raise():
    rng = np.random.default_rng(7)
    X, R = unit(rng, 5, 3), unit(rng, 9, 3)
    X[2, 0] = np.nan
    out = kl_against_reference(X, R, 10.0, budget_elems=6)
    assert np.isnan(out["d_kl"][2]) and np.all(np.isfinite(np.delete(out["d_kl"], 2)))
    R[0, 0] = np.inf
    with pytest.raises(ValueError, match="refs"):
        kl_against_reference(X, R, 10.0)
    with pytest.raises(ValueError, match="d=3"):
        kl_against_reference(X, np.ones((4, 2)), 10.0)
    with pytest.raises(ValueError, match="dtype"):
        kl_against_reference(X, np.ones((4, 3)), 10.0, dtype=np.float16)
    with pytest.raises(ValueError, match="logit scale"):
        kl_against_reference(X, np.ones((4, 3)), float("nan"))
    assert kl_against_reference(np.zeros((0, 3)), np.ones((4, 3)), 1.0)["d_kl"].shape == (0,)


def test_reference_moments_streamed():
    rng = np.random.default_rng(8)
    V = rng.standard_normal((103, 6)).astype(np.float16)
    mean, cov = reference_moments(V, chunk_rows=10)
    V64 = V.astype(np.float64)
    np.testing.assert_allclose(mean, V64.mean(0), atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(V64, rowvar=False, ddof=0), atol=1e-12)
    _, cov1 = reference_moments(V, ddof=1, chunk_rows=7)
    np.testing.assert_allclose(cov1, np.cov(V64, rowvar=False), atol=1e-12)
    assert mean.dtype == np.float64 and cov.dtype == np.float64


def test_second_order_stats_formulas():
    rng = np.random.default_rng(9)
    U = rng.standard_normal((11, 5))
    mu, C = rng.standard_normal(5), np.cov(rng.standard_normal((50, 5)), rowvar=False)
    a = 7.0
    half = second_order_stats(U, mu, C, a, chunk_rows=4)
    full = second_order_stats(U, mu, C, a, half=False)
    for i in range(11):
        dlt = U[i] - mu
        assert math.isclose(full["d_c"][i], a * a * float(dlt @ dlt), rel_tol=1e-12)
        assert math.isclose(full["d_w"][i], a * a * float(dlt @ C @ dlt), rel_tol=1e-12)
    np.testing.assert_allclose(full["d_w"], 2 * half["d_w"], rtol=1e-14)
    np.testing.assert_allclose(full["d_c"], 2 * half["d_c"], rtol=1e-14)


def half_factor_world(eps, d=12, n_ref=400, n_tgt=60, seed=10):
    """References with a constant component along e0 (so the mean target direction e0 scores every reference
    equally: pi at the mean is exactly Uniform_N) and targets e0 + eps * delta, delta in +/- pairs."""
    rng = np.random.default_rng(seed)
    r = 0.6
    W = unit(rng, n_ref, d - 1)
    refs = np.hstack([np.full((n_ref, 1), math.sqrt(1 - r * r)), r * W])  # unit, <e0, v_j> constant
    D = unit(rng, n_tgt // 2, d - 1)
    D = np.vstack([D, -D])  # mean of the perturbations is exactly 0
    tg = np.hstack([np.ones((n_tgt, 1)), eps * D])
    return tg / np.linalg.norm(tg, axis=1, keepdims=True), refs


def test_half_factor_matches_exact_kl():
    a = 100.0
    ratios = {}
    for eps in (1e-2, 1e-4):
        tg, refs = half_factor_world(eps)
        exact = kl_against_reference(tg, refs, a, budget_elems=1000)["d_kl"]  # chunked, exact on the set
        mean_u, _ = reference_moments(tg)
        _, cov_v = reference_moments(refs)
        for half in (True, False):
            dw = second_order_stats(tg, mean_u, cov_v, a, half=half)["d_w"]
            ratios[eps, half] = np.median(dw / exact)
    # in the small-deviation limit the 1/2 form matches the exact D_KL; the authors' form is 2x
    assert abs(ratios[1e-4, True] - 1.0) < 1e-5, ratios
    assert abs(ratios[1e-4, False] - 2.0) < 2e-5, ratios
    # and it is a limit: at larger deviations the third-order terms show
    assert abs(ratios[1e-2, True] - 1.0) > abs(ratios[1e-4, True] - 1.0)


def test_conformity_is_affine_in_dc():
    rng = np.random.default_rng(11)
    U = unit(rng, 500, 16) + 0.0
    U[:, 0] += 1.5  # a shared direction, like a modality cone
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    m = U.mean(0)
    conf = conformity(U, m)
    a = 100.0
    for half in (True, False):
        dc = second_order_stats(U, m, np.eye(16), a, half=half)["d_c"]
        assert round(float(np.corrcoef(dc, conf)[0, 1]), 3) == -1.0
        f = (0.5 if half else 1.0) * a * a
        nm = np.linalg.norm(m)
        np.testing.assert_allclose(dc, f * (1 + nm * nm - 2 * nm * conf), rtol=1e-10)
    np.testing.assert_allclose(conformity(3.0 * U, m), conf, atol=1e-12)  # a cosine: scale-free in u
