"""The Parquet warehouse: ``<home>/warehouse/<asset>/drop=<key>/part-*.parquet`` (hive layout).

Two ways to write, both crash-safe (no reader ever sees a half-written file):

* :func:`write_parquet_atomic` writes one file to a temporary name in the same folder and ``os.replace``-s it
  into place. Used for per-shard outputs that are resumable one shard at a time (embeddings).
* :class:`PartitionWriter` builds a whole partition in a hidden staging folder and swaps it in on commit, so
  re-materializing a drop *replaces* its rows (idempotent) and a crash mid-write leaves the old partition (or
  none) visible, never a mixture. Hidden folders (leading ``.``) are not matched by the catalog's globs.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets.config import warehouse_dir

PARQUET_COMPRESSION = "zstd"


def partition_dir(asset: str, drop: str, home: Path | None = None) -> Path:
    """Folder of one asset's partition for one drop."""
    return warehouse_dir(home) / asset / f"drop={drop}"


def asset_dir(asset: str, home: Path | None = None) -> Path:
    return warehouse_dir(home) / asset


def write_parquet_atomic(table: pa.Table, path: Path) -> Path:
    """Write ``table`` to ``path`` through a temporary sibling and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp, compression=PARQUET_COMPRESSION)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


class PartitionWriter:
    """Stage files for one partition and swap them in atomically on :meth:`commit`.

    Usage::

        with PartitionWriter(final_dir) as w:
            w.write("part-00000.parquet", table)
            ...
        # on normal exit: committed; on exception: staging removed, old partition untouched
    """

    def __init__(self, final_dir: Path):
        self.final_dir = Path(final_dir)
        self.final_dir.parent.mkdir(parents=True, exist_ok=True)
        self.staging = self.final_dir.parent / f".staging-{self.final_dir.name}-{uuid.uuid4().hex[:12]}"
        self.staging.mkdir()
        self.files: list[Path] = []
        self._done = False

    def write(self, name: str, table: pa.Table) -> Path:
        path = self.staging / name
        pq.write_table(table, path, compression=PARQUET_COMPRESSION)
        self.files.append(self.final_dir / name)
        return path

    def writer(self, name: str, schema: pa.Schema) -> pq.ParquetWriter:
        """A streaming writer for a (large) file in the staging folder; close it before commit."""
        self.files.append(self.final_dir / name)
        return pq.ParquetWriter(self.staging / name, schema, compression=PARQUET_COMPRESSION)

    def commit(self) -> None:
        trash = None
        if self.final_dir.exists():
            trash = self.final_dir.parent / f".trash-{self.final_dir.name}-{uuid.uuid4().hex[:12]}"
            os.replace(self.final_dir, trash)
        os.replace(self.staging, self.final_dir)
        self._done = True
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        self._done = True

    def __enter__(self) -> "PartitionWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def clean_stale(asset_folder: Path) -> int:
    """Remove staging/trash/tmp leftovers of killed runs below an asset folder. Returns how many were removed."""
    n = 0
    if not asset_folder.exists():
        return 0
    for p in asset_folder.rglob(".*"):
        if p.name.startswith((".staging-", ".trash-")) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            n += 1
        elif p.name.endswith(".tmp") and p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n
