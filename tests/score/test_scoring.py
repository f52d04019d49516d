"""One drop's scores end to end without Dagster (clip_assets.score.drop) on hand-made embeddings, a reference set
and a card, and the KL range check."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets.io.commit import write_table
from clip_assets.io.reference import sample_reference, write_reference
from clip_assets.io.tables import read_partition
from clip_assets.io.warehouse import partition_dir
from clip_assets.models.card import write_card
from clip_assets.models.embed import embedding_schema
from clip_assets.score.drop import (KL_STATS_SCHEMA, PAIR_SCORES_SCHEMA, LineageMismatchError, kl_in_range,
                                    score_drop)

DIM = 8


def _unit(rng, n):
    x = rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def _embeddings(home, drop: str, n: int, model_id: str = "m", seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cols = [pa.FixedSizeListArray.from_arrays(pa.array(_unit(rng, n).ravel(), pa.float16()), DIM) for _ in "uv"]
    t = pa.table([pa.array([f"{drop}-{i:04d}" for i in range(n)]), *cols, pa.array([model_id] * n)],
                 schema=embedding_schema(DIM))
    write_table(partition_dir("embeddings", drop, home) / "part-00000.parquet", t)


@pytest.fixture
def scored_home(home):
    _embeddings(home, "d", 50)
    table, info = sample_reference(["d"], 30, 0, home)
    write_reference(table, info, home)
    return home


def test_score_drop_writes_both_tables_in_their_schemas(scored_home):
    write_card({}, {"logit_scale": 20.0, "logit_bias": None}, "m", home=scored_home)
    sd = score_drop("d", scored_home, budget_elems=2**10, siglip_tau=None)
    assert sd.rows == 50 and kl_in_range(sd)
    for asset, schema in (("pair_scores", PAIR_SCORES_SCHEMA), ("kl_stats", KL_STATS_SCHEMA)):
        t = read_partition(asset, "d", scored_home)
        assert t.schema.remove_metadata() == schema and t.num_rows == 50
    assert pq.read_table(partition_dir("pair_scores", "d", scored_home))["log_r_siglip"].null_count == 50
    sd.stats["text_kl"][0] = np.log(sd.reference.n) + 1.0  # beyond log N: out of range
    assert not kl_in_range(sd)


def test_score_drop_refuses_mixed_lineage(scored_home):
    write_card({}, {"logit_scale": 20.0, "logit_bias": None}, "other", home=scored_home)  # a newer model
    with pytest.raises(LineageMismatchError, match="model mismatch for drop d"):
        score_drop("d", scored_home, budget_elems=2**10, siglip_tau=None)
