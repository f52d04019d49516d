"""Decorator defaults shared by every asset, applied once to the merged Definitions, and the column schema
metadata derived from an asset's pyarrow schema."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa

OWNERS = ["team:curation"]


def _shared(spec: dg.AssetSpec) -> dg.AssetSpec:
    return spec.replace_attributes(owners=OWNERS)


def with_shared_defaults(defs: dg.Definitions) -> dg.Definitions:
    """``defs`` with the shared owners set on every asset spec (dg.map_asset_specs)."""
    return dg.Definitions(
        assets=dg.map_asset_specs(_shared, list(defs.assets or [])), asset_checks=defs.asset_checks,
        jobs=defs.jobs, schedules=defs.schedules, sensors=defs.sensors, resources=defs.resources,
        executor=defs.executor, loggers=defs.loggers, metadata=defs.metadata,
    )


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    """A pyarrow schema as Dagster's TableSchema (name, Arrow type, nullability)."""
    return dg.TableSchema(columns=[
        dg.TableColumn(f.name, str(f.type), constraints=dg.TableColumnConstraints(nullable=f.nullable))
        for f in schema
    ])


def table_metadata(schema: pa.Schema) -> dict:
    """Definition metadata that makes the UI list a table asset's columns."""
    return {"dagster/column_schema": column_schema(schema)}
