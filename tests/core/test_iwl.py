"""IWL math: importance weights (eq. 1), their ESS, the weighted CLIP loss (eq. 2), zero-shot metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clip_assets.core.iwl import (
    SAFE_LOG_MAX,
    classification_report,
    effective_sample_size,
    effective_sample_size_log,
    importance_weights,
    log_importance_weights,
    normalise_to_mean,
    weighted_clip_loss,
    zero_shot_predict,
)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


# ------------------------------------------------------------------ weights


def test_log_weights_are_scaled_cosines_in_float64():
    u = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]], dtype=np.float32)  # not unit: re-normalised
    v = np.array([1.0, 0.0])
    lw = log_importance_weights(u, v, a_prime=10.0, b_prime=0.5)
    assert lw.dtype == np.float64
    np.testing.assert_allclose(lw, [10.5, 0.5, -9.5, 10 / math.sqrt(2) + 0.5], rtol=1e-12)
    iw = importance_weights(u, v, 10.0, 0.5)
    assert iw.shift == 0.0
    np.testing.assert_allclose(iw.weight, np.exp(lw), rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("a_prime", [10.0, 100.0, 1000.0, 5000.0])
def test_weights_finite_for_extreme_similarities_in_any_precision(dtype, a_prime):
    d = 8
    v = torch.zeros(d, dtype=dtype)
    v[0] = 1
    u = torch.zeros((4, d), dtype=dtype)
    u[0, 0] = 1  # cos = +1
    u[1, 0] = -1  # cos = -1
    u[2, 1] = 1  # cos = 0
    u[3] = torch.full((d,), 1 / math.sqrt(d), dtype=dtype)  # cos = 1/sqrt(d), not exactly unit in half precision
    iw = importance_weights(u, v, a_prime=a_prime, b_prime=0.0)
    assert np.all(np.isfinite(iw.log_weight)) and np.all(np.isfinite(iw.weight))
    assert np.all(iw.weight >= 0)
    assert iw.log_weight[0] == pytest.approx(a_prime) and iw.log_weight[1] == pytest.approx(-a_prime)
    if a_prime <= SAFE_LOG_MAX:
        assert iw.shift == 0.0
        assert np.all(iw.weight > 0)
        np.testing.assert_allclose(iw.weight, np.exp(iw.log_weight), rtol=1e-12)
    else:  # rescaled by a recorded constant: the largest weight is exp(SAFE_LOG_MAX), ratios unchanged
        assert iw.shift == pytest.approx(a_prime - SAFE_LOG_MAX)
        assert iw.weight.max() == pytest.approx(math.exp(SAFE_LOG_MAX), rel=1e-9)
    # the weights also stay finite once cast to the training dtype after mean-normalisation
    w_mean1, c = normalise_to_mean(iw.log_weight)
    assert np.isfinite(c) and np.all(np.isfinite(w_mean1)) and w_mean1.mean() == pytest.approx(1.0)
    assert torch.isfinite(torch.as_tensor(w_mean1 / w_mean1.max()).to(dtype)).all()
    ess = iw.ess
    assert np.isfinite(ess) and 1.0 - 1e-9 <= ess <= 4.0 + 1e-9


def test_prompt_that_matches_nothing_gives_uniform_weights_not_nan():
    rng = np.random.default_rng(0)
    m, d = 500, 16
    u = rng.standard_normal((m, d))
    u[:, 0] = 0.0  # every image is orthogonal to the prompt
    v = np.zeros(d)
    v[0] = 1.0
    iw = importance_weights(u, v, a_prime=10.0)
    assert np.all(np.isfinite(iw.weight))
    np.testing.assert_allclose(iw.weight, 1.0)
    assert iw.ess == pytest.approx(m) and iw.ess_fraction == pytest.approx(1.0)
    # constant similarity (every image the same, any cosine) -> uniform too, whatever a'
    u_const = np.tile(rng.standard_normal(d), (m, 1))
    iw2 = importance_weights(u_const, v, a_prime=1000.0)
    assert np.all(np.isfinite(iw2.weight)) and np.ptp(iw2.weight) == 0.0
    assert iw2.ess == pytest.approx(m)
    # a zero prompt vector (degenerate text tower) gives cosine 0, not NaN
    iw3 = importance_weights(u, np.zeros(d))
    np.testing.assert_allclose(iw3.weight, 1.0)


def test_non_finite_inputs_fail_with_a_clear_message():
    u = np.ones((3, 2))
    u[1, 0] = np.nan
    with pytest.raises(ValueError, match="1 row"):
        log_importance_weights(u, np.ones(2))
    with pytest.raises(ValueError, match="a_prime"):
        log_importance_weights(np.ones((3, 2)), np.ones(2), a_prime=float("inf"))
    with pytest.raises(ValueError, match="dimension"):
        log_importance_weights(np.ones((3, 2)), np.ones(3))


def test_effective_sample_size():
    assert effective_sample_size([1, 1, 1, 1]) == pytest.approx(4.0)
    assert effective_sample_size([1, 0, 0, 0]) == pytest.approx(1.0)
    assert effective_sample_size([1, 1, 0, 0]) == pytest.approx(2.0)
    w = np.array([1.0, 2.0, 3.0])
    assert effective_sample_size(w) == pytest.approx(36 / 14)
    assert effective_sample_size(w * 1e300) == pytest.approx(36 / 14)  # w^2 would overflow without scaling
    assert effective_sample_size_log(np.log(w) + 800) == pytest.approx(36 / 14)
    assert effective_sample_size([]) == 0.0 and effective_sample_size([0.0, 0.0]) == 0.0
    with pytest.raises(ValueError):
        effective_sample_size([1.0, -1.0])


def test_normalise_to_mean_is_a_constant_shift():
    lw = np.array([700.0, 701.0, 702.0, 800.0])  # exp(800) overflows float64; the shifted form does not
    w, c = normalise_to_mean(lw)
    assert np.all(np.isfinite(w)) and w.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(np.log(w), lw - c)


# ------------------------------------------------------------------ loss


def test_weighted_loss_hand_computed_2x2():
    # unit features: image_0 = text_0 = e0, image_1 = e1, text_1 = (e0 + e1)/sqrt 2; scale a = 2
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    s = 1 / math.sqrt(2)
    txt = torch.tensor([[1.0, 0.0], [s, s]], dtype=torch.float64)
    a = 2.0
    # logits_per_image L = a * img @ txt.T = [[2, 2s], [0, 2s]]
    l00, l01, l10, l11 = 2.0, 2 * s, 0.0, 2 * s

    def ce(logits, j):
        return -logits[j] + math.log(sum(math.exp(x) for x in logits))

    ce_img = [ce([l00, l01], 0), ce([l10, l11], 1)]  # row j of L, target j
    ce_txt = [ce([l00, l10], 0), ce([l01, l11], 1)]  # column j of L, target j
    w = [3.0, 0.5]
    expected = (w[0] * 0.5 * (ce_img[0] + ce_txt[0]) + w[1] * 0.5 * (ce_img[1] + ce_txt[1])) / 2
    got = weighted_clip_loss(img, txt, a, torch.tensor(w, dtype=torch.float64))
    assert float(got) == pytest.approx(expected, rel=1e-12)
    # not normalised by the sum of the weights: doubling every weight doubles the loss
    got2 = weighted_clip_loss(img, txt, a, torch.tensor(w, dtype=torch.float64) * 2)
    assert float(got2) == pytest.approx(2 * expected, rel=1e-12)


def test_weighted_loss_equals_open_clip_clip_loss_with_unit_weights():
    from open_clip.loss import ClipLoss

    g = torch.Generator().manual_seed(0)
    img = _unit(torch.randn(17, 32, generator=g))
    txt = _unit(torch.randn(17, 32, generator=g))
    scale = torch.tensor(14.3)
    ref = ClipLoss()(img, txt, scale)
    assert torch.allclose(weighted_clip_loss(img, txt, scale, torch.ones(17)), ref, rtol=1e-6, atol=1e-6)
    assert torch.allclose(weighted_clip_loss(img, txt, scale, None), ref, rtol=1e-6, atol=1e-6)
    # gradients agree too (the training loop's path)
    img_a, txt_a = img.clone().requires_grad_(), txt.clone().requires_grad_()
    img_b, txt_b = img.clone().requires_grad_(), txt.clone().requires_grad_()
    ClipLoss()(img_a, txt_a, scale).backward()
    weighted_clip_loss(img_b, txt_b, scale, torch.ones(17)).backward()
    assert torch.allclose(img_a.grad, img_b.grad, atol=1e-7) and torch.allclose(txt_a.grad, txt_b.grad, atol=1e-7)


def test_weighted_loss_equals_per_sample_weighting_of_the_cross_entropies():
    g = torch.Generator().manual_seed(1)
    img = _unit(torch.randn(9, 8, generator=g))
    txt = _unit(torch.randn(9, 8, generator=g))
    w = torch.rand(9, generator=g) * 5
    logits = 10 * img @ txt.T
    slow = sum(
        w[j] * 0.5 * (torch.nn.functional.cross_entropy(logits[j : j + 1], torch.tensor([j]))
                      + torch.nn.functional.cross_entropy(logits.T[j : j + 1], torch.tensor([j])))
        for j in range(9)
    ) / 9
    assert torch.allclose(weighted_clip_loss(img, txt, 10.0, w), slow, atol=1e-6)
    with pytest.raises(ValueError, match="8 entries"):
        weighted_clip_loss(img, txt, 10.0, w[:8])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_weighted_loss_half_precision_is_finite_and_close(dtype):
    g = torch.Generator().manual_seed(2)
    img = _unit(torch.randn(32, 16, generator=g))
    txt = _unit(torch.randn(32, 16, generator=g))
    lw = log_importance_weights(img, txt[0], a_prime=10.0)
    w, _ = normalise_to_mean(lw)
    w = torch.as_tensor(w, dtype=torch.float32)
    ref = weighted_clip_loss(img, txt, torch.tensor(100.0), w)
    got = weighted_clip_loss(img.to(dtype), txt.to(dtype), torch.tensor(100.0, dtype=dtype), w.to(dtype))
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert float(got) == pytest.approx(float(ref), rel=0.1)


# ------------------------------------------------------------------ zero-shot metrics


def test_classification_report_hand_example():
    names = ["a", "b", "c", "d"]
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 0, 2]
    r = classification_report(y_true, y_pred, names)
    assert r["accuracy"] == pytest.approx(4 / 6)
    # a: P 1/2 R 1/2 F 1/2; b: P 2/3 R 1 F 0.8; c: P 1 R 1/2 F 2/3; d absent from both -> not averaged
    assert r["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    pc = {row["class"]: row for row in r["per_class"]}
    assert pc["b"]["precision"] == pytest.approx(2 / 3) and pc["d"]["support"] == 0
    assert r["confusion"][2] == [1, 0, 1, 0]


def test_zero_shot_predict():
    u = np.array([[1.0, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    v = np.array([[1.0, 0.0], [0.0, 1.0], [-0.7, -0.7]])
    assert zero_shot_predict(u, v).tolist() == [0, 1, 2]
