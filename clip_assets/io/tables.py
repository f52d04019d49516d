"""Reading warehouse tables back as numpy: embeddings, scores, drops that have an asset materialized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from clip_assets.io import fs
from clip_assets.io.commit import on_store, recover_folder, resolve, snapshot
from clip_assets.io.warehouse import asset_dir, partition_dir


def drops_with(asset: str, home: Path | None = None) -> list[str]:
    """Drops that have at least one Parquet file of ``asset`` in the warehouse, sorted."""
    root = asset_dir(asset, home)
    if not on_store(root) and not root.is_dir():
        return []
    recover_folder(root)  # a partition a crashed swap left in trash is restored, not skipped (store: journals)
    return sorted(p.name.split("=", 1)[1] for p in root.glob("drop=*") if any(resolve(p).glob("*.parquet")))


def read_partition(asset: str, drop: str, home: Path | None = None, columns: list[str] | None = None) -> pa.Table:
    """All rows of one drop's partition of ``asset`` (files in shard order; a versioned partition is read in the
    version its pointer names, so a concurrent commit never mixes into or breaks the read)."""
    return read_partitions([asset], drop, home, columns)[0]


def read_partitions(assets: list[str], drop: str, home: Path | None = None, columns: list[str] | None = None
                    ) -> list[pa.Table]:
    """One drop's partition of each of ``assets``, resolved together (:func:`clip_assets.io.commit.snapshot`):
    tables committed together (raw_pairs and rejected_pairs) are read from the same commit."""
    finals = [partition_dir(a, drop, home) for a in assets]
    for d in finals:
        if not d.is_dir():
            recover_folder(d.parent)  # a crashed swap: restore the partition instead of reporting it missing
    out = []
    for asset, d in zip(assets, snapshot(finals)):
        files = sorted(d.glob("part-*.parquet"))
        if not files:
            raise FileNotFoundError(f"{asset} has no Parquet files for drop {drop!r} in {d}: materialize it first")
        out.append(fs.read_tables(files, columns=columns))
    return out


def fixed_list_to_numpy(col: pa.ChunkedArray | pa.Array, dtype=np.float32) -> np.ndarray:
    """A fixed_size_list<float> column as an (M, d) array (no per-row Python work)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    d = arr.type.list_size
    flat = arr.values.to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=dtype).reshape(len(arr), d)


def read_embeddings(drop: str, home: Path | None = None, dtype=np.float32) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """One drop's embeddings: (table with uid and model_id, image (M, d), text (M, d)) in ``dtype``."""
    t = read_partition("embeddings", drop, home)
    return t, fixed_list_to_numpy(t["image_emb"], dtype), fixed_list_to_numpy(t["text_emb"], dtype)

