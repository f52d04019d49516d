"""The Parquet warehouse: ``<home>/warehouse/<asset>/drop=<key>/part-*.parquet`` (hive layout).

Where each asset's rows live. Writing goes through :mod:`clip_assets.io.commit` (one atomic mechanism for
every writer): a partition is built in a hidden staging folder and swapped in whole, so re-materializing a drop
replaces its rows and a crash leaves the previous partition visible. Hidden folders (leading ``.``) are not
matched by the catalog's globs.
"""

from __future__ import annotations

from pathlib import Path

from clip_assets.config import warehouse_dir


def partition_dir(asset: str, drop: str, home: Path | None = None) -> Path:
    """Folder of one asset's partition for one drop."""
    return warehouse_dir(home) / asset / f"drop={drop}"


def asset_dir(asset: str, home: Path | None = None) -> Path:
    """Folder of one asset (its partitions, or the files of a global asset)."""
    return warehouse_dir(home) / asset
