"""Reading warehouse tables back as numpy: embeddings, scores, drops that have an asset materialized."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from clip_assets.io import fs
from clip_assets.io.catalog import partition_files
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



# ----------------------------------------------------------------------------------------------------------------
# one drop's embeddings as row blocks (the unit of work of a distributed executor)


@dataclass(frozen=True)
class RowBlock:
    """Rows ``lo:hi`` of one embeddings file (``path``: a local path or store URL, as text so it pickles)."""

    path: str
    lo: int
    hi: int


@dataclass(frozen=True)
class EmbeddingsPlan:
    """One drop's embeddings files listed once: their uids and model ids in read order (the order
    :func:`read_embeddings` gives) and the row blocks that cover them, in that same order."""

    uids: pa.ChunkedArray
    model_ids: list[str]
    blocks: list[RowBlock]

    def check_uids(self, drop: str, got: list[str], what: str) -> None:
        """Raise unless ``got`` (the uids the blocks' results hold, in block order) are the planned ones."""
        expected = self.uids.to_pylist()
        if got != expected:
            raise RuntimeError(f"drop {drop}: the {what} blocks hold {len(got)} uids that differ from the "
                               f"{len(expected)} planned ones (were the embeddings rewritten meanwhile?)")


def plan_embeddings(drop: str, home: Path | None = None, block_rows: int = 0) -> EmbeddingsPlan:
    """List the drop's embeddings files (the version a pointer names), read only their uid and model_id columns,
    and cut them into blocks of at most ``block_rows`` rows that never span two files (0: one block per file; a
    file of 0 rows gives no block)."""
    if int(block_rows) < 0:
        raise ValueError(f"block_rows must be >= 0 (0 = one block per file), got {block_rows!r}")
    files = [f for f in partition_files("embeddings", drop, home) if fs.location(f).name.startswith("part-")]
    if not files:
        raise FileNotFoundError(f"embeddings has no Parquet files for drop {drop!r}: materialize it first")
    heads = [fs.read_table(f, columns=["uid", "model_id"]) for f in files]
    blocks = []
    for f, t in zip(files, heads):
        step = int(block_rows) or max(t.num_rows, 1)
        blocks += [RowBlock(str(f), lo, min(lo + step, t.num_rows)) for lo in range(0, t.num_rows, step)]
    both = pa.concat_tables(heads)
    return EmbeddingsPlan(both["uid"], sorted(set(both["model_id"].unique().to_pylist())), blocks)


def read_embeddings_block(block: RowBlock, dtype=np.float32) -> tuple[list[str], np.ndarray, np.ndarray]:
    """One block's (uids, image (m, d), text (m, d)) in ``dtype``, as :func:`read_embeddings` would give them."""
    full = fs.read_table(block.path, columns=["uid", "image_emb", "text_emb"])
    if full.num_rows < block.hi:
        raise ValueError(f"{block.path} has {full.num_rows} rows, fewer than the block's end {block.hi}: "
                         f"was it rewritten since it was planned?")
    t = full.slice(block.lo, block.hi - block.lo)
    return t["uid"].to_pylist(), fixed_list_to_numpy(t["image_emb"], dtype), fixed_list_to_numpy(t["text_emb"], dtype)
