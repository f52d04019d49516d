"""The per-drop score assets through Dagster: each materialization of pair_scores and kl_stats writes its drop's
report (a sample sheet of the drop, labelled histograms) and puts a glance summary with an inline plot first in
its metadata; score_calibration reads a data home whose path holds '[' (no glob)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets.defs.resources import HomeResource
from clip_assets.defs.score.assets import scores
from clip_assets.io.commit import write_table
from clip_assets.io.ingest import ingest_drop
from clip_assets.io.reference import sample_reference, write_reference
from clip_assets.io.warehouse import partition_dir
from clip_assets.models.card import write_card
from clip_assets.models.embed import embedding_schema
from clip_assets.report.glance import INLINE_LIMIT
from clip_assets.score import calibration as C
from clip_assets.world import write_drops

DIM = 8


def _scored_world(home: Path, pairs: int = 60) -> str:
    """One synthetic drop ingested, hand-made unit embeddings for its uids, a reference set and a card."""
    (path,) = write_drops(home / "landing", drops=1, pairs=pairs, seed=7, shard_size=pairs)
    ingest_drop(path, home=home)
    drop = path.name
    uids = pq.read_table(partition_dir("raw_pairs", drop, home), columns=["uid"])["uid"].to_pylist()
    rng = np.random.default_rng(0)
    cols = []
    for _ in "uv":
        x = rng.normal(size=(len(uids), DIM))
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
        cols.append(pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float16()), DIM))
    write_table(partition_dir("embeddings", drop, home) / "part-00000.parquet",
                pa.table([pa.array(uids), *cols, pa.array(["m"] * len(uids))], schema=embedding_schema(DIM)))
    table, info = sample_reference([drop], 40, 0, home)
    write_reference(table, info, home)
    write_card({}, {"logit_scale": 20.0, "logit_bias": None}, "m", home=home)
    return drop


def test_score_assets_write_a_drop_report_and_an_inline_summary(home):
    drop = _scored_world(home)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("drops", [drop])
    res = dg.materialize([scores], partition_key=drop, instance=instance,
                         resources={"home": HomeResource(home=str(home))})
    assert res.success
    raw = sorted(pq.read_table(partition_dir("raw_pairs", drop, home), columns=["uid"])["uid"].to_pylist())
    for key, column, deciles in (("pair_scores", "clip_score", 0), ("kl_stats", "text_kl", 20)):
        (mat,) = [m for m in res.get_asset_materialization_events() if m.asset_key.to_user_string() == key]
        meta = mat.materialization.metadata
        assert list(meta)[0] == "summary"  # first on the asset's page
        glance = meta["summary"].value
        assert len(glance) <= INLINE_LIMIT and "data:image/png;base64," in glance and f"drop {drop}" in glance
        assert "nan" not in glance.lower() and f"| {column} |" in glance
        index = Path(meta["report"].value)
        assert index.is_file() and index.parent.parent.name == key and index.parent.name.endswith(drop)
        sheets = sorted(p.name for p in (index.parent / "sheets").glob("*.json"))
        assert f"drop-{drop}.json" in sheets and sum(s.startswith("decile-") for s in sheets) == deciles
        m = json.loads((index.parent / "sheets" / f"drop-{drop}.json").read_text())
        assert m["uids"] == raw[:24] and all(x.get("error") is None for x in m["samples"])
        scored = {r["uid"]: r["clip_score"]
                  for r in pq.read_table(partition_dir("pair_scores", drop, home)).to_pylist()}
        assert [x["score"] for x in m["samples"]] == pytest.approx([scored[u] for u in raw[:24]])
        assert (index.parent / "plots" / f"{column.replace('_', '-')}-histogram.png").is_file()
        assert meta["dagster/row_count"].value == len(raw) and meta["drop"].value == drop


def test_calibration_reads_a_home_with_a_bracket_in_its_path(tmp_path, monkeypatch):
    home = tmp_path / "data [v2]"
    (home / "landing").mkdir(parents=True)
    monkeypatch.setenv("CLIP_ASSETS_HOME", str(home))
    uids = [f"u{i:03d}" for i in range(30)]
    rng = np.random.default_rng(1)
    lineage = {"drop": ["d"] * 30, "model_id": ["m"] * 30, "reference_id": ["r"] * 30}
    pair = {c: rng.normal(size=30) for c in ("clip_score", "s", "log_r_img", "log_r_txt", "log_r_siglip")}
    kl = {c: np.abs(rng.normal(size=30)) for c in C.KL_COLUMNS}
    for asset, cols in (("pair_scores", pair), ("kl_stats", kl)):
        write_table(partition_dir(asset, "d", home) / "part-00000.parquet", pa.table({"uid": uids, **cols, **lineage}))
    truth = {"drop": ["d"] * 30, "uid": uids, "is_misaligned": [i % 3 == 0 for i in range(30)],
             "is_placeholder": [i % 5 == 0 for i in range(30)], "true_log_ratio": rng.normal(size=30),
             **{f"true_{k}_{s}": np.abs(rng.normal(size=30)) for k in ("kl", "klr") for s in ("image", "text")}}
    pq.write_table(pa.table(truth), home / "landing" / "d.truth.parquet")
    assert C.scored_drops_with_truth(home, home / "landing") == ["d"]
    cal = C.calibrate(home, home / "landing", ["d"])
    assert cal.frame.height == 30 and len(cal.rows) == len(C.ESTIMATES)
    # the KL estimates do not score a pair: their AUC is a null (shown "-"), never NaN
    assert all(r["auc_aligned"] is None for r in cal.rows if r["estimate"] not in C.AUC_SCORES)
    assert all(math.isfinite(r["auc_aligned"]) for r in cal.rows if r["estimate"] in C.AUC_SCORES)
