"""Score domain: reference_set (global) -> pair_scores + kl_stats (per drop) -> score_calibration (global).

Glue only: the computation is :mod:`clip_assets.score` (on :mod:`clip_assets.core`), the reference set
:mod:`clip_assets.io.reference`.
"""

import time

import dagster as dg
import numpy as np
from pydantic import Field

from clip_assets.defs.keys import (CONTRASTIVE_MODEL, EMBEDDINGS, KL_STATS, PAIR_SCORES, REFERENCE_SET,
                                   SCORE_CALIBRATION)
from clip_assets.defs.partitions import DROP_GRAIN, GLOBAL_GRAIN, drops_partitions
from clip_assets.defs.plots import figure_metadata, markdown_table, report_metadata
from clip_assets.defs.resources import HomeResource
from clip_assets.defs.specs import column_schema, table_metadata
from clip_assets.io.completeness import partition_rows
from clip_assets.io.drops import validate_drop_name
from clip_assets.io.reference import sample_reference, write_reference
from clip_assets.io.tables import drops_with
from clip_assets.models.executors import executor
from clip_assets.report.build import drop_report, prune
from clip_assets.score import calibration as C
from clip_assets.score import drop as S


class ReferenceSetConfig(dg.Config):
    """n: reference images (and, drawn independently, texts); seed: the draw; drops: restrict the pool (empty =
    every drop that has embeddings)."""

    n: int = Field(25_000, ge=1)
    seed: int = 0
    drops: list[str] = []


@dg.asset(
    key=REFERENCE_SET,
    deps=[EMBEDDINGS],
    description=(
        "N image and N text embeddings sampled independently (seeded, without replacement) from the pool's "
        "embeddings, plus their means and covariances, with a content id (reference_id). Self-normalised density "
        "ratios and KL estimates are taken against it. It changes only when materialized on purpose (no "
        "automation): then Dagster shows pair_scores/kl_stats as stale. Refuses drops whose embeddings do not "
        "cover their raw_pairs. Grain: global; one file set under `warehouse/reference_set/current/`."
    ),
    group_name="score",
    kinds={"parquet", "numpy"},
    tags=GLOBAL_GRAIN,
    automation_condition=dg.AutomationCondition.on_missing(),
    check_specs=[dg.AssetCheckSpec("reference_sizes", asset=REFERENCE_SET, blocking=True,
                                   description="N images and N texts, N = min(configured n, pool rows)")],
)
def reference_set(context: dg.AssetExecutionContext, config: ReferenceSetConfig, home: HomeResource):
    drops = [validate_drop_name(d) for d in config.drops] or drops_with("embeddings", home.path())
    if not drops:
        raise dg.Failure("no drop has embeddings yet: materialize embeddings for at least one drop")
    home.require_complete(EMBEDDINGS, drops, consumer=REFERENCE_SET)
    t0 = time.perf_counter()
    table, info = sample_reference(drops, config.n, config.seed, home.path())
    write_reference(table, info, home.path())
    context.log.info(f"reference set {info['reference_id']}: {info['n']} of {info['pool_rows']} rows")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(info["reference_id"]),
        metadata={
            "reference_id": info["reference_id"], "model_id": info["model_id"], "n": info["n"],
            "pool_rows": info["pool_rows"], "seed": info["seed"], "drops": ", ".join(info["drops"]),
            "seconds": round(time.perf_counter() - t0, 2),
            "dagster/column_schema": column_schema(table.schema),
        },
        check_results=[dg.AssetCheckResult(
            check_name="reference_sizes", passed=bool(info["n"] == min(config.n, info["pool_rows"])),
            metadata={"n": info["n"], "asked": config.n, "pool_rows": info["pool_rows"]})],
    )


class ScoreConfig(dg.Config):
    """budget_elems: largest score block (targets x references) held at once; siglip_tau: with a SigLIP model,
    also write the exact NCE reading log r = s + b + log tau (tau = negatives per positive in its training);
    executor: "local" (in process) or "ray" (one Ray task per embeddings shard, the reference set broadcast once
    through the object store, on the cluster at RAY_ADDRESS, else a local one); empty = $CLIP_ASSETS_EXECUTOR,
    else "local". Both write the same rows."""

    budget_elems: int = Field(2**24, ge=1)
    siglip_tau: float | None = Field(None, gt=0, allow_inf_nan=False)
    executor: str = ""


_SCORE_DEPS = [EMBEDDINGS, REFERENCE_SET, CONTRASTIVE_MODEL]
REPORTS_KEPT_PER_DROP = 5  # newest reports of each drop kept under <home>/reports/{pair_scores,kl_stats}/


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            PAIR_SCORES, deps=_SCORE_DEPS,
            description=(
                "Per pair of one drop: CLIP score (cosine), s = a<u,v>, image-conditioned log r_img and "
                "text-conditioned log r_txt (self-normalised over the reference set), and for SigLIP with a tau "
                "the exact log r. Every row carries model_id and reference_id. Refuses an embeddings partition "
                "that does not hold every raw_pairs uid once. Grain: (drop, uid)."
            ),
            group_name="score", kinds={"parquet"}, tags=DROP_GRAIN, metadata=table_metadata(S.PAIR_SCORES_SCHEMA),
            partitions_def=drops_partitions, automation_condition=dg.AutomationCondition.eager(),
        ),
        dg.AssetSpec(
            KL_STATS, deps=_SCORE_DEPS,
            description=(
                "Per image and per caption of one drop: D_KL = KL(p(y|x)||p(y)), D_KLR (reverse), and the "
                "second-order D_C and D_W (with the 1/2), against the reference set. Grain: (drop, uid); "
                "image_* columns describe the pair's image, text_* its caption."
            ),
            group_name="score", kinds={"parquet"}, tags=DROP_GRAIN, metadata=table_metadata(S.KL_STATS_SCHEMA),
            partitions_def=drops_partitions, automation_condition=dg.AutomationCondition.eager(),
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec("rows_match_embeddings", asset=PAIR_SCORES, blocking=True,
                          description="one row per embeddings row, same uids"),
        dg.AssetCheckSpec("scores_finite", asset=PAIR_SCORES, blocking=True,
                          description="no NaN/inf in any score"),
        dg.AssetCheckSpec("kl_in_range", asset=KL_STATS, blocking=True,
                          description="0 <= D_KL <= log N, D_KLR >= 0, D_C, D_W >= 0, all finite"),
    ],
    can_subset=False,
)
def scores(context: dg.AssetExecutionContext, config: ScoreConfig, home: HomeResource):
    """One pass per modality against the reference set gives every score and KL statistic of the drop."""
    drop = validate_drop_name(context.partition_key)
    h = home.path()
    run_on = executor(config.executor)
    home.require_complete(EMBEDDINGS, [drop], consumer=PAIR_SCORES)
    try:
        if run_on == "ray":
            from clip_assets.score.drop_ray import score_drop_ray  # ray is an optional extra

            sd = score_drop_ray(drop, h, config.budget_elems, config.siglip_tau, log=context.log.info)
        else:
            sd = S.score_drop(drop, h, config.budget_elems, config.siglip_tau)
    except S.LineageMismatchError as e:
        raise dg.Failure(str(e)) from None
    ref, st, n = sd.reference, sd.stats, sd.rows
    common = {"dagster/row_count": n, "drop": drop, "executor": run_on, "model_id": ref.model_id,
              "reference_id": ref.reference_id,
              "reference_n": ref.n, "logit_scale_a": sd.logit_scale, "seconds": round(sd.seconds, 3),
              "pairs_per_s": round(n / sd.seconds, 1) if sd.seconds > 0 else 0.0}
    # per asset: its columns, the extremes listed, the histograms of its report (KL: with decile sheets)
    for key, cols, ex, shown in (
            (PAIR_SCORES, S.PAIR_COLUMNS, ("clip_score", "log_r_img", "log_r_txt"), ("clip_score", "log_r_img")),
            (KL_STATS, S.KL_COLUMNS, ("text_kl", "text_klr", "image_kl"), ("text_kl", "image_kl"))):
        rep = drop_report(h, key.to_user_string(), drop, context.run_id, columns=shown, deciles=key == KL_STATS)
        prune(h, key.to_user_string(), keep=REPORTS_KEPT_PER_DROP, drop=drop)
        yield dg.MaterializeResult(asset_key=key, metadata={
            **report_metadata(rep), **common,
            "histograms": figure_metadata(S.histograms({c: st[c] for c in cols if c in st}, drop)),
            "examples": markdown_table(S.extremes(sd, h, ex), max_rows=30)})
    finite = all(np.isfinite(st[c]).all() for c in st)
    named = {"drop": drop}
    stored = partition_rows("pair_scores", drop, h)
    yield dg.AssetCheckResult(check_name="rows_match_embeddings", asset_key=PAIR_SCORES, passed=stored == n,
                              description=f"drop {drop}: {stored} score rows stored for {n} embeddings rows "
                                          "(embeddings' uids checked against raw_pairs before scoring)",
                              metadata={**named, "rows": stored, "embeddings": n})
    yield dg.AssetCheckResult(check_name="scores_finite", asset_key=PAIR_SCORES, passed=bool(finite),
                              description=f"drop {drop}: every score finite" if finite else
                              f"drop {drop}: some score is NaN or infinite", metadata=named)
    yield dg.AssetCheckResult(check_name="kl_in_range", asset_key=KL_STATS, passed=S.kl_in_range(sd),
                              description=f"drop {drop}: KL statistics against log N = {np.log(ref.n):.4g}",
                              metadata={**named, "log_N": float(np.log(ref.n)),
                                        "max_image_kl": float(np.max(st["image_kl"])),
                                        "max_text_kl": float(np.max(st["text_kl"]))})


@dg.asset(
    key=SCORE_CALIBRATION,
    deps=[PAIR_SCORES, KL_STATS],
    description=(
        "Synthetic world only: compares every estimate with the exact ground truth written beside each drop "
        "(`<drop>.truth.parquet`): Spearman and Pearson of estimated vs true log ratio and KL per image/caption, "
        "and AUC of each score for separating aligned from misaligned/placeholder pairs. One table (Parquet + "
        "DuckDB view score_calibration) and scatter plots. Drops without a truth file are skipped."
    ),
    group_name="score", kinds={"parquet"}, tags=GLOBAL_GRAIN, metadata=table_metadata(C.CALIBRATION_SCHEMA),
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[dg.AssetCheckSpec("calibration_finite", asset=SCORE_CALIBRATION,
                                   description="every correlation is finite when there is truth")],
)
def score_calibration(context: dg.AssetExecutionContext, home: HomeResource):
    drops = C.scored_drops_with_truth(home.path(), home.landing())
    if not drops:
        context.log.warning("no scored drop has a ground-truth file: nothing to calibrate")
        yield dg.MaterializeResult(metadata={"drops": 0, "note": "no ground truth (not a synthetic drop)"})
        yield dg.AssetCheckResult(check_name="calibration_finite", passed=True, metadata={"skipped": True})
        return
    for key in (PAIR_SCORES, KL_STATS):
        home.require_complete(key, drops, consumer=SCORE_CALIBRATION)
    cal = C.calibrate(home.path(), home.landing(), drops)
    yield dg.MaterializeResult(metadata={
        "drops": len(drops), "pairs": cal.frame.height,
        "spearman_log_r_img": cal.by("log_r_img", "true_log_ratio")["spearman"],
        "spearman_log_r_txt": cal.by("log_r_txt", "true_log_ratio")["spearman"],
        "spearman_image_kl": cal.by("image_kl", "true_kl_image")["spearman"],
        "spearman_text_kl": cal.by("text_kl", "true_kl_text")["spearman"],
        "table": markdown_table(cal.rows, ["estimate", "truth", "spearman", "pearson", "auc_aligned"], max_rows=20),
        "scatter": figure_metadata(C.scatter(cal)),
    })
    ok = all(np.isfinite(r["spearman"]) for r in cal.rows)
    yield dg.AssetCheckResult(check_name="calibration_finite", passed=bool(ok))


defs_assets = [reference_set, scores, score_calibration]
