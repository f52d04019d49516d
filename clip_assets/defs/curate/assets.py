"""Curate domain: curated_subsets (global) -> curation_report (global, synthetic truth); ngram_analysis (global).

All three are global assets over every scored drop, refreshed on their own by the eager automation condition
when new drops' scores land (see clip_assets/defs/automation.py and the README, "Incremental behaviour"). Glue
only: the engine is :mod:`clip_assets.curate`.
"""

import math
import time

import dagster as dg
from pydantic import Field, field_validator

from clip_assets.curate import filters as F
from clip_assets.curate import report as R
from clip_assets.curate import steps
from clip_assets.defs.keys import (CURATED_SUBSETS, CURATION_REPORT, KL_STATS, NGRAM_ANALYSIS, PAIR_SCORES,
                                   RAW_PAIRS)
from clip_assets.defs.partitions import GLOBAL_GRAIN
from clip_assets.defs.plots import figure_metadata, markdown_table, report_metadata
from clip_assets.defs.resources import HomeResource
from clip_assets.defs.specs import table_metadata
from clip_assets.io.exports import subsets_dir
from clip_assets.report.build import curated_subsets_report, prune
from clip_assets.report.format import markdown_rows

# The package default is validated when the code location loads: a broken filters.yaml fails `dagster dev` and
# `dagster definitions validate` with the bad key and value in the message.
DEFAULT_FILTERS = F.load_filters()
REPORTS_KEPT = 20  # newest curated_subsets reports kept under <home>/reports/curated_subsets/


def _default_filters_doc() -> str:
    return "; ".join(f"{s.name} ({s.rule})" for s in DEFAULT_FILTERS)


def _require_scored_pool(home: HomeResource, consumer: dg.AssetKey, assets=(PAIR_SCORES, KL_STATS)) -> None:
    """Fail unless every drop of the pool has complete partitions of ``assets`` (uids = raw_pairs')."""
    drops, _ = F.pool_files(home.path(), assets=tuple(a.to_user_string() for a in assets))
    for a in assets:
        if a != RAW_PAIRS:
            home.require_complete(a, drops, consumer=consumer)


# -------------------------------------------------------------------------------------------- curated_subsets
class CuratedSubsetsConfig(dg.Config):
    """filters_path: a filters YAML in the format of the package default (clip_assets/curate/filters.yaml);
    empty = the package default. threads: DuckDB threads (0 = DuckDB's default, every core). images_per_sheet:
    thumbnails on each contact sheet of the report (bounds its cost)."""

    filters_path: str = ""
    threads: int = Field(0, ge=0)
    images_per_sheet: int = Field(24, ge=1, le=200)


def _sheets_md(rep) -> str:
    """One row per contact sheet: its title, images, and the PNG and JSON (uids in grid order) paths."""
    return markdown_rows([{"sheet": f.title, "images": f.count, "unreadable": f.unreadable,
                           "png": str(rep.folder / f.png), "uids": str(rep.folder / f.json)} for f in rep.sheets],
                         max_rows=200, max_chars=200)


@dg.asset(
    key=CURATED_SUBSETS,
    deps=[PAIR_SCORES, KL_STATS],
    description=(
        "Named subsets of the pool, each from one filter: a keep-fraction of the WHOLE pool by a score column "
        "(threshold = the k-th largest value, k = floor(f*N), ties kept, NaN never kept), a fixed threshold, "
        "keep-all, or the intersection (all_of) of other filters. The pool is every pair with pair_scores and "
        "kl_stats, deduplicated by uid: a uid in several drops counts ONCE, in the first drop by name. Per subset "
        "a decisions table with one row per pool row (uid, drop, keep, reason; every dropped row names the filter "
        "and why, e.g. 'kl_text: text_kl 0.71 < 1.23 (keep top 25%)'), so kept + dropped = pool; and a summary "
        "(pool, kept, threshold, k). Thresholds are computed by DuckDB over the Parquet, never in memory. "
        "Refuses a drop whose scores do not cover its raw_pairs. "
        "Filters are configured in one YAML (run config filters_path; default: the package's filters.yaml: "
        f"{_default_filters_doc()}). Parquet: `warehouse/curated_subsets/subset=<name>/` and subset_summary.parquet;"
        " DuckDB views curated_subsets and subset_summary. Export with `clip-assets export SUBSET`."
    ),
    group_name="curate",
    kinds={"duckdb", "parquet"},
    tags=GLOBAL_GRAIN,
    metadata=table_metadata(F.DECISIONS_SCHEMA),
    pool="duckdb",
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[
        dg.AssetCheckSpec("kept_plus_dropped_equals_pool", asset=CURATED_SUBSETS, blocking=True,
                          description="per subset, read back from the warehouse: rows = pool, kept + dropped = "
                                      "rows, uids unique, every dropped row has a reason and no kept row has one"),
        dg.AssetCheckSpec("single_lineage", asset=CURATED_SUBSETS,
                          description="the pool was scored with one model and one reference set (thresholds "
                                      "over mixed lineages compare incomparable scores); warns otherwise"),
    ],
)
def curated_subsets(context: dg.AssetExecutionContext, config: CuratedSubsetsConfig, home: HomeResource):
    _require_scored_pool(home, CURATED_SUBSETS)
    try:
        out = steps.curate_subsets(home.path(), config.filters_path, config.threads or None, log=context.log.info)
    except F.FilterConfigError as e:
        raise dg.Failure(f"curated_subsets: bad filters configuration: {e}") from None
    except ValueError as e:
        raise dg.Failure(f"curated_subsets: {e}") from None
    pool, results = out.pool, out.results
    rows = [{"subset": r.name, "rule": r.rule, "pool": r.pool, "kept": r.kept, "kept_share": r.kept_fraction,
             "k": r.k, "threshold": r.threshold} for r in results]
    t0 = time.perf_counter()
    rep = curated_subsets_report(home.path(), context.run_id, per_sheet=config.images_per_sheet)
    report_s = time.perf_counter() - t0
    prune(home.path(), "curated_subsets", keep=REPORTS_KEPT)  # ~11 MB each on the demo pool
    context.log.info(f"report {rep.index}: {len(rep.sheets)} contact sheets in {report_s:.1f}s")
    metadata = {
        **report_metadata(rep),  # the summary first: the UI shows it inline on the asset's page
        "since_last": dg.MetadataValue.md(rep.inline["since_last"]),
        "kept_per_drop": dg.MetadataValue.md(rep.parts["Kept per drop"]),
        "contact_sheets": dg.MetadataValue.md(_sheets_md(rep)),
        # one decision row per pool row per subset is stored; the pool is what a curator compares with
        "dagster/row_count": pool.rows, "decision_rows": sum(r.pool for r in results),
        "pool": pool.rows, "pool_rows_before_dedupe": pool.rows_before_dedupe,
        "duplicates_removed": pool.duplicates_removed, "drops": len(pool.drops),
        "model_ids": ", ".join(pool.model_ids), "reference_ids": ", ".join(pool.reference_ids),
        "filters_file": config.filters_path or str(F.DEFAULT_FILTERS_PATH),
        "subsets": markdown_table(rows, max_rows=50),
        "seconds": round(out.seconds, 3), "pairs_per_s": round(pool.rows / out.seconds, 1) if out.seconds > 0 else 0.0,
        "report_seconds": round(report_s, 2),
        "path": dg.MetadataValue.path(str(subsets_dir(home.path()))),
    }
    for r in results:
        metadata[f"kept_{r.name}"] = r.kept
        if r.threshold is not None and math.isfinite(r.threshold):
            metadata[f"threshold_{r.name}"] = float(r.threshold)
    bad = out.unbalanced
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="kept_plus_dropped_equals_pool", passed=not bad,
                metadata={"pool": pool.rows, "subsets": len(out.counts),
                          "failing": ", ".join(f"{k}: {v}" for k, v in bad.items()) or "none"}),
            dg.AssetCheckResult(
                check_name="single_lineage", passed=out.single_lineage, severity=dg.AssetCheckSeverity.WARN,
                metadata={"model_ids": ", ".join(pool.model_ids), "reference_ids": ", ".join(pool.reference_ids)}),
        ],
    )


# -------------------------------------------------------------------------------------------- curation_report
class CurationReportConfig(dg.Config):
    """keep_fraction: the one keep-fraction every keep-fraction filter is evaluated at (threshold filters keep
    their own threshold and the table says so)."""

    keep_fraction: float = Field(0.25, ge=0.0, le=1.0)


@dg.asset(
    key=CURATION_REPORT,
    deps=[CURATED_SUBSETS],
    description=(
        "Synthetic world only (drops with `<landing>/<drop>.truth.parquet`; skipped without them): every filter of "
        "curated_subsets evaluated at the SAME keep-fraction (config keep_fraction, default 0.25; threshold filters "
        "such as laion keep their own threshold and the table says so), with the ground truth of the kept pairs: "
        "share truly aligned (neither misaligned nor a placeholder), share misaligned, share placeholders, share of "
        "all placeholders kept, mean true log p(y|x)/p(y), mean true caption/image KL. Thresholds over the whole "
        "pool as in curated_subsets; truth over the pool rows that have it. Our small-scale stand-in for the "
        "paper's DataComp table. Parquet warehouse/curation_report/, DuckDB view curation_report, bar plot."
    ),
    group_name="curate",
    kinds={"duckdb", "parquet"},
    tags=GLOBAL_GRAIN,
    metadata=table_metadata(R.REPORT_SCHEMA),
    pool="duckdb",
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[dg.AssetCheckSpec("report_covers_every_filter", asset=CURATION_REPORT,
                                   description="one row per filter, every share in [0, 1]; passes when skipped")],
)
def curation_report(context: dg.AssetExecutionContext, config: CurationReportConfig, home: HomeResource):
    _require_scored_pool(home, CURATION_REPORT)
    f = config.keep_fraction
    out = steps.curation_report(home.path(), home.landing(), f, log=context.log.warning)
    if not out.truth_drops:
        context.log.warning("no scored drop has a ground-truth file (not a synthetic world): nothing to report")
        return dg.MaterializeResult(
            metadata={"skipped": True, "note": "no <drop>.truth.parquet beside any scored drop",
                      "drops": len(out.drops)},
            check_results=[dg.AssetCheckResult(check_name="report_covers_every_filter", passed=True,
                                               metadata={"skipped": True})])
    rows = out.rows
    by = {r["filter"]: r for r in rows}
    own_rule = {s.name: s.rule for s in out.specs}
    shown = [{**r, "subset_rule": own_rule[r["filter"]]} for r in rows]
    metadata = {
        "dagster/row_count": len(rows), "keep_fraction": f, "pool": out.pool_rows,
        "evaluated_at": f"every keep-fraction filter at {f * 100:g}% (curated_subsets applies each filter's own "
                        "rule: column subset_rule)",
        "pool_with_truth": rows[0]["pool"] if rows else 0, "drops_with_truth": len(out.truth_drops),
        "drops_without_truth": len(out.drops) - len(out.truth_drops),
        "report": markdown_table(shown, ["filter", "setting", "subset_rule", "kept", "kept_fraction",
                                         "aligned_share", "placeholder_share", "placeholders_kept",
                                         "mean_true_log_ratio", "mean_true_kl_text"], max_rows=50),
        "plot": figure_metadata(R.report_plot(rows, f)),
    }
    for name in ("no_filter", "kl_text", "clip_score"):
        if name in by and by[name]["aligned_share"] is not None:
            metadata[f"aligned_share_{name}"] = float(by[name]["aligned_share"])
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[dg.AssetCheckResult(
            check_name="report_covers_every_filter", passed=bool(out.shares_valid and out.covers_every_filter),
            metadata={"filters": len(out.specs), "rows": len(rows)})],
    )


# -------------------------------------------------------------------------------------------- ngram_analysis
class NgramConfig(dg.Config):
    """max_rows: captions analysed (a pseudo-random sample by hash of uid and seed when the pool is larger);
    ns: n-gram orders; ks: top-K sizes."""

    max_rows: int = Field(200_000, ge=10)
    seed: int = 0
    ns: list[int] = Field([1, 2, 3], min_length=1)
    ks: list[int] = Field([50, 100, 500, 1000], min_length=1)

    @field_validator("ns", "ks")
    @classmethod
    def _positive(cls, v: list[int], info) -> list[int]:
        if min(v) < 1:
            raise ValueError(f"{info.field_name} must hold positive integers, got {v!r}")
        return v


@dg.asset(
    key=NGRAM_ANALYSIS,
    deps=[KL_STATS, RAW_PAIRS],
    description=(
        "PAPER.md section 2: captions split into 10 equal-size deciles by KL (text side: text_kl of the caption; "
        "image side: image_kl of its image), and per decile the share of all 1/2/3-gram occurrences (lower-cased "
        "word tokens padded with `<s>` and `</s>`) covered by the decile's top-K n-grams, K = 50, 100, 500, 1000; plus "
        "the Pearson correlation of KL with caption length, vocabulary size and type-token ratio. Low-KL "
        "(generic) deciles are dominated by few n-grams. Pool deduplicated by uid like curated_subsets; at most "
        "max_rows captions (a seeded sample). Parquet warehouse/ngram_analysis/, DuckDB views ngram_coverage and "
        "ngram_correlations, heatmap in metadata."
    ),
    group_name="curate",
    kinds={"duckdb", "parquet"},
    tags=GLOBAL_GRAIN,
    metadata=table_metadata(R.COVERAGE_SCHEMA),
    pool="duckdb",
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[dg.AssetCheckSpec("coverage_valid", asset=NGRAM_ANALYSIS,
                                   description="coverage in [0, 1] and non-decreasing in K; ten deciles per side")],
)
def ngram_analysis(context: dg.AssetExecutionContext, config: NgramConfig, home: HomeResource):
    _require_scored_pool(home, NGRAM_ANALYSIS, assets=(KL_STATS, RAW_PAIRS))
    try:
        out = steps.ngram_analysis(home.path(), config.max_rows, config.seed, config.ns, config.ks)
    except ValueError as e:
        raise dg.Failure(f"ngram_analysis: {e}") from None
    cov = out.coverage.to_pylist()
    head = [r for r in cov if r["n"] == 1 and r["k"] == min(config.ks)]
    c = out.checks
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": out.coverage.num_rows, "captions": out.captions, "pool_rows": out.pool_rows,
            "sampled": out.captions < out.pool_rows, "drops": len(out.drops),
            "heatmap": figure_metadata(R.ngram_heatmap(out.coverage, config.ns, config.ks)),
            "correlations": markdown_table(out.correlations.to_pylist()),
            f"unigram_top{min(config.ks)}_coverage": markdown_table(
                head, ["side", "decile", "rows", "kl_min", "kl_max", "coverage", "distinct_ngrams"], max_rows=20),
            "seconds": round(out.seconds, 3),
        },
        check_results=[dg.AssetCheckResult(
            check_name="coverage_valid", passed=c["passed"],
            metadata={"monotone_in_k": c["monotone_in_k"], "in_range": c["in_range"],
                      "deciles": ", ".join(f"{k}: {v}" for k, v in c["deciles"].items())})],
    )


defs_assets = [curated_subsets, curation_report, ngram_analysis]
