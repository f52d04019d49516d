"""IWL end to end through Dagster on a tiny synthetic drop: raw_pairs -> embeddings -> importance_weights (per
drop), then iwl_model + baseline_model -> iwl_eval (global), with tiny budgets (the numbers are not the point here;
the multi-seed comparison is `clip-assets iwl-report`)."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pytest
import torch

from clip_assets.defs.resources import HomeResource

DROP = "synth-s11-000"
PROMPTS = ["a photo of something red", "a photo of a circle"]
TINY_TRAIN = {"seeds": [0], "steps": 4, "batch_size": 32, "warmup_steps": 1, "threads": 1}


def _materialize(defs, instance, home, selection, partition_key=None, run_config=None, raise_on_error=True):
    return dg.materialize(list(defs.assets), selection=selection, partition_key=partition_key, instance=instance,
                          resources={"home": HomeResource(home=str(home))}, run_config=run_config or {},
                          raise_on_error=raise_on_error)


def _checks(result) -> dict[str, bool]:
    return {f"{c.asset_key.to_user_string()}/{c.check_name}": c.passed for c in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A home with one drop taken through the per-drop chain, with a small random-init reference model's card."""
    from clip_assets.definitions import defs
    from clip_assets.models.card import write_card
    from clip_assets.models.loading import ModelSpec, load_model
    from clip_assets.world import write_drops

    home = tmp_path_factory.mktemp("iwl") / "home"
    write_drops(home / "landing", drops=1, pairs=160, seed=11, shard_size=80)
    # what contrastive_model would write for a tiny reference model (random init: plumbing, not quality)
    spec = ModelSpec(name="clip-assets-tiny", device="cpu", batch_size=64, workers=0)
    lm = load_model(spec)
    write_card(spec.to_dict(), lm.model_id, lm.model_id_str, home=home)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("drops", [DROP])
    res = _materialize(
        defs, instance, home,
        [dg.AssetKey(k) for k in ("raw_pairs", "rejected_pairs", "embeddings", "importance_weights")],
        partition_key=DROP,
        run_config={"ops": {"importance_weights": {"config": {"prompts": PROMPTS, "a_prime": 10.0}}}},
    )
    return defs, instance, home, lm, res


def test_importance_weights_partition(chain):
    from clip_assets.io import catalog
    from clip_assets.io.tables import read_embeddings, read_partition

    defs, instance, home, lm, res = chain
    assert res.success
    checks = _checks(res)
    assert checks["importance_weights/weights_valid"] is True
    emb, u, _ = read_embeddings(DROP, home)
    t = read_partition("importance_weights", DROP, home)
    assert t.num_rows == 2 * emb.num_rows
    assert list(dict.fromkeys(t.column("prompt").to_pylist())) == PROMPTS
    assert set(t.column("model_id").to_pylist()) == {lm.model_id_str}
    # the stored weights are eq. (1) on the stored embeddings and the model's prompt embedding
    red = t.filter(dg_eq(t, "prompt", PROMPTS[0]))
    v = lm.encode_texts([PROMPTS[0]]).numpy()[0]
    u64 = u.astype(np.float64) / np.linalg.norm(u.astype(np.float64), axis=1, keepdims=True)
    expected = 10.0 * (u64 @ (v / np.linalg.norm(v)))
    assert red.column("uid").to_pylist() == emb.column("uid").to_pylist()
    np.testing.assert_allclose(red.column("log_weight").to_numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(red.column("weight").to_numpy(), np.exp(expected), rtol=1e-4)
    mats = [m for m in res.get_asset_materialization_events() if m.asset_key == dg.AssetKey("importance_weights")]
    meta = mats[0].materialization.metadata
    assert 1.0 <= meta["ess"].value <= emb.num_rows and 0 < meta["ess_fraction"].value <= 1
    assert "weight_histogram" in meta and "top_examples" in meta
    # SQL: the view sees exactly the stored rows
    catalog.refresh_views(home)
    n = catalog.query("SELECT count(*) AS n FROM importance_weights WHERE drop = ?", [DROP], home=home)
    assert _first(n) == t.num_rows


def dg_eq(t, col, value):
    import pyarrow.compute as pc

    return pc.equal(t.column(col), value)


def _first(result):
    """First cell of whatever catalog.query returns (arrow table, DataFrame-like or list of rows)."""
    if hasattr(result, "column"):
        return result.column(0)[0].as_py()
    if hasattr(result, "iloc"):
        return result.iloc[0, 0]
    return result[0][0]


def test_models_and_eval_end_to_end(chain):
    from clip_assets.models.loading import ModelSpec, load_model
    from clip_assets.models.iwl_train import iwl_root

    defs, instance, home, lm, _ = chain
    res = _materialize(
        defs, instance, home, [dg.AssetKey("iwl_model"), dg.AssetKey("baseline_model"), dg.AssetKey("iwl_eval")],
        run_config={"ops": {"iwl_models": {"config": TINY_TRAIN},
                            "iwl_eval": {"config": {"eval_images": 24, "target_domain": "red"}}}},
    )
    assert res.success
    checks = _checks(res)
    assert checks["iwl_model/checkpoints_reload"] and checks["baseline_model/checkpoints_reload"]
    assert checks["iwl_eval/metrics_valid"]
    assert "iwl_eval/iwl_not_worse" in checks  # a warning either way at this budget
    manifest = json.loads((iwl_root(home) / "manifest.json").read_text())
    assert manifest["prompt"] == PROMPTS[0] and manifest["drops"] == [DROP] and manifest["left_out"] == 0
    entry = manifest["seeds"]["0"]
    states = {}
    for kind in ("iwl_model", "baseline_model"):
        path = entry[kind]["checkpoint"]
        assert str(iwl_root(home)) in path
        cfg = json.loads((__import__("pathlib").Path(path).parent / "open_clip_config.json").read_text())
        again = load_model(ModelSpec(name=cfg["model_name"], checkpoint=path, device="cpu", workers=0))
        assert again.model_id_str == entry[kind]["model_id"]
        states[kind] = torch.load(path, map_location="cpu", weights_only=True)
        assert cfg["clip_assets"]["iwl"]["kind"] == kind.split("_")[0]
    # same architecture, init, data and steps; only the loss weights differ
    assert states["iwl_model"].keys() == states["baseline_model"].keys()
    assert any(not torch.equal(states["iwl_model"][k], states["baseline_model"][k]) for k in states["iwl_model"])
    mats = {m.asset_key.to_user_string(): m.materialization.metadata for m in res.get_asset_materialization_events()}
    ev = mats["iwl_eval"]
    for k in ("target_macro_f1_iwl", "target_macro_f1_baseline", "target_accuracy_iwl", "target_delta_macro_f1"):
        assert 0.0 <= abs(ev[k].value) <= 1.0
    assert "per_class" in ev and "plot" in ev
    report = json.loads((iwl_root(home) / "eval.json").read_text())
    assert report["summary"]["eval_n"] == 24 and len(report["per_class"]) == 4


def test_bad_configs_fail_clearly(chain):
    defs, instance, home, _, _ = chain
    with pytest.raises(Exception, match="prompts must be a non-empty list"):
        _materialize(defs, instance, home, [dg.AssetKey("importance_weights")], partition_key=DROP,
                     run_config={"ops": {"importance_weights": {"config": {"prompts": []}}}})
    with pytest.raises(Exception, match="does not exist"):
        _materialize(defs, instance, home, [dg.AssetKey("iwl_eval")],
                     run_config={"ops": {"iwl_eval": {"config": {"eval_set": str(home / "no_such_eval.parquet")}}}})
    with pytest.raises(Exception, match="stored prompts"):
        _materialize(defs, instance, home, [dg.AssetKey("iwl_model"), dg.AssetKey("baseline_model")],
                     run_config={"ops": {"iwl_models": {"config": {**TINY_TRAIN, "prompt": "a photo of a cow"}}}})


def test_truncated_embeddings_are_refused_downstream(chain):
    """A kill in the middle of embeddings leaves the shards it finished: importance_weights and reference_set
    refuse that partition (naming the drop, the asset and the counts) instead of running on part of the drop."""
    import shutil

    import pyarrow.parquet as pq

    from clip_assets.io.tables import read_partition
    from clip_assets.io.warehouse import partition_dir

    defs, instance, home, _, _ = chain
    part = partition_dir("embeddings", DROP, home)
    shards = sorted(part.glob("part-*.parquet"))
    assert len(shards) == 2
    rows = read_partition("embeddings", DROP, home).num_rows
    kept = rows - pq.ParquetFile(shards[-1]).metadata.num_rows
    aside = home / "aside.parquet"
    shutil.move(shards[-1], aside)
    try:
        for key, partition in (("importance_weights", DROP), ("reference_set", None)):
            res = _materialize(defs, instance, home, [dg.AssetKey(key)], partition_key=partition,
                               raise_on_error=False)
            assert not res.success
            failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
            msg = failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
            for needle in (key, "embeddings", repr(DROP), f"{kept} rows", f"{rows} raw_pairs rows"):
                assert needle in msg, (needle, msg)
    finally:
        shutil.move(aside, shards[-1])
