"""Caption N-gram statistics on hand examples and against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from clip_assets.core.ngrams import (
    caption_stats,
    decile_bins,
    ngrams,
    text_stat_correlations,
    tokenize,
    topk_coverage,
)


def test_tokenize():
    assert tokenize("A Red-Circle, don't STOP!  x_1 é") == ["a", "red", "circle", "don", "t", "stop", "x_1", "é"]
    assert tokenize(None) == [] and tokenize("") == [] and tokenize("...") == []
    assert tokenize(b"Caf\xc3\xa9") == ["café"]


def test_ngrams_padding():
    assert ngrams(["a", "b"], 1) == [("a",), ("b",)]
    assert ngrams(["a", "b"], 2) == [("<s>", "a"), ("a", "b"), ("b", "</s>")]
    assert ngrams(["a"], 3) == [("<s>", "<s>", "a"), ("<s>", "a", "</s>"), ("a", "</s>", "</s>")]
    assert ngrams([], 1) == [] and ngrams([], 2) == [("<s>", "</s>")]
    with pytest.raises(ValueError):
        ngrams(["a"], 0)


def test_decile_bins_equal_size_stable_ties():
    b = decile_bins(np.arange(25.0)[::-1], n_bins=10)  # 25 rows -> sizes 2 or 3
    sizes = np.bincount(b, minlength=10)
    assert sizes.sum() == 25 and sizes.max() - sizes.min() <= 1
    assert b[-1] == 0 and b[0] == 9  # lowest value in bin 0
    ties = decile_bins(np.zeros(10), n_bins=5)  # all equal: order by index
    assert ties.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    withnan = decile_bins(np.array([3.0, np.nan, 1.0, 2.0]), n_bins=3)
    assert withnan.tolist() == [2, -1, 0, 1]
    assert decile_bins(np.array([]), 10).shape == (0,)


def test_topk_coverage_hand_example():
    caps = ["a cat", "A cat.", "a dog", "red car", "blue boat"]
    bins = np.array([0, 0, 0, 1, 1])
    rows = topk_coverage(caps, bins, ns=(1, 2), ks=(1, 2, 3, 50))
    cov = {(r["bin"], r["n"], r["k"]): r["coverage"] for r in rows}
    assert len(rows) == 2 * 2 * 4
    # bin 0 unigrams: a:3 cat:2 dog:1 (6 occurrences)
    assert cov[0, 1, 1] == pytest.approx(3 / 6) and cov[0, 1, 2] == pytest.approx(5 / 6)
    assert cov[0, 1, 3] == 1.0 and cov[0, 1, 50] == 1.0
    # bin 0 bigrams: (<s>,a):3 (a,cat):2 (cat,</s>):2 (a,dog):1 (dog,</s>):1 (9 occurrences)
    assert cov[0, 2, 1] == pytest.approx(3 / 9) and cov[0, 2, 2] == pytest.approx(5 / 9)
    assert cov[0, 2, 3] == pytest.approx(7 / 9)
    # bin 1: every n-gram once
    assert cov[1, 1, 1] == pytest.approx(1 / 4) and cov[1, 2, 2] == pytest.approx(2 / 6)
    occ = {(r["bin"], r["n"]): (r["occurrences"], r["distinct"]) for r in rows}
    assert occ[0, 1] == (6, 3) and occ[0, 2] == (9, 5) and occ[1, 2] == (6, 6)


def test_topk_coverage_empty_bin_text():
    rows = topk_coverage(["", None], np.array([0, 0]), ns=(1,), ks=(5,))
    assert len(rows) == 1 and np.isnan(rows[0]["coverage"])


def test_text_stat_correlations_vs_numpy():
    rng = np.random.default_rng(0)
    words = ["a", "red", "circle", "image", "large", "blue", "square", "the"]
    caps = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(200)]
    kl = rng.random(200) + np.array([len(c.split()) for c in caps]) * 0.1
    r = text_stat_correlations(caps, kl)
    st = caption_stats(caps)
    for key in ("length", "vocab_size", "type_token_ratio"):
        assert r[key] == pytest.approx(np.corrcoef(kl, st[key])[0, 1], abs=1e-12)
    assert r["length"] > 0.3
    toks = [c.split() for c in caps]
    np.testing.assert_array_equal(st["vocab_size"], [len(set(t)) for t in toks])
    np.testing.assert_allclose(st["type_token_ratio"], [len(set(t)) / len(t) for t in toks])


def test_text_stat_correlations_skips_empty_for_ttr():
    caps = ["a b", "a a a", "", "c d e f"]
    kl = np.array([1.0, 2.0, 5.0, 3.0])
    r = text_stat_correlations(caps, kl)
    st = caption_stats(caps)
    assert np.isnan(st["type_token_ratio"][2])
    keep = [0, 1, 3]
    assert r["type_token_ratio"] == pytest.approx(np.corrcoef(kl[keep], st["type_token_ratio"][keep])[0, 1])
    assert r["length"] == pytest.approx(np.corrcoef(kl, st["length"])[0, 1])
