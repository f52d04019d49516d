"""The curation engine (clip_assets.curate.filters): filter configuration, DuckDB threshold semantics against the
reference (clip_assets.core.selection) and a brute force, the deduplicated pool and its subsets."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets.core.selection import keep_fraction_threshold
from clip_assets.curate import filters as F
from clip_assets.io import catalog
from score_tables import uid, write_scores


# ------------------------------------------------------------------------------------------- configuration
def test_package_default_filters():
    specs = F.load_filters()
    by = {s.name: s for s in specs}
    assert list(by) == ["no_filter", "kl_text", "kl_text_reverse", "kl_image", "clip_score", "laion",
                        "kl_text_and_clip_score", "kl_text_and_laion"]
    assert (by["kl_text"].column, by["kl_text"].keep_fraction) == ("text_kl", 0.25)
    assert (by["kl_text_reverse"].column, by["kl_image"].column) == ("text_klr", "image_kl")
    assert (by["clip_score"].column, by["clip_score"].keep_fraction) == ("clip_score", 0.30)
    assert (by["laion"].kind, by["laion"].column, by["laion"].threshold) == ("threshold", "clip_score", 0.28)
    assert by["no_filter"].kind == "all"
    assert by["kl_text_and_clip_score"].all_of == ("kl_text", "clip_score")
    # the stored JSON form reads back to the same specs (curation_report relies on it)
    assert F.filters_from_json(F.filters_to_json(specs)) == specs


GOOD = ("filters:\n  - {name: a, column: text_kl, keep_fraction: 0.25}\n"
        "  - {name: b, column: clip_score, threshold: 0.3}\n")
BAD_CONFIGS = {
    "unknown column": (GOOD + "  - {name: c, column: text_kll, keep_fraction: 0.5}\n",
                       ["filters[2]", "'c'", "'column'", "'text_kll'"]),
    "f above 1": ("filters:\n  - {name: a, column: text_kl, keep_fraction: 1.5}\n",
                  ["filters[0]", "'keep_fraction'", "[0, 1]", "1.5"]),
    "f negative": ("filters:\n  - {name: a, column: text_kl, keep_fraction: -0.1}\n", ["'keep_fraction'", "-0.1"]),
    "f as text": ("filters:\n  - {name: a, column: text_kl, keep_fraction: '0.25'}\n", ["'keep_fraction'", "'0.25'"]),
    "f NaN": ("filters:\n  - {name: a, column: text_kl, keep_fraction: .nan}\n", ["'keep_fraction'", "nan"]),
    "unknown filter in all_of": (GOOD + "  - {name: c, all_of: [a, zz]}\n", ["filters[2]", "'all_of'", "'zz'"]),
    "all_of of one": (GOOD + "  - {name: c, all_of: [a]}\n", ["'all_of'", "at least two"]),
    "nested all_of": (GOOD + "  - {name: c, all_of: [a, b]}\n  - {name: d, all_of: [a, c]}\n",
                      ["filters[3]", "'c'", "itself an all_of"]),
    "duplicate names": (GOOD + "  - {name: a, keep: all}\n", ["filters[2]", "duplicate", "'a'", "filters[0]"]),
    "duplicate yaml key": ("filters:\n  - name: a\n    column: text_kl\n    keep_fraction: 0.2\n"
                           "    keep_fraction: 0.3\n", ["'keep_fraction'", "twice", "line 5"]),
    "typo in key": ("filters:\n  - {name: a, column: text_kl, keep_fracton: 0.25}\n",
                    ["unknown key", "'keep_fracton'"]),
    "two rules": ("filters:\n  - {name: a, column: text_kl, keep_fraction: 0.2, threshold: 1}\n",
                  ["exactly one", "keep_fraction, threshold"]),
    "no rule": ("filters:\n  - {name: a, column: text_kl}\n", ["exactly one", "none"]),
    "missing column": ("filters:\n  - {name: a, keep_fraction: 0.2}\n", ["'column' is required"]),
    "column with keep all": ("filters:\n  - {name: a, column: text_kl, keep: all}\n", ["'column'", "not used"]),
    "keep not all": ("filters:\n  - {name: a, keep: some}\n", ["'keep'", "'some'"]),
    "bad name": ("filters:\n  - {name: My Filter, keep: all}\n", ["'name'", "'My Filter'"]),
    "threshold inf": ("filters:\n  - {name: a, column: clip_score, threshold: .inf}\n", ["'threshold'", "inf"]),
    "no filters": ("filters: []\n", ["'filters'", "non-empty"]),
    "unknown top key": ("filter:\n  - {name: a, keep: all}\n", ["unknown top-level key", "'filter'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_filter_config_fails_at_load_naming_the_key(tmp_path, case):
    text, needles = BAD_CONFIGS[case]
    path = tmp_path / "filters.yaml"
    path.write_text(text)
    with pytest.raises(F.FilterConfigError) as e:
        F.load_filters(path)
    msg = str(e.value)
    assert str(path) in msg
    for needle in needles:
        assert needle in msg, f"{case}: {needle!r} not in {msg!r}"


def test_good_config_loads(tmp_path):
    path = tmp_path / "filters.yaml"
    path.write_text(GOOD + "  - {name: c, all_of: [a, b], description: both}\n")
    specs = F.load_filters(path)
    assert [s.rule for s in specs] == ["top 25% by text_kl", "clip_score >= 0.3", "a AND b"]


# ------------------------------------------------------------------------------ threshold semantics in DuckDB
def brute_force(values: np.ndarray, f: float) -> tuple[float, np.ndarray]:
    """Sort descending, take the k-th value (k = floor(f*N) exactly), keep >= it; NaN never kept."""
    n = len(values)
    k = math.floor(Fraction(repr(float(f))) * n)
    if n == 0:
        return float("nan"), np.zeros(0, bool)
    if k == 0:
        return float("inf"), np.zeros(n, bool)
    numbers = sorted((v for v in values.tolist() if not math.isnan(v)), reverse=True)
    if not numbers:
        return float("nan"), np.zeros(n, bool)
    t = numbers[min(k, len(numbers)) - 1]
    return t, np.array([(not math.isnan(v)) and v >= t for v in values.tolist()], bool)


def _values_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "empty": np.zeros(0),
        "one": np.array([0.5]),
        "ties": np.array([3, 1, 2, 2, 2, 5, 2, 0, 2, 1], float),
        "all_equal": np.full(9, 1.25),
        "nan_and_inf": np.array([np.nan, 1.0, np.inf, -np.inf, 2.0, np.nan, 2.0, 0.5]),
        "all_nan": np.full(5, np.nan),
        "random_ties": np.round(rng.normal(size=203), 1),
        "random": rng.normal(size=100),
    }


FRACTIONS = [0.0, 0.01, 0.1, 0.25, 0.29, 0.3, 0.5, 0.999, 1.0]


def _pool(tmp_path: Path, values: np.ndarray, null_at: tuple[int, ...] = ()) -> F.PoolInfo:
    n = len(values)
    arr = pa.array([None if i in null_at else float(v) for i, v in enumerate(values)], pa.float64())
    t = pa.table({"uid": pa.array([uid(i) for i in range(n)], pa.string()), "drop": pa.array(["d"] * n, pa.string()),
                  "text_kl": arr, "copies": pa.array([1] * n, pa.int64())})
    path = tmp_path / "pool.parquet"
    pq.write_table(t, path)
    return F.PoolInfo(path, n, n, ["d"], ["m1"], ["r1"], t.column_names)


@pytest.mark.parametrize("name", sorted(_values_cases()))
def test_duckdb_threshold_matches_reference_and_brute_force(tmp_path, name):
    values = _values_cases()[name]
    pool = _pool(tmp_path, values)
    specs = [F.FilterSpec(f"f{i}", "keep_fraction", column="text_kl", keep_fraction=f) for i, f in enumerate(FRACTIONS)]
    with catalog.scratch(threads=1) as con:
        results = F.run_filters(con, pool, specs, tmp_path / "out")
    for f, r in zip(FRACTIONS, results):
        t_ref, keep_ref = keep_fraction_threshold(values, f)
        t_bf, keep_bf = brute_force(values, f)
        got = pq.read_table(r.path).to_pydict()
        order = np.argsort(got["uid"])  # written in uid order; map back to input order
        idx = {u: i for i, u in enumerate(uid(i) for i in range(len(values)))}
        keep = np.zeros(len(values), bool)
        for u, k in zip(got["uid"], got["keep"]):
            keep[idx[u]] = k
        assert len(order) == len(values)
        for t_other in (t_ref, t_bf):
            assert (math.isnan(r.threshold) and math.isnan(t_other)) or r.threshold == t_other, (name, f)
        assert keep.tolist() == keep_ref.tolist() == keep_bf.tolist(), (name, f)
        assert r.kept == int(keep_ref.sum()) and r.kept + r.dropped == r.pool == len(values)
        for k_, reason in zip(got["keep"], got["reason"]):
            assert (reason is None) == bool(k_)


def test_null_counts_in_pool_and_is_never_kept(tmp_path):
    values = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0])
    pool = _pool(tmp_path, values, null_at=(0, 1))  # the two largest are NULL: N stays 8
    with catalog.scratch(threads=1) as con:
        (r,) = F.run_filters(con, pool, [F.FilterSpec("half", "keep_fraction", column="text_kl", keep_fraction=0.5)],
                             tmp_path / "out")
    got = dict(zip(*pq.read_table(r.path, columns=["uid", "reason"]).to_pydict().values()))
    assert (r.k, r.threshold, r.kept) == (4, 0.0, 4)  # k = floor(0.5 * 8) = 4 -> 3, 2, 1, 0
    assert got[uid(0)] == "half: text_kl is missing"
    assert got[uid(7)] == "half: text_kl -2 < 0 (keep top 50%)"


# ------------------------------------------------------------------------------------------- pool and subsets
def test_pool_dedupes_uids_and_subsets_balance(home):
    a = [uid(i) for i in range(60)]
    b = [uid(i) for i in range(50, 100)]  # 10 uids also in drop "a-1"
    # the second drop's name sorts first: its copy of the shared uids is the one in the pool
    write_scores(home, "b-0", b, text_kl=np.arange(50) % 7, clip_score=np.linspace(0, 1, 50))
    write_scores(home, "a-1", a, text_kl=np.arange(60) % 5, clip_score=np.linspace(1, 0, 60))
    pool, results = F.build_subsets(home, F.load_filters())
    assert (pool.rows, pool.rows_before_dedupe, pool.duplicates_removed) == (100, 110, 10)
    assert pool.drops == ["a-1", "b-0"] and pool.model_ids == ["m1"] and pool.reference_ids == ["r1"]
    nf = pq.read_table(next(r for r in results if r.name == "no_filter").path).to_pydict()
    drop_of = dict(zip(nf["uid"], nf["drop"]))
    assert all(drop_of[u] == "a-1" for u in a) and all(drop_of[u] == "b-0" for u in b[10:])
    decisions = {}
    for r in results:
        t = pq.read_table(r.path).to_pydict()
        assert len(t["uid"]) == len(set(t["uid"])) == 100 == r.pool
        assert r.kept + r.dropped == r.pool and r.kept == sum(t["keep"])
        decisions[r.name] = dict(zip(t["uid"], zip(t["keep"], t["reason"])))
    both = decisions["kl_text_and_clip_score"]
    for u, (keep, reason) in both.items():
        k1, r1 = decisions["kl_text"][u]
        k2, r2 = decisions["clip_score"][u]
        assert keep == (k1 and k2)
        if not keep:
            assert reason == "; ".join(x for x in (r1, r2) if x is not None)
            assert reason.startswith(("kl_text: text_kl ", "clip_score: clip_score "))
    # the summary describes the same subsets and stores the configuration
    summary = pq.read_table(home / "warehouse" / "curated_subsets" / "subset_summary.parquet").to_pylist()
    assert [s["subset"] for s in summary] == [r.name for r in results]
    assert F.filters_from_json(summary[0]["definition"]) == F.load_filters()
    kl = next(s for s in summary if s["subset"] == "kl_text")
    assert kl["k"] == 25 and kl["pool"] == 100 and kl["kept"] >= 25
