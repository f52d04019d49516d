"""Curate domain through Dagster: curated_subsets, curation_report and ngram_analysis on hand-made pools, their
refusal of partial upstream, and their automation (the engine itself: tests/curate/test_filters.py).

Scores here are written by hand in the schemas of pair_scores / kl_stats (and a truth table in the synthetic
world's schema), so the tests do not depend on training a model.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets.curate import filters as F
from clip_assets.defs.curate.assets import curated_subsets, curation_report, ngram_analysis
from clip_assets.defs.resources import HomeResource
from clip_assets.io import catalog
from clip_assets.io.ingest import RAW_PAIRS_SCHEMA
from clip_assets.io.commit import stage_dir
from clip_assets.io.warehouse import partition_dir
from score_tables import uid, write_scores


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
                                                      "jpg", "/nonexistent.tar", f"{i:09d}.jpg", 0, 1, x)):
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
    # the report says at which fraction it evaluated each filter, and beside it the subset's own rule
    meta = {m.asset_key: m.materialization.metadata for m in res.get_asset_materialization_events()}
    assert "every keep-fraction filter at 25%" in meta[curation_report.key]["evaluated_at"].value
    assert "| top 30% by clip_score |" in meta[curation_report.key]["report"].value

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


# ------------------------------------------------------------------------------------------- the report
def _md_table(md: str) -> dict[str, list[str]]:
    """First cell -> cells of each body row of the Markdown tables in ``md``."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in md.splitlines()
            if line.startswith("| ") and not line.startswith("|---")]
    return {r[0]: r for r in rows[1:]}


def test_curated_subsets_report_and_since_last_through_the_asset(home):
    """Through the asset: the summary renders inline (< 1,000 characters) with a plot; the report's kl_text
    sheets hold the rows they claim; after a second drop the since_last table shows drops added and every
    subset's threshold and kept count before -> after, and kept per drop sums to each subset's kept count."""
    import json

    from clip_assets.io.exports import read_summary
    from clip_assets.report.format import fmt
    from clip_assets.report.glance import INLINE_LIMIT

    synthetic_pool(home, "s-000", 300, seed=1)
    config = {"ops": {"curated_subsets": {"config": {"images_per_sheet": 5}}}}
    first = _materialize(home, [curated_subsets.key], run_config=config)
    meta1 = first.asset_materializations_for_node("curated_subsets")[0].metadata
    before = {r["subset"]: r for r in read_summary(home).to_pylist()}
    assert list(meta1)[0] == "summary" and len(meta1["summary"].value) <= INLINE_LIMIT
    assert "data:image/png;base64," in meta1["summary"].value and "no earlier report" in meta1["since_last"].value
    assert meta1["dagster/row_count"].value == 300 and meta1["decision_rows"].value == 300 * len(before)
    folder = Path(meta1["report"].value).parent
    kl = before["kl_text"]
    scores = {r["uid"]: r["text_kl"] for f in sorted((home / "warehouse" / "kl_stats").glob("drop=*/*.parquet"))
              for r in pq.read_table(f, columns=["uid", "text_kl"]).to_pylist()}
    keep = {r["uid"]: r["keep"] for f in (home / "warehouse" / "curated_subsets" / "subset=kl_text").glob("*.parquet")
            for r in pq.read_table(f, columns=["uid", "keep"]).to_pylist()}
    top = sorted((u for u in keep if keep[u]), key=lambda u: (-scores[u], u))[:5]
    assert json.loads((folder / "sheets" / "subset-kl_text-kept_top.json").read_text())["uids"] == top
    near = json.loads((folder / "sheets" / "subset-kl_text-dropped_near.json").read_text())["samples"]
    assert near and all(not keep[x["uid"]] and x["score"] < kl["threshold"] for x in near)
    assert [x["uid"] for x in near] == sorted((u for u in keep if not keep[u]), key=lambda u: (-scores[u], u))[:5]

    synthetic_pool(home, "s-001", 200, seed=2)
    second = _materialize(home, [curated_subsets.key], run_config=config)
    meta2 = second.asset_materializations_for_node("curated_subsets")[0].metadata
    after = {r["subset"]: r for r in read_summary(home).to_pylist()}
    since = meta2["since_last"].value
    assert len(since) <= INLINE_LIMIT and "drops added: s-001" in since
    table = _md_table(since)
    for name, b in before.items():
        a = after[name]
        assert table[name][2:5] == [f"{fmt(b['threshold'])} -> {fmt(a['threshold'])}",
                                    f"{b['kept']:,} -> {a['kept']:,}", f"{a['kept'] - b['kept']:+,}"], name
    per_drop = _md_table(meta2["kept_per_drop"].value)
    assert set(per_drop) == {"s-000", "s-001"} and [per_drop[d][1] for d in ("s-000", "s-001")] == ["300", "200"]
    header = next(line for line in meta2["kept_per_drop"].value.splitlines() if line.startswith("| drop |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    for name, a in after.items():
        i = cols.index(name)
        assert sum(int(per_drop[d][i].replace(",", "")) for d in per_drop) == a["kept"], name
