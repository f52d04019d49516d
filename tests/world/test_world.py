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
    np.testing.assert_allclose(world.p_y_aligned.sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(world.p_y_noise.sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(world.noise_template_probs.sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(world.p_y.sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(world.p_c.sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(world.p_y_given_c.sum(axis=1), 1.0, atol=1e-12)  # sum_y p(y|x) = 1
    r = np.exp(world.log_ratio_table)
    np.testing.assert_allclose(world.p_c @ r, 1.0, atol=1e-12)  # sum_c p(c) r(c, y) = 1 for every y
    np.testing.assert_allclose(world.p_c @ world.p_y_given_c, world.p_y, atol=1e-15)  # sum_c p(c) p(y|c) = p(y)
    m, q, g = world.misaligned_rate, world.placeholder_rate, world.noise_generic_weight
    generic = world.caption_index(["an image"])[0]
    b = (1 - g) * world.p_y_aligned + g * (np.arange(len(world.vocabulary)) == generic)
    np.testing.assert_allclose(world.p_y_noise, b, atol=1e-15)
    np.testing.assert_allclose(world.p_y, (1 - m - q) * world.p_y_aligned + (m + q) * b, atol=1e-15)
    np.testing.assert_allclose(world.p_y_given_c[-1], b, atol=1e-15)  # placeholder captions follow b
    # b is p_aligned under the noise template weights w^b (how the sampler draws it)
    b_from_templates = np.zeros(len(world.vocabulary))
    for t, w in enumerate(world.noise_template_probs):
        np.add.at(b_from_templates, world.caption_table[t], w * world.p_z)
    np.testing.assert_allclose(b_from_templates, b, atol=1e-15)


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
    d = world.to_dict()
    assert d["noise_generic_weight"] == world.noise_generic_weight == 0.7
    again = World.from_dict(json.loads(json.dumps(d)))
    assert again == world
    np.testing.assert_array_equal(again.log_ratio_table, world.log_ratio_table)
    # a world.json written before the parameter existed describes the old world (noise captions from p_aligned)
    legacy = {k: v for k, v in d.items() if k != "noise_generic_weight"}
    assert World.from_dict(legacy).noise_generic_weight == 0.0


@pytest.mark.parametrize(
    "change",
    [
        {"misaligned_rate": 0.6, "placeholder_rate": 0.4},
        {"prior": (1.0,) * 32},
        {"shapes": ("circle", "hexagon", "square", "cross")},
        {"domains": {"red": {"colour": "purple"}}},
        {"noise_generic_weight": 1.5},
        {"noise_generic_weight": -0.1},
        {"templates": [{"name": "shape", "text": "a photo of a {shape}", "prob": 1.0}]},  # no "an image" template
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
    ok = counts >= 20  # misaligned-only cells are thin now that most noise captions are "an image"
    with np.errstate(divide="ignore"):
        emp = np.log((counts / n_c) / (n_y / N_MC))[ok]  # (C, Y) -> (cells,)
        se = np.sqrt(1.0 / counts + 1.0 / n_y)[ok]  # delta-method standard error of the log ratio
    rows, cols = np.nonzero(ok)
    true = world.true_log_ratio(np.where(rows == world.n_latents, PLACEHOLDER, rows), cols)
    assert ok.sum() > 300  # aligned cells and many misaligned-only cells are covered
    assert np.all(np.abs(emp - true) < 5 * se + 1e-3), np.max(np.abs(emp - true) / se)
    # cells a latent never emits (r = m b(y) / ((1-q) p(y))) are among them: the misalignment mixture is checked
    never = world.p_y_given_z[rows[rows < world.n_latents], cols[rows < world.n_latents]] == 0
    assert never.sum() > 100
    # and so is the placeholder row, whose log ratio is no longer 0 (b != p(y)): "an image" up, specific ones down
    placeholder = rows == world.n_latents
    assert placeholder.sum() > 10
    assert np.all(np.abs(true[placeholder]) > 0.3)


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
    Z, m, q, g = world.n_latents, world.misaligned_rate, world.placeholder_rate, world.noise_generic_weight
    vocab = sorted({world.caption_of(z, t.name) for z in range(Z) for t in world.templates})
    p_yz = {(z, y): 0.0 for z in range(Z) for y in vocab}
    for z in range(Z):
        for t in world.templates:
            p_yz[z, world.caption_of(z, t.name)] += t.prob
    p_al = {y: sum(world.prior[z] * p_yz[z, y] for z in range(Z)) for y in vocab}
    b = {y: g * (y == "an image") + (1 - g) * p_al[y] for y in vocab}
    p_y = {y: (1 - m - q) * p_al[y] + (m + q) * b[y] for y in vocab}
    classes = list(range(Z)) + [PLACEHOLDER]
    p_c = {c: (q if c == PLACEHOLDER else (1 - q) * world.prior[c]) for c in classes}

    def p_y_given_c(c, y):
        return b[y] if c == PLACEHOLDER else ((1 - m - q) * p_yz[c, y] + m * b[y]) / (1 - q)

    def log_r(c, y):
        return math.log(p_y_given_c(c, y) / p_y[y])

    kl_img, klr_img, kl_txt, klr_txt = {}, {}, {}, {}
    for c in classes:
        kl_img[c] = sum(p_y_given_c(c, y) * log_r(c, y) for y in vocab if p_y_given_c(c, y) > 0)
        klr_img[c] = sum(p_y[y] * -log_r(c, y) for y in vocab)
    for y in vocab:
        assert abs(sum(p_c[c] * math.exp(log_r(c, y)) for c in classes) - 1.0) < 1e-12  # p(x|y)/p(x) is r too
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
    # the placeholder's captions follow b, not p(y): it moves the caption distribution towards "an image"
    assert world.kl_image(PLACEHOLDER) > 0.1 and world.klr_image(PLACEHOLDER) > 0.1
    assert world.true_log_ratio(PLACEHOLDER, generic)[0] > 0.5
    assert np.all(world.true_log_ratio(PLACEHOLDER, np.setdiff1d(y, generic)) < -0.5)
    for table in (world.kl_image_table, world.klr_image_table, world.kl_text_table, world.klr_text_table):
        assert np.all(table >= -1e-12)
    # the generic caption is emitted about equally by every image class: near-zero text KL, far below the rest
    others = np.setdiff1d(y, generic)
    assert world.kl_text(generic)[0] < 0.1 and world.klr_text(generic)[0] < 0.1
    assert world.kl_text(generic)[0] < 0.25 * world.kl_text(others).min()
    assert np.all(world.kl_text(others) > 0.3)
    np.testing.assert_allclose(world.true_log_ratio(z, np.repeat(generic, z.size)), -0.1, atol=0.1)
    # specificity: the full caption of a latent moves the image side more than its shape-only caption
    zi = world.latent_index("square", "blue", "small")
    full, shape = world.caption_index([world.caption_of(zi, "full"), world.caption_of(zi, "shape")])
    assert world.kl_text(full) > world.kl_text(shape)
    with pytest.raises(ValueError):
        world.kl_image(world.n_latents)


def _old_tables(world: World):
    """The tables of the world before noise captions (noise captions from p_aligned), in their original form:
    p(y|x) = alpha p(y|z) + (1-alpha) p(y), alpha = (1-m-q)/(1-q), and r = 1 for the placeholder."""
    m, q = world.misaligned_rate, world.placeholder_rate
    alpha = (1 - m - q) / (1 - q)
    p_y = world.p_z @ world.p_y_given_z
    p_y_given_c = np.vstack([alpha * world.p_y_given_z + (1 - alpha) * p_y, p_y])
    log_r = np.vstack([np.log(alpha * world.p_y_given_z / p_y + 1 - alpha), np.zeros(p_y.size)])
    p_c = np.append((1 - q) * world.p_z, q)
    kl_image = (p_y_given_c * log_r).sum(axis=1)
    klr_image = -(log_r @ p_y)
    kl_text = (p_c[:, None] * np.exp(log_r) * log_r).sum(axis=0)
    klr_text = -(p_c @ log_r)
    return p_y, p_y_given_c, log_r, kl_image, klr_image, kl_text, klr_text


def _old_sample_pairs(world: World, n: int, rng: np.random.Generator):
    """The sampler of the world before noise captions, verbatim."""
    m, q = world.misaligned_rate, world.placeholder_rate
    kind = rng.choice(3, size=n, p=[1.0 - m - q, m, q])
    z_image = rng.choice(world.n_latents, size=n, p=world.p_z)
    z_caption = rng.choice(world.n_latents, size=n, p=world.p_z)
    template = rng.choice(len(world.templates), size=n, p=[t.prob for t in world.templates])
    caption = world.caption_table[template, np.where(kind == 0, z_image, z_caption)]
    return np.where(kind == 2, PLACEHOLDER, z_image), template, caption, kind == 1, kind == 2


def test_zero_noise_generic_weight_reproduces_the_old_world(world):
    old = World.from_dict(world.to_dict() | {"noise_generic_weight": 0.0})
    new = (old.p_y, old.p_y_given_c, old.log_ratio_table, old.kl_image_table, old.klr_image_table,
           old.kl_text_table, old.klr_text_table)  # fmt: skip
    for got, want in zip(new, _old_tables(old)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(old.p_y_noise, old.p_y_aligned)
    np.testing.assert_allclose(old.true_log_ratio(PLACEHOLDER, np.arange(len(old.vocabulary))), 0.0, atol=1e-14)
    # the sampler makes the same draws, number for number, and leaves the generator in the same state
    rng_new, rng_old = np.random.default_rng(99), np.random.default_rng(99)
    s = old.sample_pairs(20_000, rng_new)
    want = _old_sample_pairs(old, 20_000, rng_old)
    for got, w in zip((s.latent, s.template, s.caption, s.is_misaligned, s.is_placeholder), want):
        np.testing.assert_array_equal(got, w)
    assert rng_new.random() == rng_old.random()
    # and the default world does differ
    assert not np.allclose(world.kl_text_table, old.kl_text_table)


def test_text_kl_separates_aligned_from_noise_pairs(world, mc):
    """Aligned pairs carry specific captions, misaligned and placeholder pairs mostly "an image": the true text KL
    of a pair's caption tells them apart, so text-KL curation keeps mostly aligned pairs."""
    aligned = world.p_y_aligned @ world.kl_text_table  # E[KL_text(y)] over captions of aligned pairs
    noise = world.p_y_noise @ world.kl_text_table  # ... over captions of misaligned and placeholder pairs
    assert aligned > 1.5 and aligned > 2.5 * noise, (aligned, noise)
    s, _, _ = mc
    kl = world.kl_text(s.caption)
    is_noise = s.is_misaligned | s.is_placeholder
    assert abs(kl[~is_noise].mean() - aligned) < 0.01 and abs(kl[is_noise].mean() - noise) < 0.02
    # keeping the top quarter by true text KL (ties kept) raises the share of aligned pairs well above the pool's
    threshold = np.sort(kl)[::-1][int(0.25 * kl.size)]
    keep = kl >= threshold
    assert (~is_noise[keep]).mean() > (~is_noise).mean() + 0.07
    # in the old world (noise captions from p_aligned) no caption-only statistic can do that
    old = World.from_dict(world.to_dict() | {"noise_generic_weight": 0.0})
    assert abs(old.p_y_aligned @ old.kl_text_table - old.p_y_noise @ old.kl_text_table) < 1e-12


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
