import numpy as np

from clip_assets.core.calibration import auc, pearson, spearman


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, size=200).astype(float)  # many ties
    y = rng.random(200) < 0.3
    pos, neg = s[y], s[~y]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    assert abs(auc(s, y) - brute) < 1e-12
    assert auc(np.arange(4.0), np.array([0, 0, 1, 1], bool)) == 1.0


def test_spearman_is_rank_pearson_and_ignores_nonfinite():
    x = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    y = np.array([10.0, 20.0, 25.0, 1000.0, 5.0])
    assert spearman(x, y) == 1.0
    assert pearson(x[:4], y[:4]) < 1.0
    assert abs(spearman([1, 2, 3], [3, 2, 1]) + 1.0) < 1e-12
