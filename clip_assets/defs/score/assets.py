"""Score domain: reference_set (global) -> pair_scores + kl_stats (per drop) -> score_calibration (global)."""

import time

import dagster as dg
import numpy as np
import pyarrow as pa

from clip_assets.core.calibration import auc, pearson, spearman
from clip_assets.core.drop_scores import drop_statistics
from clip_assets.defs.partitions import DROP_GRAIN, GLOBAL_GRAIN, drops_partitions
from clip_assets.defs.plots import figure_metadata, markdown_table, pyplot
from clip_assets.defs.resources import HomeResource
from clip_assets.io.drops import validate_drop_name
from clip_assets.io.reference import load_reference, sample_reference, write_reference
from clip_assets.io.tables import drops_with, read_embeddings, read_partition
from clip_assets.io.commit import stage_dir, write_table
from clip_assets.io.warehouse import asset_dir, partition_dir
from clip_assets.models.card import read_card

PAIR_SCORES = dg.AssetKey("pair_scores")
KL_STATS = dg.AssetKey("kl_stats")
PAIR_COLUMNS = ["clip_score", "s", "log_r_img", "log_r_txt", "log_r_siglip"]
KL_COLUMNS = ["image_kl", "image_klr", "image_dc", "image_dw", "text_kl", "text_klr", "text_dc", "text_dw"]


class ReferenceSetConfig(dg.Config):
    """n: reference images (and, drawn independently, texts); seed: the draw; drops: restrict the pool (empty =
    every drop that has embeddings)."""

    n: int = 25_000
    seed: int = 0
    drops: list[str] = []


@dg.asset(
    deps=["embeddings"],
    description=(
        "N image and N text embeddings sampled independently (seeded, without replacement) from the pool's "
        "embeddings, plus their means and covariances, with a content id (reference_id). Self-normalised density "
        "ratios and KL estimates are taken against it. It changes only when materialized on purpose (no "
        "automation): then Dagster shows pair_scores/kl_stats as stale. Grain: global; one file set under "
        "`warehouse/reference_set/current/`."
    ),
    group_name="score",
    kinds={"parquet", "numpy"},
    owners=["team:curation"],
    tags=GLOBAL_GRAIN,
    automation_condition=dg.AutomationCondition.on_missing(),
    check_specs=[dg.AssetCheckSpec("reference_sizes", asset="reference_set", blocking=True,
                                   description="N images and N texts, N = min(configured n, pool rows)")],
)
def reference_set(context: dg.AssetExecutionContext, config: ReferenceSetConfig, home: HomeResource):
    if config.n < 1:
        raise dg.Failure(f"reference_set config n must be >= 1, got {config.n}")
    drops = [validate_drop_name(d) for d in config.drops] or drops_with("embeddings", home.path())
    if not drops:
        raise dg.Failure("no drop has embeddings yet: materialize embeddings for at least one drop")
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
        },
        check_results=[dg.AssetCheckResult(
            check_name="reference_sizes", passed=bool(info["n"] == min(config.n, info["pool_rows"])),
            metadata={"n": info["n"], "asked": config.n, "pool_rows": info["pool_rows"]})],
    )


class ScoreConfig(dg.Config):
    """budget_elems: largest score block (targets x references) held at once; siglip_tau: with a SigLIP model,
    also write the exact NCE reading log r = s + b + log tau (tau = negatives per positive in its training)."""

    budget_elems: int = 2**24
    siglip_tau: float | None = None


def _hist_plot(cols: dict[str, np.ndarray], title: str):
    plt = pyplot()

    names = list(cols)
    fig, axes = plt.subplots(2, (len(names) + 1) // 2, figsize=(3.2 * ((len(names) + 1) // 2), 5.5))
    for ax, name in zip(np.ravel(axes), names):
        x = cols[name][np.isfinite(cols[name])]
        ax.hist(x, bins=50, color="#4c72b0")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return figure_metadata(fig)


def _extremes(captions: list[str], values: np.ndarray, name: str, k: int = 5) -> list[dict]:
    order = np.argsort(values, kind="stable")
    rows = [{"stat": name, "end": "top", "value": float(values[i]), "caption": captions[i]} for i in order[::-1][:k]]
    rows += [{"stat": name, "end": "bottom", "value": float(values[i]), "caption": captions[i]} for i in order[:k]]
    return rows


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            PAIR_SCORES, deps=["embeddings", "reference_set", "contrastive_model"],
            description=(
                "Per pair of one drop: CLIP score (cosine), s = a<u,v>, image-conditioned log r_img and "
                "text-conditioned log r_txt (self-normalised over the reference set), and for SigLIP with a tau "
                "the exact log r. Every row carries model_id and reference_id. Grain: (drop, uid)."
            ),
            group_name="score", kinds={"parquet"}, owners=["team:curation"], tags=DROP_GRAIN,
            partitions_def=drops_partitions, automation_condition=dg.AutomationCondition.eager(),
        ),
        dg.AssetSpec(
            KL_STATS, deps=["embeddings", "reference_set", "contrastive_model"],
            description=(
                "Per image and per caption of one drop: D_KL = KL(p(y|x)||p(y)), D_KLR (reverse), and the "
                "second-order D_C and D_W (with the 1/2), against the reference set. Grain: (drop, uid); "
                "image_* columns describe the pair's image, text_* its caption."
            ),
            group_name="score", kinds={"parquet"}, owners=["team:curation"], tags=DROP_GRAIN,
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
    t0 = time.perf_counter()
    emb, U, V = read_embeddings(drop, h)
    ref = load_reference(h)
    card = read_card(h)
    model_ids = set(emb["model_id"].unique().to_pylist())
    if model_ids != {ref.model_id} or card["model_id_str"] != ref.model_id:
        raise dg.Failure(
            f"model mismatch for drop {drop}: embeddings {sorted(model_ids)}, reference set {ref.model_id}, "
            f"current contrastive_model {card['model_id_str']}. Re-materialize embeddings and reference_set."
        )
    a = float(card["model_id"]["logit_scale"])
    b = card["model_id"].get("logit_bias")
    st = drop_statistics(U, V, ref.images, ref.texts, ref.image_mean, ref.text_mean, ref.image_cov, ref.text_cov,
                         a, b=b, tau=config.siglip_tau, budget_elems=config.budget_elems)
    seconds = time.perf_counter() - t0
    n = emb.num_rows
    lineage = {"drop": pa.array([drop] * n), "model_id": pa.array([ref.model_id] * n),
               "reference_id": pa.array([ref.reference_id] * n)}
    pair_cols = {c: pa.array(st[c]) if c in st else pa.nulls(n, pa.float64()) for c in PAIR_COLUMNS}
    pair_t = pa.table({"uid": emb["uid"], **pair_cols, **lineage})
    kl_t = pa.table({"uid": emb["uid"], **{c: pa.array(st[c]) for c in KL_COLUMNS}, **lineage})
    with stage_dir(partition_dir("pair_scores", drop, h)) as w:
        w.write_table("part-00000.parquet", pair_t)
    with stage_dir(partition_dir("kl_stats", drop, h)) as w:
        w.write_table("part-00000.parquet", kl_t)

    captions = read_partition("raw_pairs", drop, h, columns=["uid", "caption"])
    cap_by_uid = dict(zip(captions["uid"].to_pylist(), captions["caption"].to_pylist()))
    caps = [cap_by_uid.get(u, "?") for u in emb["uid"].to_pylist()]
    ex_pairs = sum((_extremes(caps, st[c], c) for c in ("clip_score", "log_r_img", "log_r_txt")), [])
    ex_kl = sum((_extremes(caps, st[c], c) for c in ("text_kl", "text_klr", "image_kl")), [])
    log_n = float(np.log(ref.n))
    common = {"dagster/row_count": n, "model_id": ref.model_id, "reference_id": ref.reference_id,
              "reference_n": ref.n, "logit_scale_a": a, "seconds": round(seconds, 3),
              "pairs_per_s": round(n / seconds, 1) if seconds > 0 else 0.0}
    yield dg.MaterializeResult(
        asset_key=PAIR_SCORES,
        metadata={**common, "histograms": _hist_plot({c: st[c] for c in PAIR_COLUMNS if c in st}, drop),
                  "examples": markdown_table(ex_pairs, max_rows=30)},
    )
    yield dg.MaterializeResult(
        asset_key=KL_STATS,
        metadata={**common, "histograms": _hist_plot({c: st[c] for c in KL_COLUMNS}, drop),
                  "examples": markdown_table(ex_kl, max_rows=30)},
    )
    finite = all(np.isfinite(st[c]).all() for c in st)
    yield dg.AssetCheckResult(check_name="rows_match_embeddings", asset_key=PAIR_SCORES,
                              passed=bool(pair_t.num_rows == n), metadata={"rows": pair_t.num_rows, "embeddings": n})
    yield dg.AssetCheckResult(check_name="scores_finite", asset_key=PAIR_SCORES, passed=bool(finite))
    tol = 1e-9
    in_range = bool(
        finite
        and all((st[f"{side}_kl"] >= -tol).all() and (st[f"{side}_kl"] <= log_n + tol).all()
                and (st[f"{side}_klr"] >= -tol).all() and (st[f"{side}_dc"] >= 0).all()
                and (st[f"{side}_dw"] >= -tol).all() for side in ("image", "text"))
    )
    yield dg.AssetCheckResult(check_name="kl_in_range", asset_key=KL_STATS, passed=in_range,
                              metadata={"log_N": log_n,
                                        "max_image_kl": float(np.max(st["image_kl"])),
                                        "max_text_kl": float(np.max(st["text_kl"]))})


# ----------------------------------------------------------------------------------------- calibration
ESTIMATES = [
    # (estimate column, truth column)
    ("log_r_img", "true_log_ratio"), ("log_r_txt", "true_log_ratio"), ("s", "true_log_ratio"),
    ("clip_score", "true_log_ratio"),
    ("image_kl", "true_kl_image"), ("image_klr", "true_klr_image"), ("image_dc", "true_kl_image"),
    ("image_dw", "true_kl_image"),
    ("text_kl", "true_kl_text"), ("text_klr", "true_klr_text"), ("text_dc", "true_kl_text"),
    ("text_dw", "true_kl_text"),
]
AUC_SCORES = ["clip_score", "s", "log_r_img", "log_r_txt"]


def calibration_table(df) -> list[dict]:
    """Spearman/Pearson of each estimate vs its exact truth, and AUC (aligned vs misaligned/placeholder)."""
    aligned = ~(df["is_misaligned"].to_numpy() | df["is_placeholder"].to_numpy())
    rows = []
    for est, truth in ESTIMATES:
        x, y = df[est].to_numpy(), df[truth].to_numpy()
        rows.append({"estimate": est, "truth": truth, "spearman": spearman(x, y), "pearson": pearson(x, y),
                     "auc_aligned": auc(x, aligned) if est in AUC_SCORES else float("nan"), "n": int(len(x))})
    return rows


@dg.asset(
    deps=[PAIR_SCORES, KL_STATS],
    description=(
        "Synthetic world only: compares every estimate with the exact ground truth written beside each drop "
        "(`<drop>.truth.parquet`): Spearman and Pearson of estimated vs true log ratio and KL per image/caption, "
        "and AUC of each score for separating aligned from misaligned/placeholder pairs. One table (Parquet + "
        "DuckDB view score_calibration) and scatter plots. Drops without a truth file are skipped."
    ),
    group_name="score", kinds={"parquet"}, owners=["team:curation"], tags=GLOBAL_GRAIN,
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[dg.AssetCheckSpec("calibration_finite", asset="score_calibration",
                                   description="every correlation is finite when there is truth")],
)
def score_calibration(context: dg.AssetExecutionContext, home: HomeResource):
    import polars as pl

    h = home.path()
    drops = [d for d in drops_with("kl_stats", h) if (home.landing() / f"{d}.truth.parquet").is_file()]
    if not drops:
        context.log.warning("no scored drop has a ground-truth file: nothing to calibrate")
        yield dg.MaterializeResult(metadata={"drops": 0, "note": "no ground truth (not a synthetic drop)"})
        yield dg.AssetCheckResult(check_name="calibration_finite", passed=True, metadata={"skipped": True})
        return
    frames = []
    for d in drops:
        ps = pl.read_parquet(partition_dir("pair_scores", d, h) / "*.parquet")
        kl = pl.read_parquet(partition_dir("kl_stats", d, h) / "*.parquet").select(["uid", *KL_COLUMNS])
        truth = pl.read_parquet(home.landing() / f"{d}.truth.parquet")
        frames.append(ps.join(kl, on="uid").join(truth.drop("drop"), on="uid", how="inner"))
    df = pl.concat(frames)
    rows = calibration_table(df)
    table = pa.Table.from_pylist(rows)
    write_table(asset_dir("score_calibration", h) / "score_calibration.parquet", table)

    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    sub = df.sample(n=min(5000, df.height), seed=0)
    colours = np.where(sub["is_placeholder"].to_numpy(), "#c44e52",
                       np.where(sub["is_misaligned"].to_numpy(), "#dd8452", "#4c72b0"))
    for ax, (est, truth) in zip(axes, [("log_r_img", "true_log_ratio"), ("image_kl", "true_kl_image"),
                                       ("text_kl", "true_kl_text")]):
        ax.scatter(sub[truth].to_numpy(), sub[est].to_numpy(), s=4, alpha=0.4, c=colours)
        r = next(x for x in rows if x["estimate"] == est and x["truth"] == truth)
        ax.set_xlabel(f"true {truth}")
        ax.set_ylabel(f"estimated {est}")
        ax.set_title(f"Spearman {r['spearman']:.3f}  Pearson {r['pearson']:.3f}", fontsize=9)
    fig.suptitle("estimates vs exact truth (blue aligned, orange misaligned, red placeholder)")
    fig.tight_layout()
    by = {(r["estimate"], r["truth"]): r for r in rows}
    yield dg.MaterializeResult(metadata={
        "drops": len(drops), "pairs": df.height,
        "spearman_log_r_img": by[("log_r_img", "true_log_ratio")]["spearman"],
        "spearman_log_r_txt": by[("log_r_txt", "true_log_ratio")]["spearman"],
        "spearman_image_kl": by[("image_kl", "true_kl_image")]["spearman"],
        "spearman_text_kl": by[("text_kl", "true_kl_text")]["spearman"],
        "table": markdown_table(rows, ["estimate", "truth", "spearman", "pearson", "auc_aligned"], max_rows=20),
        "scatter": figure_metadata(fig),
    })
    ok = all(np.isfinite(r["spearman"]) for r in rows)
    yield dg.AssetCheckResult(check_name="calibration_finite", passed=bool(ok))


defs_assets = [reference_set, scores, score_calibration]
