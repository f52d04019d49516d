"""Ingest domain: landing drops -> ``raw_pairs`` + ``rejected_pairs`` (per drop) -> DuckDB ``catalog`` views."""


import dagster as dg
import duckdb

from clip_assets.config import warehouse_dir
from clip_assets.defs.partitions import DROP_GRAIN, GLOBAL_GRAIN, drops_partitions
from clip_assets.defs.plots import markdown_table
from clip_assets.defs.resources import HomeResource
from clip_assets.io.catalog import load_sql
from clip_assets.io.drops import validate_drop_name
from clip_assets.io.ingest import ingest_drop
from clip_assets.io.warehouse import partition_dir

RAW = dg.AssetKey("raw_pairs")
REJECTED = dg.AssetKey("rejected_pairs")


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            RAW,
            description=(
                "Kept image-text pairs of one drop. Grain: one row per (drop, uid). Columns: uid, drop, shard, "
                "key, caption, url, width, height, image_sha256, image_format and a pointer (tar_path, member, "
                "offset, size) to the image bytes inside the drop's tar. Parquet: `warehouse/raw_pairs/drop=<drop>/`."
            ),
            group_name="ingest",
            kinds={"parquet"},
            owners=["team:curation"],
            tags=DROP_GRAIN,
            partitions_def=drops_partitions,
        ),
        dg.AssetSpec(
            REJECTED,
            description=(
                "Rows of one drop that ingestion did not keep, each with its reason (status_not_success, "
                "missing_image, undecodable_image, missing/empty caption, caption_not_utf8, truncated_tar, "
                "duplicate_uid) and detail. Rows seen = raw_pairs rows + rejected_pairs rows."
            ),
            group_name="ingest",
            kinds={"parquet"},
            owners=["team:curation"],
            tags=DROP_GRAIN,
            partitions_def=drops_partitions,
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec("rows_balance", asset=RAW, blocking=True,
                          description="rows seen = rows kept + rows rejected, read back from the warehouse"),
        dg.AssetCheckSpec("uids_unique", asset=RAW, blocking=True,
                          description="no uid appears twice within the drop"),
    ],
    can_subset=False,
)
def ingest(context: dg.AssetExecutionContext, home: HomeResource):
    """Stream the drop's shards into the warehouse; bad samples are rejected with a reason, never fatal."""
    drop = validate_drop_name(context.partition_key)
    drop_dir = home.landing() / drop
    if not drop_dir.is_dir():
        raise dg.Failure(f"drop {drop!r} has no folder {drop_dir}: was it moved or deleted from the landing folder?")

    def progress(counts, done, total):
        context.log.info(
            f"shard {counts.shard} ({done}/{total}): seen {counts.seen}, kept {counts.kept}, "
            f"rejected {counts.rejected}" + (f", tar error: {counts.tar_error}" if counts.tar_error else "")
        )

    res = ingest_drop(drop_dir, home=home.path(), progress=progress)
    kept_glob = str(partition_dir("raw_pairs", drop, home.path()) / "*.parquet")
    rej_glob = str(partition_dir("rejected_pairs", drop, home.path()) / "*.parquet")
    kept, distinct, rejected = duckdb.execute(load_sql("queries/drop_counts"), [kept_glob, kept_glob, rej_glob]).fetchone()
    reasons = [{"reason": k, "rows": v} for k, v in sorted(res.reasons.items(), key=lambda kv: -kv[1])]
    yield dg.MaterializeResult(
        asset_key=RAW,
        metadata={
            "dagster/row_count": kept,
            "rows_seen": res.seen,
            "rows_kept": res.kept,
            "rows_rejected": res.rejected,
            "shards": len(res.shards),
            "seconds": round(res.seconds, 3),
            "pairs_per_s": round(res.seen / res.seconds, 1) if res.seconds > 0 else 0.0,
            "image_megabytes": round(res.image_bytes / 1e6, 3),
            "path": dg.MetadataValue.path(str(partition_dir("raw_pairs", drop, home.path()))),
        },
    )
    yield dg.MaterializeResult(
        asset_key=REJECTED,
        metadata={
            "dagster/row_count": rejected,
            "reasons": markdown_table(reasons) if reasons else dg.MetadataValue.md("_no rejected rows_"),
        },
    )
    yield dg.AssetCheckResult(
        check_name="rows_balance",
        asset_key=RAW,
        passed=bool(res.seen == kept + rejected and kept == res.kept and rejected == res.rejected),
        metadata={"seen": res.seen, "kept_in_warehouse": kept, "rejected_in_warehouse": rejected},
    )
    yield dg.AssetCheckResult(
        check_name="uids_unique", asset_key=RAW, passed=bool(distinct == kept),
        metadata={"rows": kept, "distinct_uids": distinct},
    )


# Every warehouse table with a view in sql/views: the catalog runs after any of them changes.
CATALOG_TABLES = [RAW, REJECTED, "pair_scores", "kl_stats", "score_calibration", "importance_weights",
                  "curated_subsets", "curation_report", "ngram_analysis"]


@dg.asset(
    deps=CATALOG_TABLES,
    description=(
        "The DuckDB catalog `<home>/clip_assets.duckdb`: (re)creates the SQL views in sql/views over the Parquet "
        "warehouse (raw_pairs, rejected_pairs, drops, and the downstream tables once they exist). Views read the "
        "files at query time, so new drops appear without a refresh; this asset runs when a new table appears."
    ),
    group_name="ingest",
    kinds={"duckdb"},
    owners=["team:curation"],
    tags=GLOBAL_GRAIN,
    pool="duckdb",
    automation_condition=dg.AutomationCondition.eager(),
)
def catalog(context: dg.AssetExecutionContext, home: HomeResource) -> dg.MaterializeResult:
    views = home.refresh_catalog()
    context.log.info(f"views: {', '.join(views) or '(none yet)'}")
    return dg.MaterializeResult(metadata={"views": ", ".join(views), "warehouse": str(warehouse_dir(home.path()))})


defs_assets = [ingest, catalog]
