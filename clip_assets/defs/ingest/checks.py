"""Asset checks of the ingest domain that are not part of the ``ingest`` multi-asset itself.

* ``rejected_pairs/reasons_valid``: every rejected row has a reason, the rows in the warehouse match the row count
  the materialization recorded, and reasons come from the documented set (an unknown reason only warns: ingestion
  may learn new ones). It runs in the drop's run and checks that drop (``dagster/partition`` run tag); run alone or
  in a range backfill it checks every drop in the warehouse. It is deliberately not a *partitioned* check:
  ``partitions_def`` on asset checks is a preview feature in Dagster 1.13.
* ``catalog/views_and_drops_balance`` (global, computed by :func:`catalog_balance` inside the catalog asset, so it
  runs with every rebuild, the automatic ones included): every view in sql/views whose tables exist in the warehouse exists
  in the DuckDB file, and each row of the ``drops`` view balances (seen = kept + rejected) and agrees with the
  counts the latest ``raw_pairs`` materialization of that drop recorded (rows_seen / rows_kept / rows_rejected).
"""

import dagster as dg
import pyarrow.compute as pc

from clip_assets.defs.keys import CATALOG, RAW_PAIRS as RAW, REJECTED_PAIRS as REJECTED
from clip_assets.defs.resources import HomeResource
from clip_assets.io import catalog as catalog_io
from clip_assets.io.drops import validate_drop_name
from clip_assets.io.ingest import REJECT_REASONS as KNOWN_REJECT_REASONS
from clip_assets.io.tables import drops_with, read_partition

PARTITION_TAG = "dagster/partition"


def _latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None) -> dict | None:
    """Metadata (raw values) of the latest materialization of ``key`` (for ``partition``), or None."""
    flt = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition is not None else None)
    records = instance.fetch_materializations(flt, limit=1).records
    if not records:
        return None
    mat = records[0].asset_materialization
    return {k: getattr(v, "value", v) for k, v in (mat.metadata or {}).items()} if mat else None


def _reason_counts(drop: str, home: HomeResource) -> dict[str, int]:
    """Rejected rows of ``drop`` per reason (blank or missing reasons as ``<none>``); {} without a partition."""
    try:
        col = read_partition("rejected_pairs", drop, home.path(), columns=["reason"])["reason"]
    except FileNotFoundError:
        return {}
    blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(col), ""), True)
    named = pc.if_else(blank, "<none>", col)
    return {v["values"].as_py(): int(v["counts"].as_py()) for v in pc.value_counts(named)}


@dg.asset_check(
    asset=REJECTED,
    name="reasons_valid",
    description=(
        "Every rejected row of the drop (of every drop when run outside a drop's run) has a non-empty reason; "
        "the rows in the warehouse equal the row count the materialization recorded; an undocumented reason "
        "only warns."
    ),
)
def rejected_reasons_valid(context: dg.AssetCheckExecutionContext, home: HomeResource) -> dg.AssetCheckResult:
    drop = context.run.tags.get(PARTITION_TAG)
    if drop is not None:
        drops = [validate_drop_name(drop)]
    else:
        drops = drops_with("rejected_pairs", home.path())
    reasons: dict[str, int] = {}
    count_errors = []
    for d in drops:
        rows = _reason_counts(d, home)
        for r, n in rows.items():
            reasons[r] = reasons.get(r, 0) + n
        recorded = (_latest_metadata(context.instance, REJECTED, d) or {}).get("dagster/row_count")
        if recorded is not None and int(recorded) != sum(rows.values()):
            count_errors.append(f"{d}: {sum(rows.values())} rows in the warehouse, {int(recorded)} recorded")
    without_reason = reasons.get("<none>", 0)
    unknown = sorted(set(reasons) - KNOWN_REJECT_REASONS - {"<none>"})
    passed = without_reason == 0 and not count_errors
    judged = ", ".join(drops) if len(drops) <= 10 else f"{len(drops)} drops"
    return dg.AssetCheckResult(
        passed=bool(passed and not unknown),
        severity=dg.AssetCheckSeverity.ERROR if not passed else dg.AssetCheckSeverity.WARN,
        description=(f"drop {drops[0]}" if drop is not None else f"every drop ({judged})")
        + f": {sum(reasons.values())} rejected rows, {without_reason} without a reason",
        metadata={
            "drop": drops[0] if drop is not None else "all",
            "drops": judged,
            "rows": sum(reasons.values()),
            "row_count_mismatches": "; ".join(count_errors) or "none",
            "rows_without_reason": without_reason,
            "unknown_reasons": ", ".join(unknown) or "none",
            "reasons": ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())) or "none",
        },
    )


def catalog_balance(instance: dg.DagsterInstance, home: HomeResource) -> dg.AssetCheckResult:
    """The catalog's check, evaluated by the catalog asset after each rebuild (see the module docstring)."""
    expected = catalog_io.expected_views(home.path())
    with catalog_io.connect(home.path(), read_only=True) as con:
        present = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        drops = (con.execute("SELECT drop, seen, kept, rejected FROM drops ORDER BY drop").fetchall()
                 if "drops" in present else [])
    missing_views = [v for v in expected if v not in present]
    unbalanced, disagree, unrecorded = [], [], []
    for drop, seen, kept, rejected in drops:
        if seen != kept + rejected:
            unbalanced.append(drop)
        meta = _latest_metadata(instance, RAW, drop)
        if not meta or "rows_seen" not in meta:
            unrecorded.append(drop)  # ingested under another Dagster instance: nothing to compare with
            continue
        if (meta["rows_seen"], meta.get("rows_kept"), meta.get("rows_rejected")) != (seen, kept, rejected):
            disagree.append(f"{drop} (view {seen}/{kept}/{rejected}, recorded "
                            f"{meta['rows_seen']}/{meta.get('rows_kept')}/{meta.get('rows_rejected')})")
    return dg.AssetCheckResult(
        check_name="views_and_drops_balance", asset_key=CATALOG,
        passed=not (missing_views or unbalanced or disagree),
        metadata={
            "expected_views": ", ".join(expected) or "none yet",
            "missing_views": ", ".join(missing_views) or "none",
            "drops": len(drops),
            "unbalanced_drops": ", ".join(unbalanced) or "none",
            "drops_disagreeing_with_raw_pairs": "; ".join(disagree) or "none",
            "drops_without_a_recorded_materialization": len(unrecorded),
        },
    )


ingest_checks = [rejected_reasons_valid]
