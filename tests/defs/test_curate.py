"""Curate domain: filter configuration, DuckDB threshold semantics vs the reference, subsets, report, N-grams.

Scores here are written by hand in the schemas of pair_scores / kl_stats (and a truth table in the synthetic
world's schema), so the tests do not depend on training a model.
"""

from __future__ import annotations

import math
import zlib
from fractions import Fraction
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets.core.selection import keep_fraction_threshold
from clip_assets.curate import filters as F
from clip_assets.defs.curate.assets import curated_subsets, curation_report, ngram_analysis
from clip_assets.defs.resources import HomeResource
from clip_assets.io import catalog
from clip_assets.io.ingest import RAW_PAIRS_SCHEMA
from clip_assets.io.commit import stage_dir
from clip_assets.io.warehouse import partition_dir

PAIR_COLS = ["clip_score", "s", "log_r_img", "log_r_txt", "log_r_siglip"]
KL_COLS = ["image_kl", "image_klr", "image_dc", "image_dw", "text_kl", "text_klr", "text_dc", "text_dw"]


def _rng(*keys) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(map(str, keys)).encode()))


def write_scores(home: Path, drop: str, uids: list[str], **cols) -> None:
    """pair_scores + kl_stats partitions of one drop (columns not given are seeded random numbers)."""
    n = len(uids)
    rng = _rng("scores", drop)

    def col(name):
        v = cols.get(name)
        return pa.array(np.asarray(v, dtype=np.float64) if v is not None else rng.normal(size=n), pa.float64())

    lineage = {"drop": pa.array([drop] * n, pa.string()), "model_id": pa.array(["m1"] * n, pa.string()),
               "reference_id": pa.array(["r1"] * n, pa.string())}
    pair = pa.table({"uid": pa.array(uids, pa.string()), **{c: col(c) for c in PAIR_COLS}, **lineage})
    kl = pa.table({"uid": pa.array(uids, pa.string()), **{c: col(c) for c in KL_COLS}, **lineage})
    with stage_dir(partition_dir("pair_scores", drop, home)) as w:
        w.write_table("part-00000.parquet", pair)
    with stage_dir(partition_dir("kl_stats", drop, home)) as w:
        w.write_table("part-00000.parquet", kl)


def uid(i: int, salt: str = "") -> str:
    return f"{zlib.crc32(f'{salt}{i}'.encode()):08x}{i:024x}"


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
    with F.session(tmp_path, threads=1) as con:
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
    with F.session(tmp_path, threads=1) as con:
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


# ------------------------------------------------------------------------------------------- the assets
CAPTIONS = {  # caption -> specificity (0 generic .. 3 specific)
    "an image": 0, "something red": 1, "a circle": 1, "a red circle": 2, "a large red circle": 3,
    "a small blue square": 3, "a blue square": 2, "a square": 1, "something blue": 1,
}


def synthetic_pool(home: Path, drop: str, n: int, seed: int) -> list[str]:
    """A hand-made synthetic drop: raw_pairs (captions), scores and <landing>/<drop>.truth.parquet where
    clip_score tracks alignment, text_kl tracks caption specificity and image_kl is ~0 for placeholders."""
    rng = np.random.default_rng(seed)
    uids = [uid(i, drop) for i in range(n)]
    caps = list(CAPTIONS)
    caption = [caps[j] for j in rng.integers(0, len(caps), n)]
    spec = np.array([CAPTIONS[c] for c in caption], float)
    u = rng.random(n)
    placeholder = u < 0.08
    misaligned = (u >= 0.08) & (u < 0.25)
    aligned = ~placeholder & ~misaligned
    true_lr = np.where(aligned, 0.5 + 0.6 * spec, np.where(misaligned, -2.0, 0.0))
    clip = np.where(aligned, 0.32, 0.18) + 0.01 * spec + rng.normal(0, 0.03, n)
    text_kl = 0.4 * spec + rng.normal(0, 0.05, n)
    image_kl = np.where(placeholder, 0.01, 1.0) + rng.normal(0, 0.05, n)
    write_scores(home, drop, uids, clip_score=clip, text_kl=text_kl, text_klr=text_kl * 1.1, image_kl=image_kl)
    raw = {name: [] for name in RAW_PAIRS_SCHEMA.names}
    for i, (x, c) in enumerate(zip(uids, caption)):
        for name, v in zip(RAW_PAIRS_SCHEMA.names, (x, drop, "00000", f"{i:09d}", c, None, 32, 32, "0" * 64,
                                                      "jpg", "/nonexistent.tar", f"{i:09d}.jpg", 0, 1)):
            raw[name].append(v)
    with stage_dir(partition_dir("raw_pairs", drop, home)) as w:
        w.write_table("part-00000.parquet", pa.table(raw, schema=RAW_PAIRS_SCHEMA))
    truth = pa.table({"drop": [drop] * n, "uid": uids, "caption": caption, "is_misaligned": misaligned,
                      "is_placeholder": placeholder, "true_log_ratio": true_lr, "true_kl_image": image_kl,
                      "true_kl_text": text_kl, "true_klr_image": image_kl, "true_klr_text": text_kl})
    pq.write_table(truth, home / "landing" / f"{drop}.truth.parquet")
    return uids


ASSETS = [curated_subsets, curation_report, ngram_analysis]


def _materialize(home, keys, run_config=None, raise_on_error=True):
    return dg.materialize(ASSETS, selection=keys, resources={"home": HomeResource(home=str(home))},
                          run_config=run_config, raise_on_error=raise_on_error)


def test_assets_end_to_end_on_a_synthetic_pool(home):
    synthetic_pool(home, "s-000", 700, seed=1)
    synthetic_pool(home, "s-001", 500, seed=2)
    res = _materialize(home, [curated_subsets.key, curation_report.key, ngram_analysis.key])
    assert res.success
    checks = {(c.asset_key.to_user_string(), c.check_name): c for c in res.get_asset_check_evaluations()}
    assert checks[("curated_subsets", "kept_plus_dropped_equals_pool")].passed
    assert checks[("curated_subsets", "single_lineage")].passed
    assert checks[("curation_report", "report_covers_every_filter")].passed
    assert checks[("ngram_analysis", "coverage_valid")].passed, checks[("ngram_analysis", "coverage_valid")].metadata
    catalog.refresh_views(home)  # what the catalog asset does after them (the one place views are refreshed)

    # the views: every subset has pool rows; the summary has the thresholds
    n_subsets = len(F.load_filters())
    rows = catalog.query("SELECT subset, count(*) AS n, sum(CAST(keep AS INT)) AS kept FROM curated_subsets "
                         "GROUP BY subset", home=home).to_pylist()
    assert len(rows) == n_subsets and all(r["n"] == 1200 for r in rows)
    summary = {r["subset"]: r for r in catalog.query("SELECT * FROM subset_summary", home=home).to_pylist()}
    assert {r["subset"]: r["kept"] for r in rows} == {k: v["kept"] for k, v in summary.items()}
    assert summary["laion"]["threshold"] == 0.28 and summary["kl_text"]["k"] == 300
    reason = catalog.query("SELECT reason FROM curated_subsets WHERE subset = ? AND NOT keep LIMIT 1",
                           ["kl_text"], home=home).to_pylist()[0]["reason"]
    assert reason.startswith("kl_text: text_kl ") and reason.endswith("(keep top 25%)")

    # the report shows the expected direction
    rep = {r["filter"]: r for r in catalog.query("SELECT * FROM curation_report", home=home).to_pylist()}
    assert set(rep) == set(summary)
    base = rep["no_filter"]
    assert 0.7 < base["aligned_share"] < 0.8 and base["placeholders_kept"] == 1.0
    assert rep["clip_score"]["aligned_share"] > base["aligned_share"] + 0.15
    assert rep["clip_score"]["mean_true_log_ratio"] > base["mean_true_log_ratio"] + 0.5
    assert rep["kl_text"]["mean_true_kl_text"] > base["mean_true_kl_text"] + 0.3  # specific captions
    assert rep["kl_image"]["placeholders_kept"] < 0.05  # placeholder images carry no information
    assert rep["clip_score"]["kept_fraction"] == pytest.approx(0.25, abs=0.01)  # report at 25%, not 30%
    assert "own threshold" in rep["laion"]["setting"]

    # n-grams: 2 sides x 10 deciles x 3 n x 4 K; low text-KL deciles are dominated by few n-grams
    cov = catalog.query("SELECT * FROM ngram_coverage", home=home).to_pylist()
    assert len(cov) == 240
    distinct = {r["decile"]: r["distinct_ngrams"] for r in cov if r["side"] == "text" and r["n"] == 2 and r["k"] == 50}
    assert distinct[0] < distinct[9]
    corr = {(r["side"], r["statistic"]): r["pearson"]
            for r in catalog.query("SELECT * FROM ngram_correlations", home=home).to_pylist()}
    assert corr[("text", "length")] > 0.5  # longer captions are the specific ones here


def test_bad_filters_path_fails_the_run_naming_the_key(home, tmp_path):
    synthetic_pool(home, "s-000", 50, seed=1)
    bad = tmp_path / "mine.yaml"
    bad.write_text("filters:\n  - {name: mine, column: text_kl, keep_fraction: 2}\n")
    res = _materialize(home, [curated_subsets.key], raise_on_error=False,
                       run_config={"ops": {"curated_subsets": {"config": {"filters_path": str(bad)}}}})
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    msg = failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
    assert "keep_fraction" in msg and "2" in msg and "mine" in msg
    assert not (home / "warehouse" / "curated_subsets").exists()


def test_curation_report_skips_without_truth(home):
    synthetic_pool(home, "s-000", 60, seed=3)
    (home / "landing" / "s-000.truth.parquet").unlink()
    res = _materialize(home, [curated_subsets.key, curation_report.key])
    assert res.success
    mat = next(m for m in res.get_asset_materialization_events()
               if m.asset_key == curation_report.key).materialization
    assert mat.metadata["skipped"].value is True


# ------------------------------------------------------------------------------------------- incremental
def test_global_assets_refresh_once_every_drop_is_scored():
    """eager(): a new drop's scores landing requests curated_subsets, curation_report and ngram_analysis (one
    tick), but not while another registered drop still misses its scores; nothing more until the next drop."""
    from clip_assets.definitions import defs
    from clip_assets.defs.partitions import drops_partitions

    curate = {curated_subsets.key, curation_report.key, ngram_analysis.key}
    per_drop = ["raw_pairs", "rejected_pairs", "embeddings", "pair_scores", "kl_stats"]
    with dg.instance_for_test() as inst:
        def mark(keys, partition=None):
            for k in keys:
                inst.report_runless_asset_event(dg.AssetMaterialization(asset_key=k, partition=partition))

        def tick(cursor):
            res = dg.evaluate_automation_conditions(defs=defs, instance=inst, cursor=cursor)
            return {r.key for r in res.results if r.key in curate and r.true_subset.size}, res.cursor

        inst.add_dynamic_partitions(drops_partitions.name, ["d1", "d2"])
        mark([dg.AssetKey("contrastive_model"), dg.AssetKey("reference_set")])
        mark([dg.AssetKey(k) for k in per_drop], "d1")
        requested, cursor = tick(None)
        assert requested == set()  # d2 is registered but not scored yet
        mark([dg.AssetKey(k) for k in per_drop], "d2")
        requested, cursor = tick(cursor)
        assert requested == curate
        mark(curate)  # the run happened
        requested, cursor = tick(cursor)
        assert requested == set()
        inst.add_dynamic_partitions(drops_partitions.name, ["d3"])
        mark([dg.AssetKey(k) for k in per_drop], "d3")
        requested, cursor = tick(cursor)
        assert requested == curate


def test_curated_subsets_refuses_a_drop_with_incomplete_scores(home):
    """Scores that cover only part of a drop's raw_pairs (a partial upstream) never reach the subsets."""
    synthetic_pool(home, "s-000", 80, seed=1)
    uids = synthetic_pool(home, "s-001", 60, seed=2)
    write_scores(home, "s-001", uids[:45])  # 45 of 60 rows scored
    res = _materialize(home, [curated_subsets.key], raise_on_error=False)
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    msg = failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
    for needle in ("curated_subsets", "pair_scores", "'s-001'", "45 rows", "60 raw_pairs rows"):
        assert needle in msg, (needle, msg)
    assert "'s-000'" not in msg
    assert not (home / "warehouse" / "curated_subsets").exists()
