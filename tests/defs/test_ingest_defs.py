"""The landing sensor, the raw_pairs asset and the SQL catalog, end to end through Dagster."""

from __future__ import annotations

import shutil
import subprocess
import sys

import dagster as dg
import pytest

from clip_assets.defs import ingest as ingest_domain
from clip_assets.defs.ingest.sensors import landing_sensor
from clip_assets.defs.partitions import drops_partitions
from clip_assets.defs.resources import HomeResource
from conftest import build_drop, jpeg_bytes


def _sensor(instance, home):
    # a context with resources must be closed (the `with`): left open, what it entered outlives its instance
    # (see tests/conftest.py's dagster_context_is_clean)
    with dg.build_sensor_context(instance=instance, resources={"home": HomeResource(home=str(home))}) as ctx:
        return landing_sensor(ctx)


def _apply(instance, result):
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))


def test_sensor_adds_complete_drops_once_and_waits_for_incomplete(home):
    instance = dg.DagsterInstance.ephemeral()
    sample = [{"key": "000000000", "image": jpeg_bytes(1), "caption": "x"}]
    build_drop(home / "landing" / "ready", [sample])
    build_drop(home / "landing" / "half", [sample], stats=False)
    build_drop(home / "landing" / "bad..name", [sample])
    res = _sensor(instance, home)
    assert [r.partition_key for r in res.run_requests] == ["ready"]
    _apply(instance, res)
    assert instance.get_dynamic_partitions("drops") == ["ready"]
    # nothing new: skip, and the known drop is not re-added
    again = _sensor(instance, home)
    assert isinstance(again, dg.SkipReason)
    # the incomplete drop completes
    (home / "landing" / "half" / "00000_stats.json").write_text("{}")
    res2 = _sensor(instance, home)
    assert [r.partition_key for r in res2.run_requests] == ["half"]


def test_synthetic_drop_sensor_to_sql(home):
    """A synthetic drop lands -> sensor -> raw_pairs -> counts back through `clip-assets sql`."""
    from clip_assets.definitions import defs
    from clip_assets.world import write_drops

    instance = dg.DagsterInstance.ephemeral()
    write_drops(home / "landing", drops=1, pairs=300, seed=7, shard_size=100)
    drop = "synth-s7-000"
    res = _sensor(instance, home)
    assert [r.partition_key for r in res.run_requests] == [drop]
    _apply(instance, res)
    result = dg.materialize(
        list(defs.assets), selection=[dg.AssetKey("raw_pairs"), dg.AssetKey("rejected_pairs")],
        partition_key=drop, instance=instance, resources={"home": HomeResource(home=str(home))},
    )
    assert result.success
    mats = result.asset_materializations_for_node("ingest")
    meta = {m.asset_key.to_user_string(): m.metadata for m in mats}
    assert meta["raw_pairs"]["rows_seen"].value == 300
    assert meta["raw_pairs"]["rows_kept"].value + meta["raw_pairs"]["rows_rejected"].value == 300
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"rows_balance": True, "uids_unique": True}

    out = subprocess.run(
        [sys.executable, "-m", "clip_assets.cli", "sql",
         "SELECT drop, seen, kept, rejected FROM drops WHERE drop = ?", "--param", drop, "--format", "csv"],
        capture_output=True, text=True, check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "drop,seen,kept,rejected"
    assert lines[1] == f"{drop},300,300,0"


def test_per_drop_checks_name_their_drop(home):
    """Each per-drop check says which drop it judged, in its metadata and its description."""
    build_drop(home / "landing" / "d7", [[{"key": f"{i:09d}", "image": jpeg_bytes(i), "caption": f"c {i}"}
                                          for i in range(3)]])
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(drops_partitions.name, ["d7"])
        res = dg.materialize([*ingest_domain.defs.assets, *ingest_domain.defs.asset_checks],
                             selection=[dg.AssetKey("raw_pairs"), dg.AssetKey("rejected_pairs")], partition_key="d7",
                             instance=inst, resources={"home": HomeResource(home=str(home))})
    evals = res.get_asset_check_evaluations()
    assert {e.check_name for e in evals} == {"rows_balance", "uids_unique", "reasons_valid"}
    for e in evals:
        assert e.metadata["drop"].value == "d7", e.check_name
        assert e.description.startswith("drop d7"), (e.check_name, e.description)


def test_ingest_asset_checks_catalog_and_sql_under_a_home_with_glob_characters(tmp_path, monkeypatch, capsys):
    """Class 11: the ingest multi-asset, its checks, the catalog asset and `clip-assets sql` under a home whose
    path holds every DuckDB glob character (the Dagster instance stays under a plain path)."""
    from clip_assets.cli import main as cli_main

    home = tmp_path / "env=prod" / "we[ir]d {x}*?" / "home"
    monkeypatch.setenv("CLIP_ASSETS_HOME", str(home))
    samples = [{"key": f"{i:09d}", "image": jpeg_bytes(i), "caption": f"c {i}"} for i in range(4)]
    build_drop(home / "landing" / "d1", [samples + [{"key": "000000009", "image": None, "caption": "gone"}]])
    resources = {"home": HomeResource(home=str(home))}
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(drops_partitions.name, ["d1"])
        res = dg.materialize([*ingest_domain.defs.assets, *ingest_domain.defs.asset_checks],
                             selection=[dg.AssetKey("raw_pairs"), dg.AssetKey("rejected_pairs")], partition_key="d1",
                             instance=inst, resources=resources)
        assert res.success
        cat = dg.materialize([*ingest_domain.defs.assets], selection=[dg.AssetKey("catalog")], instance=inst,
                             resources=resources)
        assert cat.success
        evals = [*res.get_asset_check_evaluations(), *cat.get_asset_check_evaluations()]
    assert {e.check_name: e.passed for e in evals} == {
        "rows_balance": True, "uids_unique": True, "reasons_valid": True, "views_and_drops_balance": True}
    catalog_eval = next(e for e in evals if e.check_name == "views_and_drops_balance")
    assert catalog_eval.metadata["missing_views"].value == "none"
    assert "drops" in catalog_eval.metadata["expected_views"].value
    capsys.readouterr()
    assert cli_main(["sql", "SELECT drop, seen, kept, rejected FROM drops", "--format", "csv"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == ["drop,seen,kept,rejected", "d1,5,4,1"]


def _samples(seeds, prefix):
    return [{"key": f"{i:09d}", "image": jpeg_bytes(s), "caption": f"{prefix} {s}"} for i, s in enumerate(seeds)]


def test_a_drop_relanded_with_other_contents_is_reprocessed_cleanly(home):
    """Class 7: the landing sensor and the catch-up schedule request one run for a drop re-landed under the same
    name with other contents; after it raw_pairs and embeddings hold only the new rows and embeddings_valid passes."""
    from clip_assets.definitions import defs
    from clip_assets.defs.ingest.schedules import catchup_schedule
    from clip_assets.io.tables import read_partition
    from clip_assets.models.card import write_card
    from clip_assets.models.loading import ModelSpec, load_model

    spec = ModelSpec(name="clip-assets-tiny", device="cpu", batch_size=64, workers=0)
    lm = load_model(spec)  # random init: plumbing, not quality
    write_card(spec.to_dict(), lm.model_id, lm.model_id_str, home=home)
    drop_dir = home / "landing" / "d"
    build_drop(drop_dir, [_samples(range(6), "old")])
    resources = {"home": HomeResource(home=str(home))}
    keys = [dg.AssetKey(k) for k in ("raw_pairs", "rejected_pairs", "embeddings")]
    with dg.instance_for_test() as inst:
        first = _sensor(inst, home)
        assert [r.run_key for r in first.run_requests] == ["drop:d"]
        _apply(inst, first)
        assert dg.materialize(list(defs.assets), selection=keys, partition_key="d", instance=inst,
                              resources=resources).success
        assert isinstance(_sensor(inst, home), dg.SkipReason)  # unchanged: nothing to do

        shutil.rmtree(drop_dir)
        build_drop(drop_dir, [_samples(range(100, 104), "new"), _samples(range(104, 106), "new")])
        res = _sensor(inst, home)
        assert [(r.partition_key, r.tags.get("clip_assets/trigger")) for r in res.run_requests] == [("d", "reland")]
        assert res.run_requests[0].run_key.startswith("reland:d:")
        with dg.build_schedule_context(instance=inst, resources=resources,
                                       repository_def=defs.get_repository_def()) as ctx:
            sched = catchup_schedule(ctx)
        assert [r.run_key for r in sched] == [res.run_requests[0].run_key]  # the same run, never two

        again = dg.materialize(list(defs.assets), selection=keys, partition_key="d", instance=inst,
                               resources=resources)
        assert again.success
        checks = {c.check_name: c.passed for c in again.get_asset_check_evaluations()}
        assert checks["embeddings_valid"] and checks["rows_balance"]
        assert isinstance(_sensor(inst, home), dg.SkipReason)
    raw = read_partition("raw_pairs", "d", home)
    assert sorted(raw["caption"].to_pylist()) == sorted(f"new {s}" for s in range(100, 106))
    emb = read_partition("embeddings", "d", home, columns=["uid"])
    assert sorted(emb["uid"].to_pylist()) == sorted(raw["uid"].to_pylist())
