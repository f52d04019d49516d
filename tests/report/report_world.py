"""Fixtures for the report tests (imported by the test modules): a small synthetic world, drops written by clip_assets.world,
ingest_drop, scores faked in the pair_scores / kl_stats schemas (rounded, so that thresholds have ties), and
subsets built by the curation engine."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets.curate import filters as F
from clip_assets.io.commit import stage_dir
from clip_assets.io.ingest import ingest_drop
from clip_assets.io.warehouse import partition_dir
from clip_assets.world import write_drops

PAIR_COLS = ["clip_score", "s", "log_r_img", "log_r_txt", "log_r_siglip"]
KL_COLS = ["image_kl", "image_klr", "image_dc", "image_dw", "text_kl", "text_klr", "text_dc", "text_dw"]
PAIRS = 90
SPECS = F.parse_filters({"filters": [
    {"name": "everything", "keep": "all"},
    {"name": "kl_text", "column": "text_kl", "keep_fraction": 0.2},
    {"name": "clip_min", "column": "clip_score", "threshold": 0.1},
    {"name": "both", "all_of": ["kl_text", "clip_min"]},
]})


def fake_scores(home: Path, drop: str) -> None:
    """pair_scores + kl_stats of one ingested drop: seeded normals rounded to steps of 0.25 (ties), one NaN."""
    uids = pq.read_table(partition_dir("raw_pairs", drop, home), columns=["uid"])["uid"].to_pylist()
    rng = np.random.default_rng(zlib.crc32(drop.encode()))
    n = len(uids)
    lineage = {"drop": pa.array([drop] * n), "model_id": pa.array(["m1"] * n), "reference_id": pa.array(["r1"] * n)}

    def col():
        v = np.round(rng.normal(size=n) * 4) / 4
        v[0] = np.nan
        return pa.array(v, pa.float64())

    for asset, cols in (("pair_scores", PAIR_COLS), ("kl_stats", KL_COLS)):
        t = pa.table({"uid": pa.array(uids), **{c: col() for c in cols}, **lineage})
        with stage_dir(partition_dir(asset, drop, home)) as w:
            w.write_table("part-00000.parquet", t)


def write_scored_drop(home: Path, number: int) -> str:
    """Write, ingest and score synthetic drop ``number``; rebuild the subsets. Returns the drop name."""
    (path,) = write_drops(home / "landing", drops=1, pairs=PAIRS, seed=5, shard_size=50, start=number)
    ingest_drop(path, home=home)
    fake_scores(home, path.name)
    F.build_subsets(home, SPECS, threads=1)
    return path.name


@pytest.fixture
def world_home(tmp_path, monkeypatch) -> Path:
    """A data home with one ingested, scored drop and its curated subsets."""
    home = tmp_path / "home"
    (home / "landing").mkdir(parents=True)
    monkeypatch.setenv("CLIP_ASSETS_HOME", str(home))
    write_scored_drop(home, 0)
    return home


@pytest.fixture
def add_drop():
    """write_scored_drop(home, number): one more ingested, scored drop, subsets rebuilt."""
    return write_scored_drop
