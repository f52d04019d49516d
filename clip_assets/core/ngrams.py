"""Caption N-gram statistics per KL decile (PAPER.md section 2, last paragraph). Pure Python / numpy.

Pipeline: split the samples into 10 equal-size bins by KL (`decile_bins`), count 1/2/3-grams of the lower-cased,
word-tokenised captions padded with <s> and </s> (`tokenize`, `ngrams`), and report per bin the share of all
n-gram occurrences covered by the bin's top-K most frequent n-grams (`topk_coverage`), plus the Pearson
correlation of KL with caption length, vocabulary size and type-token ratio (`text_stat_correlations`).
Low-KL (generic) bins are dominated by few n-grams: their coverage is high.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "BOS",
    "EOS",
    "tokenize",
    "ngrams",
    "decile_bins",
    "topk_coverage",
    "caption_stats",
    "text_stat_correlations",
]

BOS = "<s>"
EOS = "</s>"
_WORD = re.compile(r"\w+")


def tokenize(caption) -> list[str]:
    """Lower-cased word tokens: re.findall(r"\\w+", caption.lower()) with Python's Unicode \\w.

    \\w+ = maximal runs of Unicode letters, digits and underscore; everything else (spaces, punctuation,
    apostrophes, hyphens, emoji) separates tokens: "Don't stop-motion!" -> ["don", "t", "stop", "motion"].
    None (a missing caption) gives []; bytes are decoded as UTF-8 with replacement.
    """
    if caption is None:
        return []
    if isinstance(caption, bytes):
        caption = caption.decode("utf-8", errors="replace")
    return _WORD.findall(str(caption).lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """n-grams of tokens padded with n-1 BOS on the left and n-1 EOS on the right (NLTK's pad_both_ends).

    n=1 is therefore unpadded; ["a", "b"], n=2 -> (<s>,a), (a,b), (b,</s>); an empty caption has no unigrams,
    one bigram (<s>,</s>) and two trigrams (<s>,<s>,</s>), (<s>,</s>,</s>). len = len(tokens) + n - 1
    (for n >= 2 or a non-empty caption).
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seq = [BOS] * (n - 1) + list(tokens) + [EOS] * (n - 1)
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def decile_bins(values, n_bins: int = 10) -> np.ndarray:
    """Equal-size bins by value: int array (M,) with 0 = lowest values ... n_bins-1 = highest.

    Rows are ordered by (value, index) (a stable sort, so ties are broken by position) and the r-th row of that
    order (0-based) goes to bin floor(r * n_bins / M'): bin sizes differ by at most one, the larger bins being
    the later ones. NaN values get bin -1 and are left out (M' = number of non-NaN values).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}")
    n_bins = int(n_bins)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    out = np.full(x.shape[0], -1, dtype=np.int64)
    idx = np.flatnonzero(~np.isnan(x))
    order = idx[np.argsort(x[idx], kind="stable")]  # non-NaN row ids by (value, index)
    m = order.shape[0]
    out[order] = (np.arange(m) * n_bins) // max(m, 1)
    return out


def topk_coverage(
    captions: Sequence,
    bins,
    ns: Iterable[int] = (1, 2, 3),
    ks: Iterable[int] = (50, 100, 500, 1000),
) -> list[dict]:
    """Long-form rows {"bin", "n", "k", "coverage", "occurrences", "distinct"}, one per (bin, n, k).

    coverage = (sum of the counts of the bin's k most frequent n-grams) / (all n-gram occurrences in the bin);
    it does not depend on how ties in frequency are broken. A bin with fewer than k distinct n-grams has
    coverage 1; a bin with no n-gram occurrence has coverage NaN. Bins are the distinct values of `bins`
    other than -1 (see `decile_bins`), in ascending order.
    """
    b = np.asarray(bins)
    if b.shape != (len(captions),):
        raise ValueError(f"bins must have shape ({len(captions)},), got {b.shape}")
    ns = [int(n) for n in ns]
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    tokens = [tokenize(c) for c in captions]
    rows: list[dict] = []
    for bin_id in sorted(int(v) for v in np.unique(b) if int(v) != -1):
        members = np.flatnonzero(b == bin_id)
        for n in ns:
            counts: Counter = Counter()
            for i in members:
                counts.update(ngrams(tokens[i], n))
            total = sum(counts.values())
            freqs = sorted(counts.values(), reverse=True)
            cum = np.cumsum(freqs) if freqs else np.zeros(0, dtype=np.int64)
            for k in ks:
                covered = int(cum[min(k, len(freqs)) - 1]) if freqs else 0
                rows.append({
                    "bin": bin_id, "n": n, "k": k,
                    "coverage": covered / total if total else float("nan"),
                    "occurrences": total, "distinct": len(counts),
                })
    return rows


def caption_stats(captions: Sequence) -> dict[str, np.ndarray]:
    """Per caption: length (tokens), vocab_size (distinct tokens) and type_token_ratio = vocab_size / length
    (NaN for an empty caption). float64 arrays (M,)."""
    toks = [tokenize(c) for c in captions]
    length = np.array([len(t) for t in toks], dtype=np.float64)
    vocab = np.array([len(set(t)) for t in toks], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ttr = np.where(length > 0, vocab / np.maximum(length, 1), np.nan)
    return {"length": length, "vocab_size": vocab, "type_token_ratio": ttr}


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    den = np.sqrt((dx @ dx) * (dy @ dy))
    return float(dx @ dy / den) if den > 0 else float("nan")


def text_stat_correlations(captions: Sequence, kl) -> dict[str, float]:
    """Pearson r of KL with caption length, vocabulary size and type-token ratio (`caption_stats`):
    {"length", "vocab_size", "type_token_ratio"}. Each r uses the rows where both sides are finite (empty
    captions drop out of the TTR one); fewer than 2 such rows or a constant side gives NaN."""
    k = np.asarray(kl, dtype=np.float64)
    if k.shape != (len(captions),):
        raise ValueError(f"kl must have shape ({len(captions)},), got {k.shape}")
    st = caption_stats(captions)
    return {name: _pearson(k, v) for name, v in st.items()}
