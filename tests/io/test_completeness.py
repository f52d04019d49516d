"""Completeness of a per-drop partition against raw_pairs: a truncated embeddings partition (what a kill in the
middle of embeddings leaves: the shards it finished) is refused with the drop, the asset and the counts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from clip_assets.io.commit import stage_dir, write_table
from clip_assets.io.completeness import (IncompletePartitionError, completeness, drop_counts, embedding_quality,
                                         partition_rows, require_complete)
from clip_assets.io.warehouse import partition_dir
from clip_assets.models.embed import embedding_schema

DIM = 4


def _uids(shard: int, n: int) -> list[str]:
    return [f"{shard:02d}{i:030x}" for i in range(n)]


def _raw(home, drop: str, shards: dict[int, int]) -> None:
    with stage_dir(partition_dir("raw_pairs", drop, home)) as w:
        for s, n in shards.items():
            w.write_table(f"part-{s:05d}.parquet", pa.table({"uid": _uids(s, n), "drop": [drop] * n}))


def _emb_table(uids: list[str], scale: float = 1.0) -> pa.Table:
    x = np.zeros((len(uids), DIM), np.float16)
    x[:, 0] = scale
    col = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float16()), DIM)
    return pa.table([pa.array(uids, pa.string()), col, col, pa.array(["m"] * len(uids), pa.string())],
                    schema=embedding_schema(DIM))


def _emb_shard(home, drop: str, shard: int, uids: list[str], scale: float = 1.0):
    return write_table(partition_dir("embeddings", drop, home) / f"part-{shard:05d}.parquet", _emb_table(uids, scale))


def test_whole_partition_is_complete(home):
    _raw(home, "d", {0: 40, 1: 30})
    for s, n in {0: 40, 1: 30}.items():
        _emb_shard(home, "d", s, _uids(s, n))
    c = completeness("embeddings", "d", home)
    assert c.ok and (c.rows, c.expected, c.missing, c.extra, c.duplicated) == (70, 70, 0, 0, 0)
    assert require_complete("embeddings", ["d"], "pair_scores", home) == [c]
    assert partition_rows("embeddings", "d", home) == 70 and drop_counts("d", home) == (70, 70, 0)


def test_truncated_embeddings_partition_is_refused(home):
    """Shard 0 finished, shard 1 killed: 40 of 70 rows, a folder with Parquet files all the same."""
    _raw(home, "d", {0: 40, 1: 30})
    _emb_shard(home, "d", 0, _uids(0, 40))
    c = completeness("embeddings", "d", home)
    assert not c.ok and (c.rows, c.expected, c.missing, c.extra) == (40, 70, 30, 0)
    with pytest.raises(IncompletePartitionError) as e:
        require_complete("embeddings", ["d"], "pair_scores", home)
    msg = str(e.value)
    for needle in ("pair_scores", "embeddings", "'d'", "40 rows", "70 raw_pairs rows", "30 raw_pairs uids missing"):
        assert needle in msg, (needle, msg)


def test_stale_duplicated_and_missing_partitions_are_refused(home):
    _raw(home, "d", {0: 10})
    _raw(home, "e", {0: 5})
    _emb_shard(home, "d", 0, _uids(0, 10) + ["stale-uid"])  # a uid raw_pairs no longer holds
    _emb_shard(home, "e", 0, _uids(0, 5) + _uids(0, 1))  # one uid twice
    assert completeness("embeddings", "d", home).extra == 1
    assert completeness("embeddings", "e", home).duplicated == 1
    _raw(home, "f", {0: 3})
    assert not completeness("embeddings", "f", home).present  # never embedded
    with pytest.raises(IncompletePartitionError) as e:
        require_complete("embeddings", ["d", "e", "f"], "reference_set", home)
    assert all(f"'{d}'" in str(e.value) for d in "def")
    with pytest.raises(IncompletePartitionError, match="raw_pairs"):
        completeness("embeddings", "nodrop", home)  # nothing to compare with


def test_per_group_completeness(home):
    """importance_weights holds every uid once per prompt: one prompt short is incomplete."""
    _raw(home, "d", {0: 6})
    u = _uids(0, 6)
    with stage_dir(partition_dir("importance_weights", "d", home)) as w:
        w.write_table("part-00000.parquet", pa.table({"uid": u + u[:5], "prompt": ["a"] * 6 + ["b"] * 5}))
    c = completeness("importance_weights", "d", home, per="prompt")
    assert not c.ok and c.missing == 1 and c.rows == 5
    assert completeness("importance_weights", "d", home).duplicated == 5  # without groups: 5 uids twice


def test_embedding_quality_reads_only_given_files(home):
    good = _emb_shard(home, "d", 0, _uids(0, 3))
    bad = _emb_shard(home, "d", 1, _uids(1, 3), scale=2.0)  # norm 2, not unit
    assert embedding_quality([good])["ok"] and embedding_quality([good])["rows_read"] == 3
    q = embedding_quality([good, bad])
    assert not q["ok"] and q["max_norm_deviation"] == pytest.approx(1.0)
