"""Hand-written pair_scores / kl_stats partitions for the curate tests (tests/curate and tests/defs), in the
schemas the score assets write, so those tests do not depend on training a model."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from clip_assets.io.commit import stage_dir
from clip_assets.io.warehouse import partition_dir

PAIR_COLS = ["clip_score", "s", "log_r_img", "log_r_txt", "log_r_siglip"]
KL_COLS = ["image_kl", "image_klr", "image_dc", "image_dw", "text_kl", "text_klr", "text_dc", "text_dw"]


def _rng(*keys) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(map(str, keys)).encode()))


def write_scores(home: Path, drop: str, uids: list[str], **cols) -> None:
    """pair_scores + kl_stats partitions of one drop (columns not given are seeded random numbers)."""
    n = len(uids)
    rng = _rng("scores", drop)

    def col(name):
        v = cols.get(name)
        return pa.array(np.asarray(v, dtype=np.float64) if v is not None else rng.normal(size=n), pa.float64())

    lineage = {"drop": pa.array([drop] * n, pa.string()), "model_id": pa.array(["m1"] * n, pa.string()),
               "reference_id": pa.array(["r1"] * n, pa.string())}
    pair = pa.table({"uid": pa.array(uids, pa.string()), **{c: col(c) for c in PAIR_COLS}, **lineage})
    kl = pa.table({"uid": pa.array(uids, pa.string()), **{c: col(c) for c in KL_COLS}, **lineage})
    with stage_dir(partition_dir("pair_scores", drop, home)) as w:
        w.write_table("part-00000.parquet", pair)
    with stage_dir(partition_dir("kl_stats", drop, home)) as w:
        w.write_table("part-00000.parquet", kl)


def uid(i: int, salt: str = "") -> str:
    return f"{zlib.crc32(f'{salt}{i}'.encode()):08x}{i:024x}"
