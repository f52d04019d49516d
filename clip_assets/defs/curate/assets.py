"""Curate domain: curated_subsets (global) -> curation_report (global, synthetic truth); ngram_analysis (global).

All three are global assets over every scored drop, refreshed on their own by the eager automation condition
when new drops' scores land (see clip_assets/defs/automation.py and the README, "Incremental behaviour").
"""

import math
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa

from clip_assets.defs.curate import filters as F
from clip_assets.defs.curate import report as R
from clip_assets.defs.partitions import GLOBAL_GRAIN
from clip_assets.defs.plots import figure_metadata, markdown_table
from clip_assets.defs.resources import HomeResource
from clip_assets.io.catalog import load_sql
from clip_assets.io.exports import read_summary, subsets_dir
from clip_assets.io.commit import stage_dir, write_table
from clip_assets.io.warehouse import asset_dir

CURATED = dg.AssetKey("curated_subsets")
REPORT = dg.AssetKey("curation_report")
NGRAMS = dg.AssetKey("ngram_analysis")

# The package default is validated when the code location loads: a broken filters.yaml fails `dagster dev` and
# `dagster definitions validate` with the bad key and value in the message.
DEFAULT_FILTERS = F.load_filters()


def _default_filters_doc() -> str:
    return "; ".join(f"{s.name} ({s.rule})" for s in DEFAULT_FILTERS)


def _fmt(v) -> str:
    return "none" if v is None else f"{v:.6g}"


# -------------------------------------------------------------------------------------------- curated_subsets
class CuratedSubsetsConfig(dg.Config):
    """filters_path: a filters YAML in the format of the package default (clip_assets/defs/curate/filters.yaml);
    empty = the package default. threads: DuckDB threads (0 = DuckDB's default, every core)."""

    filters_path: str = ""
    threads: int = 0


@dg.asset(
    deps=["pair_scores", "kl_stats"],
    description=(
        "Named subsets of the pool, each from one filter: a keep-fraction of the WHOLE pool by a score column "
        "(threshold = the k-th largest value, k = floor(f*N), ties kept, NaN never kept), a fixed threshold, "
        "keep-all, or the intersection (all_of) of other filters. The pool is every pair with pair_scores and "
        "kl_stats, deduplicated by uid: a uid in several drops counts ONCE, in the first drop by name. Per subset "
        "a decisions table with one row per pool row (uid, drop, keep, reason; every dropped row names the filter "
        "and why, e.g. 'kl_text: text_kl 0.71 < 1.23 (keep top 25%)'), so kept + dropped = pool; and a summary "
        "(pool, kept, threshold, k). Thresholds are computed by DuckDB over the Parquet, never in memory. "
        "Filters are configured in one YAML (run config filters_path; default: the package's filters.yaml: "
        f"{_default_filters_doc()}). Parquet: warehouse/curated_subsets/subset=<name>/ and subset_summary.parquet;"
        " DuckDB views curated_subsets and subset_summary. Export with `clip-assets export SUBSET`."
    ),
    group_name="curate",
    kinds={"duckdb", "parquet"},
    owners=["team:curation"],
    tags=GLOBAL_GRAIN,
    pool="duckdb",
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[
        dg.AssetCheckSpec("kept_plus_dropped_equals_pool", asset=CURATED, blocking=True,
                          description="per subset, read back from the warehouse: rows = pool, kept + dropped = "
                                      "rows, uids unique, every dropped row has a reason and no kept row has one"),
        dg.AssetCheckSpec("single_lineage", asset=CURATED,
                          description="the pool was scored with one model and one reference set (thresholds "
                                      "over mixed lineages compare incomparable scores); warns otherwise"),
    ],
)
def curated_subsets(context: dg.AssetExecutionContext, config: CuratedSubsetsConfig, home: HomeResource):
    try:
        specs = F.load_filters(config.filters_path or None)
    except F.FilterConfigError as e:
        raise dg.Failure(f"curated_subsets: bad filters configuration: {e}") from None
    h = home.path()
    t0 = time.perf_counter()
    try:
        pool, results = F.build_subsets(h, specs, threads=config.threads or None, log=context.log.info)
    except F.FilterConfigError as e:
        raise dg.Failure(f"curated_subsets: bad filters configuration: {e}") from None
    except ValueError as e:
        raise dg.Failure(f"curated_subsets: {e}") from None
    con = F.connect()
    try:
        counts = {r.name: F.subset_counts(con, r.path) for r in results}
    finally:
        con.close()
    seconds = time.perf_counter() - t0
    views = home.refresh_catalog()

    rows = [{"subset": r.name, "rule": r.rule, "pool": r.pool, "kept": r.kept, "kept_fraction": r.kept_fraction,
             "k": "" if r.k is None else r.k, "threshold": _fmt(r.threshold)} for r in results]
    metadata = {
        "dagster/row_count": sum(r.pool for r in results),
        "pool": pool.rows, "pool_rows_before_dedupe": pool.rows_before_dedupe,
        "duplicates_removed": pool.duplicates_removed, "drops": len(pool.drops),
        "model_ids": ", ".join(pool.model_ids), "reference_ids": ", ".join(pool.reference_ids),
        "filters_file": config.filters_path or str(F.DEFAULT_FILTERS_PATH),
        "subsets": markdown_table(rows, max_rows=50),
        "kept_fractions": figure_metadata(R.subsets_plot(results)),
        "seconds": round(seconds, 3), "pairs_per_s": round(pool.rows / seconds, 1) if seconds > 0 else 0.0,
        "path": dg.MetadataValue.path(str(subsets_dir(h))), "views": ", ".join(views),
    }
    for r in results:
        metadata[f"kept_{r.name}"] = r.kept
        if r.threshold is not None and math.isfinite(r.threshold):
            metadata[f"threshold_{r.name}"] = float(r.threshold)
    bad = {name: c for name, c in counts.items()
           if not (c["rows"] == pool.rows and c["kept"] + c["dropped"] == c["rows"]
                   and c["distinct_uids"] == c["rows"] and c["dropped_without_reason"] == 0
                   and c["kept_with_reason"] == 0)}
    lineage_ok = len(pool.model_ids) <= 1 and len(pool.reference_ids) <= 1
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="kept_plus_dropped_equals_pool", passed=not bad,
                metadata={"pool": pool.rows, "subsets": len(counts),
                          "failing": ", ".join(f"{k}: {v}" for k, v in bad.items()) or "none"}),
            dg.AssetCheckResult(
                check_name="single_lineage", passed=lineage_ok, severity=dg.AssetCheckSeverity.WARN,
                metadata={"model_ids": ", ".join(pool.model_ids), "reference_ids": ", ".join(pool.reference_ids)}),
        ],
    )


# -------------------------------------------------------------------------------------------- curation_report
class CurationReportConfig(dg.Config):
    """keep_fraction: the one keep-fraction every keep-fraction filter is evaluated at (threshold filters keep
    their own threshold and the table says so)."""

    keep_fraction: float = 0.25


def _stored_filters(home: Path, log) -> tuple[F.FilterSpec, ...]:
    """The filters curated_subsets last ran with (its summary's definition), else the package default."""
    summary = read_summary(home)
    if summary is not None and summary.num_rows:
        return F.filters_from_json(summary["definition"][0].as_py(), source="curated_subsets summary")
    log("curated_subsets has no summary yet: using the package's default filters")
    return DEFAULT_FILTERS


@dg.asset(
    deps=[CURATED],
    description=(
        "Synthetic world only (drops with <landing>/<drop>.truth.parquet; skipped without them): every filter of "
        "curated_subsets evaluated at the SAME keep-fraction (config keep_fraction, default 0.25; threshold filters "
        "such as laion keep their own threshold and the table says so), with the ground truth of the kept pairs: "
        "share truly aligned (neither misaligned nor a placeholder), share misaligned, share placeholders, share of "
        "all placeholders kept, mean true log p(y|x)/p(y), mean true caption/image KL. Thresholds over the whole "
        "pool as in curated_subsets; truth over the pool rows that have it. Our small-scale stand-in for the "
        "paper's DataComp table. Parquet warehouse/curation_report/, DuckDB view curation_report, bar plot."
    ),
    group_name="curate",
    kinds={"duckdb", "parquet"},
    owners=["team:curation"],
    tags=GLOBAL_GRAIN,
    pool="duckdb",
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[dg.AssetCheckSpec("report_covers_every_filter", asset=REPORT,
                                   description="one row per filter, every share in [0, 1]; passes when skipped")],
)
def curation_report(context: dg.AssetExecutionContext, config: CurationReportConfig, home: HomeResource):
    f = config.keep_fraction
    if not (isinstance(f, (int, float)) and 0.0 <= f <= 1.0):
        raise dg.Failure(f"curation_report config keep_fraction must be in [0, 1], got {f!r}")
    h = home.path()
    specs = _stored_filters(h, context.log.warning)
    drops, _ = F.pool_files(h)
    truth, truth_drops = R.truth_files(home.landing(), drops)
    if not truth:
        context.log.warning("no scored drop has a ground-truth file (not a synthetic world): nothing to report")
        return dg.MaterializeResult(
            metadata={"skipped": True, "note": "no <drop>.truth.parquet beside any scored drop", "drops": len(drops)},
            check_results=[dg.AssetCheckResult(check_name="report_covers_every_filter", passed=True,
                                               metadata={"skipped": True})])
    at_f = [s.at_fraction(f) for s in specs]
    con = F.connect()
    try:
        with F.scratch_dir(h) as scratch:
            pool = F.build_pool(con, h, Path(scratch) / "pool.parquet")
            results = F.run_filters(con, pool, at_f, Path(scratch) / "subsets")
            rows = R.curation_report_rows(con, at_f, results, truth, f)
    finally:
        con.close()
    table = pa.Table.from_pylist(rows, schema=R.REPORT_SCHEMA)
    write_table(asset_dir("curation_report", h) / "curation_report.parquet", table)
    views = home.refresh_catalog()
    shares_ok = all(r[c] is None or (0.0 <= r[c] <= 1.0 and not math.isnan(r[c]))
                    for r in rows for c in ("aligned_share", "misaligned_share", "placeholder_share",
                                            "placeholders_kept"))
    by = {r["filter"]: r for r in rows}
    metadata = {
        "dagster/row_count": len(rows), "keep_fraction": f, "pool": pool.rows,
        "pool_with_truth": rows[0]["pool"] if rows else 0, "drops_with_truth": len(truth_drops),
        "drops_without_truth": len(drops) - len(truth_drops),
        "report": markdown_table(rows, ["filter", "setting", "kept", "kept_fraction", "aligned_share",
                                        "placeholder_share", "placeholders_kept", "mean_true_log_ratio",
                                        "mean_true_kl_text"], max_rows=50),
        "plot": figure_metadata(R.report_plot(rows, f)), "views": ", ".join(views),
    }
    for name in ("no_filter", "kl_text", "clip_score"):
        if name in by and by[name]["aligned_share"] is not None:
            metadata[f"aligned_share_{name}"] = float(by[name]["aligned_share"])
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[dg.AssetCheckResult(
            check_name="report_covers_every_filter",
            passed=bool(shares_ok and [r["filter"] for r in rows] == [s.name for s in specs]),
            metadata={"filters": len(specs), "rows": len(rows)})],
    )


# -------------------------------------------------------------------------------------------- ngram_analysis
class NgramConfig(dg.Config):
    """max_rows: captions analysed (a pseudo-random sample by hash of uid and seed when the pool is larger);
    ns: n-gram orders; ks: top-K sizes."""

    max_rows: int = 200_000
    seed: int = 0
    ns: list[int] = [1, 2, 3]
    ks: list[int] = [50, 100, 500, 1000]


@dg.asset(
    deps=["kl_stats", "raw_pairs"],
    description=(
        "PAPER.md section 2: captions split into 10 equal-size deciles by KL (text side: text_kl of the caption; "
        "image side: image_kl of its image), and per decile the share of all 1/2/3-gram occurrences (lower-cased "
        "word tokens padded with <s> and </s>) covered by the decile's top-K n-grams, K = 50, 100, 500, 1000; plus "
        "the Pearson correlation of KL with caption length, vocabulary size and type-token ratio. Low-KL "
        "(generic) deciles are dominated by few n-grams. Pool deduplicated by uid like curated_subsets; at most "
        "max_rows captions (a seeded sample). Parquet warehouse/ngram_analysis/, DuckDB views ngram_coverage and "
        "ngram_correlations, heatmap in metadata."
    ),
    group_name="curate",
    kinds={"duckdb", "parquet"},
    owners=["team:curation"],
    tags=GLOBAL_GRAIN,
    pool="duckdb",
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[dg.AssetCheckSpec("coverage_valid", asset=NGRAMS,
                                   description="coverage in [0, 1] and non-decreasing in K; ten deciles per side")],
)
def ngram_analysis(context: dg.AssetExecutionContext, config: NgramConfig, home: HomeResource):
    if config.max_rows < 10 or not config.ns or not config.ks or min(config.ns) < 1 or min(config.ks) < 1:
        raise dg.Failure(f"ngram_analysis config: need max_rows >= 10 and positive ns/ks, got max_rows="
                         f"{config.max_rows}, ns={config.ns}, ks={config.ks}")
    h = home.path()
    t0 = time.perf_counter()
    drops, files = F.pool_files(h, assets=("kl_stats", "raw_pairs"))
    if not drops:
        raise dg.Failure("ngram_analysis: no drop has both kl_stats and raw_pairs yet")
    con = F.connect()
    try:
        table = con.sql(load_sql("queries/curate_ngram_pool"), params={
            "kl_files": files["kl_stats"], "raw_files": files["raw_pairs"], "max_rows": config.max_rows,
            "seed": config.seed}).to_arrow_table()
    finally:
        con.close()
    captions = table["caption"].to_pylist()
    kl = {c: table[c].to_numpy(zero_copy_only=False) for _, c in R.SIDES}
    coverage, corr = R.ngram_tables(captions, kl, config.ns, config.ks)
    with stage_dir(asset_dir("ngram_analysis", h)) as w:
        w.write_table("coverage.parquet", coverage)
        w.write_table("correlations.parquet", corr)
    views = home.refresh_catalog()
    pool_rows = int(table["pool_rows"][0].as_py()) if table.num_rows else 0

    cov = coverage.to_pylist()
    monotone = True
    for side, _ in R.SIDES:
        for d in {r["decile"] for r in cov if r["side"] == side}:
            for n in config.ns:
                vals = [r["coverage"] for r in sorted(cov, key=lambda r: r["k"])
                        if r["side"] == side and r["decile"] == d and r["n"] == n]
                vals = [v for v in vals if not math.isnan(v)]
                monotone &= all(a <= b + 1e-12 for a, b in zip(vals, vals[1:]))
    in_range = all(math.isnan(r["coverage"]) or 0.0 <= r["coverage"] <= 1.0 for r in cov)
    deciles = {side: len({r["decile"] for r in cov if r["side"] == side}) for side, _ in R.SIDES}
    ten = all(v == 10 for v in deciles.values()) or table.num_rows < 10
    head = [r for r in cov if r["n"] == 1 and r["k"] == min(config.ks)]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": coverage.num_rows, "captions": table.num_rows, "pool_rows": pool_rows,
            "sampled": table.num_rows < pool_rows, "drops": len(drops),
            "heatmap": figure_metadata(R.ngram_heatmap(coverage, config.ns, config.ks)),
            "correlations": markdown_table(corr.to_pylist()),
            f"unigram_top{min(config.ks)}_coverage": markdown_table(
                head, ["side", "decile", "rows", "kl_min", "kl_max", "coverage", "distinct_ngrams"], max_rows=20),
            "seconds": round(time.perf_counter() - t0, 3), "views": ", ".join(views),
        },
        check_results=[dg.AssetCheckResult(
            check_name="coverage_valid", passed=bool(monotone and in_range and ten),
            metadata={"monotone_in_k": monotone, "in_range": in_range,
                      "deciles": ", ".join(f"{k}: {v}" for k, v in deciles.items())})],
    )


defs_assets = [curated_subsets, curation_report, ngram_analysis]
