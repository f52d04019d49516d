"""The synthetic world's exact densities, checked against normalisation, brute force and Monte Carlo counts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from clip_assets.world import PLACEHOLDER, World

N_MC = 500_000


@pytest.fixture(scope="module")
def world() -> World:
    return World.default()


@pytest.fixture(scope="module")
def mc(world):
    """Counts of (image class, caption) from the sampler; the placeholder is class row Z."""
    s = world.sample_pairs(N_MC, np.random.default_rng(12345))
    c = np.where(s.latent < 0, world.n_latents, s.latent)
    counts = np.zeros((world.n_latents + 1, len(world.vocabulary)), dtype=np.int64)
    np.add.at(counts, (c, s.caption), 1)
    return s, c, counts


def test_tables_are_normalised(world):
    np.testing.assert_allclose(world.p_y_given_z.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(world.p_y.sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(world.p_c.sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(world.p_y_given_c.sum(axis=1), 1.0, atol=1e-12)  # sum_y p(y|x) = 1
    r = np.exp(world.log_ratio_table)
    np.testing.assert_allclose(world.p_c @ r, 1.0, atol=1e-12)  # sum_c p(c) r(c, y) = 1 for every y
    np.testing.assert_allclose(world.p_c @ world.p_y_given_c, world.p_y, atol=1e-15)  # the marginal is p_aligned


def test_prior_is_fixed_non_uniform_and_not_a_product(world):
    p = world.p_z.reshape(len(world.shapes), len(world.colours), len(world.sizes))
    assert p.max() / p.min() > 5
    product = np.einsum("i,j,k->ijk", p.sum((1, 2)), p.sum((0, 2)), p.sum((0, 1)))
    assert np.abs(p - product).max() > 1e-3
    assert World.default() == world  # constants, no randomness


def test_captions_and_vocabulary(world):
    z = world.latent_index("circle", "red", "large")
    assert world.latent_names(z) == {"shape": "circle", "colour": "red", "size": "large"}
    assert world.caption_of(z, "full") == "a photo of a large red circle"
    assert world.caption_of(z, "colour_shape") == "a photo of a red circle"
    assert world.caption_of(z, "shape") == "a photo of a circle"
    assert world.caption_of(z, "colour") == "a photo of something red"
    assert world.caption_of(z, "generic") == "an image"
    assert len(world.vocabulary) == len(set(world.vocabulary)) == 32 + 16 + 4 + 4 + 1
    np.testing.assert_array_equal(world.caption_index(list(world.vocabulary)), np.arange(len(world.vocabulary)))
    with pytest.raises(KeyError):
        world.caption_index(["a photo of a dog"])


def test_json_round_trip(world):
    again = World.from_dict(json.loads(json.dumps(world.to_dict())))
    assert again == world
    np.testing.assert_array_equal(again.log_ratio_table, world.log_ratio_table)


@pytest.mark.parametrize(
    "change",
    [
        {"misaligned_rate": 0.6, "placeholder_rate": 0.4},
        {"prior": (1.0,) * 32},
        {"shapes": ("circle", "hexagon", "square", "cross")},
        {"domains": {"red": {"colour": "purple"}}},
    ],
)
def test_bad_parameters_fail_at_construction(world, change):
    d = world.to_dict() | change
    with pytest.raises(ValueError):
        World.from_dict(d)


def test_sampler_frequencies(world, mc):
    s, _, _ = mc
    se = lambda p: 5 * math.sqrt(p * (1 - p) / N_MC)  # noqa: E731
    assert abs(s.is_placeholder.mean() - world.placeholder_rate) < se(world.placeholder_rate)
    assert abs(s.is_misaligned.mean() - world.misaligned_rate) < se(world.misaligned_rate)
    z = s.latent[s.latent >= 0]
    np.testing.assert_allclose(np.bincount(z, minlength=world.n_latents) / z.size, world.p_z, atol=0.003)


def test_true_log_ratio_matches_empirical_pmi(world, mc):
    """log p̂(y|c)/p̂(y) from sampler counts agrees with the closed form on every well-populated cell."""
    _, _, counts = mc
    n_c = counts.sum(axis=1, keepdims=True)  # (C, 1)
    n_y = counts.sum(axis=0, keepdims=True)  # (1, Y)
    ok = counts >= 50
    with np.errstate(divide="ignore"):
        emp = np.log((counts / n_c) / (n_y / N_MC))[ok]  # (C, Y) -> (cells,)
        se = np.sqrt(1.0 / counts + 1.0 / n_y)[ok]  # delta-method standard error of the log ratio
    rows, cols = np.nonzero(ok)
    true = world.true_log_ratio(np.where(rows == world.n_latents, PLACEHOLDER, rows), cols)
    assert ok.sum() > 300  # aligned cells and many misaligned-only cells are covered
    assert np.all(np.abs(emp - true) < 5 * se + 1e-3), np.max(np.abs(emp - true) / se)
    # cells a latent never emits (ratio 1 - alpha) are among them: the misalignment mixture is checked too
    assert np.isclose(true, math.log(1 - world.alpha)).sum() > 100


def test_kls_are_expected_log_ratios_under_the_sampler(world, mc):
    """KL(p(y|x)||p(y)) = E_{y~p(y|c)} log r and KL(p(x|y)||p(x)) = E_{c~p(c|y)} log r, with samples."""
    s, c, _ = mc
    log_r = world.true_log_ratio(s.latent, s.caption)
    for rows, table in ((c, world.kl_image_table), (s.caption, world.kl_text_table)):
        for k in range(table.size):
            vals = log_r[rows == k]
            if vals.size >= 1000:
                assert abs(vals.mean() - table[k]) < 5 * vals.std() / math.sqrt(vals.size) + 1e-9, k


def _slow_truth(world: World):
    """Explicit loops over image classes and captions, from the caption strings and the model's definition."""
    Z, m, q = world.n_latents, world.misaligned_rate, world.placeholder_rate
    vocab = sorted({world.caption_of(z, t.name) for z in range(Z) for t in world.templates})
    p_yz = {(z, y): 0.0 for z in range(Z) for y in vocab}
    for z in range(Z):
        for t in world.templates:
            p_yz[z, world.caption_of(z, t.name)] += t.prob
    p_y = {y: sum(world.prior[z] * p_yz[z, y] for z in range(Z)) for y in vocab}
    classes = list(range(Z)) + [PLACEHOLDER]
    p_c = {c: (q if c == PLACEHOLDER else (1 - q) * world.prior[c]) for c in classes}
    alpha = (1 - m - q) / (1 - q)

    def p_y_given_c(c, y):
        return p_y[y] if c == PLACEHOLDER else alpha * p_yz[c, y] + (1 - alpha) * p_y[y]

    def log_r(c, y):
        return math.log(p_y_given_c(c, y) / p_y[y])

    kl_img, klr_img, kl_txt, klr_txt = {}, {}, {}, {}
    for c in classes:
        kl_img[c] = sum(p_y_given_c(c, y) * log_r(c, y) for y in vocab if p_y_given_c(c, y) > 0)
        klr_img[c] = sum(p_y[y] * -log_r(c, y) for y in vocab)
    for y in vocab:
        kl_txt[y] = sum(p_c[c] * math.exp(log_r(c, y)) * log_r(c, y) for c in classes)
        klr_txt[y] = sum(p_c[c] * -log_r(c, y) for c in classes)
    return classes, vocab, log_r, kl_img, klr_img, kl_txt, klr_txt


def test_exact_functions_match_slow_double_loop(world):
    classes, vocab, log_r, kl_img, klr_img, kl_txt, klr_txt = _slow_truth(world)
    cc, yy = np.meshgrid(classes, np.arange(len(vocab)), indexing="ij")
    y_index = world.caption_index(vocab)
    got = world.true_log_ratio(cc.ravel(), y_index[yy.ravel()])
    want = np.array([log_r(c, vocab[y]) for c, y in zip(cc.ravel(), yy.ravel())])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(world.kl_image(classes), [kl_img[c] for c in classes], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(world.klr_image(classes), [klr_img[c] for c in classes], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(world.kl_text(y_index), [kl_txt[y] for y in vocab], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(world.klr_text(y_index), [klr_txt[y] for y in vocab], rtol=1e-12, atol=1e-12)


def test_kl_signs_and_zeros(world):
    z = np.arange(world.n_latents)
    y = np.arange(len(world.vocabulary))
    generic = world.caption_index(["an image"])
    assert np.all(world.kl_image(z) > 0.5) and np.all(world.klr_image(z) > 0.5)
    assert world.kl_image(PLACEHOLDER) == 0.0 and world.klr_image(PLACEHOLDER) == 0.0
    assert np.all(world.true_log_ratio(PLACEHOLDER, y) == 0.0)
    assert np.all(world.kl_text(y) >= -1e-12) and np.all(world.klr_text(y) >= -1e-12)
    assert abs(world.kl_text(generic)[0]) < 1e-12 and abs(world.klr_text(generic)[0]) < 1e-12
    np.testing.assert_allclose(world.true_log_ratio(z, np.repeat(generic, z.size)), 0.0, atol=1e-12)
    others = np.setdiff1d(y, generic)
    assert np.all(world.kl_text(others) > 0.1)
    # specificity: the full caption of a latent moves the image side more than its shape-only caption
    zi = world.latent_index("square", "blue", "small")
    full, shape = world.caption_index([world.caption_of(zi, "full"), world.caption_of(zi, "shape")])
    assert world.kl_text(full) > world.kl_text(shape)
    with pytest.raises(ValueError):
        world.kl_image(world.n_latents)


def test_labels_and_domains(world):
    z = np.array(
        [world.latent_index("triangle", "red", "small"), world.latent_index("cross", "blue", "large"), PLACEHOLDER]
    )
    np.testing.assert_array_equal(world.class_label(z), [world.class_names.index("triangle"), 3, -1])
    np.testing.assert_array_equal(world.in_domain(z, "red"), [True, False, False])
    np.testing.assert_array_equal(world.in_domain(z, "large"), [False, True, False])
    assert world.domain_mask("red").sum() == len(world.shapes) * len(world.sizes)


def _coloured(img: np.ndarray) -> np.ndarray:
    """Pixels of the (saturated) shape; the background and placeholder are grey."""
    return (img.max(axis=2).astype(int) - img.min(axis=2)) > 60


def test_sample_labelled_domain_and_rendering(world):
    imgs = world.sample_labelled(40, np.random.default_rng(3), domain="red")
    assert imgs.images.shape == (40, 64, 64, 3) and imgs.images.dtype == np.uint8
    assert all(world.latent_names(z)["colour"] == "red" for z in imgs.latent)
    np.testing.assert_array_equal(imgs.label, world.class_label(imgs.latent))
    again = world.sample_labelled(40, np.random.default_rng(3), domain="red")
    np.testing.assert_array_equal(again.images, imgs.images)
    for img in imgs.images:  # the red shape is fully inside the image
        mask = _coloured(img)
        assert mask.any() and not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        assert img[mask][:, 0].mean() > 150  # red


def test_sizes_differ_visibly_and_placeholders_are_grey(world):
    rng = np.random.default_rng(0)
    for shape in world.shapes:
        small = _coloured(world.render(world.latent_index(shape, "green", "small"), rng)).sum()
        large = _coloured(world.render(world.latent_index(shape, "green", "large"), rng)).sum()
        assert 3.0 < large / small < 5.5, (shape, small, large)
    a, b = world.render(PLACEHOLDER, rng), world.render(PLACEHOLDER, rng)
    assert not _coloured(a).any() and not np.array_equal(a, b)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 10  # same icon, only nuisance differs
