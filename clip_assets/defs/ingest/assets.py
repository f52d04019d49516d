"""Ingest domain: landing drops -> ``raw_pairs`` + ``rejected_pairs`` (per drop); the DuckDB ``catalog`` (its own
group, last in the graph: it depends on every warehouse table)."""

import dagster as dg

from clip_assets.config import warehouse_dir
from clip_assets.defs.ingest.checks import catalog_balance
from clip_assets.defs.keys import CATALOG, CATALOG_TABLES, RAW_PAIRS, REJECTED_PAIRS
from clip_assets.defs.partitions import DROP_GRAIN, GLOBAL_GRAIN, drops_partitions
from clip_assets.defs.plots import markdown_table
from clip_assets.defs.resources import HomeResource
from clip_assets.defs.specs import table_metadata
from clip_assets.io import fs
from clip_assets.io.completeness import drop_counts
from clip_assets.io.drops import child, is_store, validate_drop_name
from clip_assets.io.ingest import RAW_PAIRS_SCHEMA, REJECTED_SCHEMA, ingest_drop
from clip_assets.io.warehouse import partition_dir


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            RAW_PAIRS,
            description=(
                "Kept image-text pairs of one drop. Grain: one row per (drop, uid). Columns: uid, drop, shard, "
                "key, caption, url, width, height, image_sha256, image_format and a pointer (tar_path, member, "
                "offset, size) to the image bytes inside the drop's tar. Parquet: `warehouse/raw_pairs/drop=<drop>/`."
            ),
            group_name="ingest", kinds={"parquet"}, tags=DROP_GRAIN, partitions_def=drops_partitions,
            metadata=table_metadata(RAW_PAIRS_SCHEMA),
        ),
        dg.AssetSpec(
            REJECTED_PAIRS,
            description=(
                "Rows of one drop that ingestion did not keep, each with its reason (status_not_success, "
                "missing_image, undecodable_image, missing/empty caption, caption_not_utf8, truncated_tar, "
                "duplicate_uid) and detail. Rows seen = raw_pairs rows + rejected_pairs rows."
            ),
            group_name="ingest", kinds={"parquet"}, tags=DROP_GRAIN, partitions_def=drops_partitions,
            metadata=table_metadata(REJECTED_SCHEMA),
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec("rows_balance", asset=RAW_PAIRS, blocking=True,
                          description="rows seen = rows kept + rows rejected, read back from the warehouse"),
        dg.AssetCheckSpec("uids_unique", asset=RAW_PAIRS, blocking=True,
                          description="no uid appears twice within the drop"),
    ],
    can_subset=False,
)
def ingest(context: dg.AssetExecutionContext, home: HomeResource):
    """Stream the drop's shards into the warehouse; bad samples are rejected with a reason, never fatal."""
    drop = validate_drop_name(context.partition_key)
    landing = home.landing()  # a local folder, or a store URL (CLIP_ASSETS_LANDING=s3://...)
    drop_dir = child(landing, drop)
    if not (fs.exists(drop_dir) if is_store(drop_dir) else drop_dir.is_dir()):
        raise dg.Failure(f"drop {drop!r} has no folder {drop_dir}: was it moved or deleted from the landing folder?")

    def progress(counts, done, total):
        context.log.info(
            f"shard {counts.shard} ({done}/{total}): seen {counts.seen}, kept {counts.kept}, "
            f"rejected {counts.rejected}" + (f", tar error: {counts.tar_error}" if counts.tar_error else "")
        )

    res = ingest_drop(drop_dir, home=home.path(), progress=progress)
    kept, distinct, rejected = drop_counts(drop, home.path())
    reasons = [{"reason": k, "rows": v} for k, v in sorted(res.reasons.items(), key=lambda kv: -kv[1])]
    yield dg.MaterializeResult(asset_key=RAW_PAIRS, metadata={
        "dagster/row_count": kept, "drop": drop, "rows_seen": res.seen, "rows_kept": res.kept,
        "rows_rejected": res.rejected, "shards": len(res.shards), "seconds": round(res.seconds, 3),
        "pairs_per_s": round(res.seen / res.seconds, 1) if res.seconds > 0 else 0.0,
        "image_megabytes": round(res.image_bytes / 1e6, 3),
        "path": dg.MetadataValue.path(str(partition_dir("raw_pairs", drop, home.path()))),
    })
    yield dg.MaterializeResult(asset_key=REJECTED_PAIRS, metadata={
        "dagster/row_count": rejected, "drop": drop,
        "reasons": markdown_table(reasons) if reasons else dg.MetadataValue.md("_no rejected rows_"),
    })
    yield dg.AssetCheckResult(
        check_name="rows_balance", asset_key=RAW_PAIRS,
        passed=bool(res.seen == kept + rejected and kept == res.kept and rejected == res.rejected),
        description=f"drop {drop}: {res.seen} seen, {kept} kept + {rejected} rejected in the warehouse",
        metadata={"drop": drop, "seen": res.seen, "kept_in_warehouse": kept, "rejected_in_warehouse": rejected},
    )
    yield dg.AssetCheckResult(
        check_name="uids_unique", asset_key=RAW_PAIRS, passed=bool(distinct == kept),
        description=f"drop {drop}: {distinct} distinct uids in {kept} rows",
        metadata={"drop": drop, "rows": kept, "distinct_uids": distinct},
    )


@dg.asset(
    key=CATALOG,
    deps=CATALOG_TABLES,
    description=(
        "The DuckDB catalog `<home>/clip_assets.duckdb`: (re)creates the SQL views in sql/views over the Parquet "
        "warehouse (raw_pairs, rejected_pairs, drops, and the downstream tables once they exist). Views read the "
        "files at query time, so new drops appear without a refresh; this asset runs when a new table appears, "
        "and it is the only place the views are refreshed. Its check runs with every rebuild."
    ),
    group_name="catalog",
    kinds={"duckdb"},
    tags=GLOBAL_GRAIN,
    pool="duckdb",
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[dg.AssetCheckSpec(
        "views_and_drops_balance", asset=CATALOG,
        description=("Every view in sql/views whose tables exist in the warehouse exists in the DuckDB file; every "
                     "row of the drops view has seen = kept + rejected and matches the counts recorded by raw_pairs "
                     "for that drop."))],
)
def catalog(context: dg.AssetExecutionContext, home: HomeResource):
    views = home.refresh_catalog()
    context.log.info(f"views: {', '.join(views) or '(none yet)'}")
    yield dg.MaterializeResult(metadata={"views": ", ".join(views), "warehouse": str(warehouse_dir(home.path()))})
    yield catalog_balance(context.instance, home)


defs_assets = [ingest, catalog]
