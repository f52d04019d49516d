"""The code location as a whole: it loads anywhere, every asset is described, grouped and checked, the sensors and
schedules load with their documented default status, and the catch-up schedule requests exactly what is missing.

The per-asset tests are parametrized over the live asset graph, so assets other domains add later are covered
without editing this file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest

from clip_assets.definitions import defs
from clip_assets.defs.ingest.schedules import (
    GIVE_UP_AFTER,
    catchup_schedule,
    missing_partitions,
    per_drop_asset_keys,
)
from clip_assets.defs.partitions import drops_partitions
from clip_assets.defs.resources import HomeResource
from conftest import build_drop, jpeg_bytes

ROOT = Path(__file__).resolve().parents[2]
GRAPH = defs.resolve_asset_graph()
REPO = defs.get_repository_def()
ASSET_KEYS = sorted(GRAPH.get_all_asset_keys(), key=lambda k: k.to_user_string())

# The default status of every sensor and schedule, as the README documents it. A new sensor or schedule must be
# added here (and to the README) or test_sensor_or_schedule_default_status_is_documented fails for it.
DOCUMENTED_DEFAULTS = {
    "landing_sensor": "RUNNING",
    "catchup_schedule": "RUNNING",
    "run_health_sensor": "RUNNING",  # fails runs whose process is gone and frees their pool slots (defs/ops)
    "curation_automation": "RUNNING",  # evaluates every asset's automation condition (defs/automation.py)
    # Dagster adds this one only when some asset with an automation_condition is targeted by no automation
    # sensor of ours; Dagster 1.13 creates it STOPPED (toggle it in the UI, Automation page).
    "default_automation_condition_sensor": "STOPPED",
}


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """An environment without CLIP_ASSETS_HOME, DAGSTER_HOME or anything else of ours."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8"}


# ------------------------------------------------------------------ loading
def test_definitions_load_with_no_environment(tmp_path):
    code = (
        "from clip_assets.definitions import defs\n"
        "g = defs.resolve_asset_graph()\n"
        "r = defs.get_repository_def()\n"
        "print(len(g.get_all_asset_keys()), len(r.sensor_defs), len(r.schedule_defs))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_clean_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    n_assets, n_sensors, n_schedules = map(int, p.stdout.split()[-3:])
    assert n_assets == len(ASSET_KEYS) and n_sensors >= 1 and n_schedules >= 1


def test_dagster_cli_validates_the_workspace(tmp_path):
    """`dagster definitions validate -w workspace.yaml` loads the code location the way `dagster dev` does."""
    dagster = Path(sys.executable).with_name("dagster")
    assert dagster.exists(), f"no dagster CLI next to {sys.executable}"
    env = _clean_env(tmp_path)
    env["DAGSTER_HOME"] = str(tmp_path)  # an empty instance: never touch the project's own storage
    p = subprocess.run([str(dagster), "definitions", "validate", "-w", str(ROOT / "workspace.yaml")], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "clip_assets" in out and "Validation successful" in out, out[-3000:]


# ------------------------------------------------------------------ every asset
def asset_problems(graph, key: dg.AssetKey) -> list[str]:
    """What a reader of the UI would miss about one asset: description, group, an asset check."""
    node = graph.get(key)
    problems = []
    if not (node.description or "").strip():
        problems.append("no description")
    if not node.group_name or node.group_name == "default":
        problems.append("no group (it lands in 'default')")
    if node.is_materializable and not node.check_keys:
        problems.append("no asset check")
    return problems


@pytest.mark.parametrize("key", ASSET_KEYS, ids=[k.to_user_string() for k in ASSET_KEYS])
def test_asset_is_described_grouped_and_checked(key):
    assert asset_problems(GRAPH, key) == [], f"{key.to_user_string()}: {asset_problems(GRAPH, key)}"


def test_asset_problems_catches_an_unchecked_asset():
    """The parametrized test above is not vacuous: an asset with no description, group or check is reported."""

    @dg.asset
    def bare():
        return None

    @dg.asset(description="described", group_name="ingest")
    def unchecked():
        return None

    @dg.asset(description="described", group_name="ingest",
              check_specs=[dg.AssetCheckSpec("ok", asset="checked")])
    def checked():
        yield dg.MaterializeResult()

    graph = dg.Definitions(assets=[bare, unchecked, checked]).resolve_asset_graph()
    assert asset_problems(graph, dg.AssetKey("bare")) == [
        "no description", "no group (it lands in 'default')", "no asset check"]
    assert asset_problems(graph, dg.AssetKey("unchecked")) == ["no asset check"]
    assert asset_problems(graph, dg.AssetKey("checked")) == []


def test_every_asset_has_a_grain_tag():
    """process_drop, the catch-up schedule and `clip-assets materialize` find assets by tag grain=drop|global;
    an asset with neither would be skipped silently by the CLI."""
    for key in ASSET_KEYS:
        assert GRAPH.get(key).tags.get("grain") in {"drop", "global"}, key.to_user_string()


# ------------------------------------------------------------------ sensors and schedules
def _instigators():
    return {s.name: s for s in [*REPO.sensor_defs, *REPO.schedule_defs]}


def test_ingest_sensor_and_schedule_exist():
    assert {"landing_sensor", "catchup_schedule"} <= set(_instigators())


@pytest.mark.parametrize("name", sorted(_instigators()))
def test_sensor_or_schedule_default_status_is_documented(name):
    assert name in DOCUMENTED_DEFAULTS, (
        f"{name} is new: add its default status to DOCUMENTED_DEFAULTS in this file and to the README")
    assert _instigators()[name].default_status.value == DOCUMENTED_DEFAULTS[name]


def test_catchup_schedule_shape():
    s = REPO.get_schedule_def("catchup_schedule")
    assert s.job_name == "process_drop"
    assert s.cron_schedule == "0 * * * *" and s.execution_timezone == "UTC"
    assert "home" in s.required_resource_keys


# ------------------------------------------------------------------ the catch-up schedule
def test_missing_partitions_pure():
    assert missing_partitions(["a", "b", "c"], {"x": {"a", "b"}, "y": {"a"}}) == ["b", "c"]
    assert missing_partitions(["c", "a", "c"], {"x": set()}) == ["c", "a"]  # order kept, no duplicates
    assert missing_partitions(["a", "b"], {"x": ["a", "b"], "y": ("b", "a")}) == []
    assert missing_partitions(["a"], {}) == []  # no per-drop assets: nothing can be missing
    assert missing_partitions([], {"x": {"a"}}) == []


def _landing(home: Path, names: list[str], incomplete: list[str] = ()) -> None:
    sample = [{"key": "000000000", "image": jpeg_bytes(1), "caption": "a red circle"}]
    for n in names:
        build_drop(home / "landing" / n, [sample])
    for n in incomplete:
        build_drop(home / "landing" / n, [sample], stats=False)


def _mark(instance, key: dg.AssetKey, drop: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=drop))


def _add_run(instance, drop: str, status: dg.DagsterRunStatus) -> None:
    instance.add_run(dg.DagsterRun(job_name="process_drop", run_id=str(uuid.uuid4()), status=status,
                                   tags={"dagster/partition": drop}))


def _tick(instance, home: Path):
    # `with`: the context opens its own instance from the ref and sets Dagster's current defs-state storage; left
    # open, that storage outlives its instance and later Definitions loads in this process fail ("undefined
    # DagsterInstance weakref")
    with dg.build_schedule_context(instance=instance, resources={"home": HomeResource(home=str(home))},
                                   repository_def=REPO) as ctx:
        return catchup_schedule.evaluate_tick(ctx)


@pytest.fixture
def instance():
    """A throwaway instance with an InstanceRef (SQLite in a temp dir).

    Not DagsterInstance.ephemeral(): in Dagster 1.13 ScheduleEvaluationContext.instance raises "no instance
    reference was provided" for an instance without a ref, which an ephemeral (in-memory) one never has.
    """
    with dg.instance_for_test() as inst:
        yield inst


def test_catchup_schedule_requests_exactly_the_missing_partitions(home, instance):
    keys = per_drop_asset_keys(GRAPH)
    assert {dg.AssetKey("raw_pairs"), dg.AssetKey("rejected_pairs")} <= set(keys)
    # done: every per-drop asset; partial: all but the last; none: nothing; fresh: complete but not a partition
    # yet; busy: has a run in progress; broken: its last runs all failed; half: still being written; gone: a partition
    # whose folder was removed.
    _landing(home, ["done", "partial", "none", "fresh", "busy", "broken"], incomplete=["half"])
    instance.add_dynamic_partitions(drops_partitions.name, ["done", "partial", "none", "busy", "broken", "gone"])
    for k in keys:
        _mark(instance, k, "done")
    for k in keys[:-1]:
        _mark(instance, k, "partial")
    _add_run(instance, "busy", dg.DagsterRunStatus.STARTED)  # QUEUED needs a remote origin
    for _ in range(GIVE_UP_AFTER):
        _add_run(instance, "broken", dg.DagsterRunStatus.FAILURE)

    data = _tick(instance, home)
    requested = sorted(r.partition_key for r in data.run_requests)
    assert requested == ["fresh", "none", "partial"], data.skip_message
    assert "fresh" in instance.get_dynamic_partitions(drops_partitions.name)  # registered by the tick
    assert "half" not in instance.get_dynamic_partitions(drops_partitions.name)
    for r in data.run_requests:
        assert r.run_key.startswith(f"catchup:{r.partition_key}:")
        assert r.tags["dagster/partition"] == r.partition_key
        assert r.tags.get("dagster/schedule_name") == "catchup_schedule"

    # a second tick before anything ran asks for the same runs under the same run keys (a retried tick is
    # de-duplicated by the daemon on them)
    again = _tick(instance, home)
    assert sorted((r.partition_key, r.run_key) for r in again.run_requests) == sorted(
        (r.partition_key, r.run_key) for r in data.run_requests)

    # once those runs are in progress, the schedule waits for them instead of requesting again
    for d in requested:
        _add_run(instance, d, dg.DagsterRunStatus.STARTED)
    waiting = _tick(instance, home)
    assert waiting.run_requests == [] and "in flight" in waiting.skip_message

    # once they materialized, nothing is missing: the tick skips
    for d in requested + ["busy"]:
        for k in keys:
            _mark(instance, k, d)
    done = _tick(instance, home)
    assert done.run_requests == [] and done.skip_message.startswith("nothing to catch up")

    # a person fixes the broken drop from the UI: a success resets the give-up rule
    _add_run(instance, "broken", dg.DagsterRunStatus.SUCCESS)
    retry = _tick(instance, home)
    assert [r.partition_key for r in retry.run_requests] == ["broken"]


def test_catchup_schedule_skips_on_empty_landing(home, instance):
    data = _tick(instance, home)
    assert data.run_requests == [] and data.skip_message.startswith("nothing to catch up")


# ------------------------------------------------------------------ the ingest checks through Dagster
def test_ingest_checks_pass_on_a_materialized_drop(home, instance):
    """raw_pairs' drop run also runs rejected_pairs' check; catalog's check sees the views and balanced drops."""
    sample = [{"key": f"{i:09d}", "image": jpeg_bytes(i), "caption": f"caption {i}"} for i in range(6)]
    sample.append({"key": "000000099", "image": b"not an image", "caption": "broken"})
    build_drop(home / "landing" / "d1", [sample])
    instance.add_dynamic_partitions(drops_partitions.name, ["d1"])
    # the ingest domain alone (other domains' per-drop assets are not this test's business)
    from clip_assets.defs import ingest as ingest_domain

    ingest_defs = [*ingest_domain.defs.assets, *ingest_domain.defs.asset_checks]
    res = dg.materialize(ingest_defs, selection=[dg.AssetKey("raw_pairs"), dg.AssetKey("rejected_pairs")],
                         partition_key="d1", instance=instance, resources={"home": HomeResource(home=str(home))})
    assert res.success
    checks = {(c.asset_key.to_user_string(), c.check_name): c.passed for c in res.get_asset_check_evaluations()}
    assert checks[("rejected_pairs", "reasons_valid")] is True
    assert checks[("raw_pairs", "rows_balance")] is True
    # catalog with its check (dg.materialize runs the checks of the selected assets it is given)
    res2 = dg.materialize(ingest_defs, selection=[dg.AssetKey("catalog")],
                          instance=instance, resources={"home": HomeResource(home=str(home))})
    assert res2.success
    evals = {c.check_name: c for c in res2.get_asset_check_evaluations()}
    ev = evals["views_and_drops_balance"]
    assert ev.passed, ev.metadata
    assert ev.metadata["missing_views"].value == "none"
    assert ev.metadata["drops"].value == 1


# ------------------------------------------------------------------ the instance (dagster.yaml) and `make dev`
def test_instance_config(tmp_path, monkeypatch):
    """dagster.yaml: SQLite storage under data/ (relative to the project root), a run queue, pools of one
    ("gpu", "duckdb": pools.default_limit), run retries, run monitoring, no telemetry, no sign-up dialog."""
    import yaml

    cfg = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert cfg["storage"]["sqlite"]["base_dir"].startswith("data/")
    assert cfg["compute_logs"]["config"]["base_dir"].startswith("data/")
    # load it for real, from a copy, with relative paths resolving inside tmp_path
    shutil.copyfile(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.chdir(tmp_path)
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        conc = instance.get_concurrency_config()
        assert conc.pool_config.default_pool_limit == 1  # covers the "gpu" and "duckdb" pools
        assert 1 <= conc.run_queue_config.max_concurrent_runs <= 4
        assert instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"
        assert instance.run_retries_enabled and instance.run_retries_max_retries >= 1
        assert instance.run_monitoring_enabled  # frees pool slots of crashed runs
        assert not instance.telemetry_enabled and not instance.nux_enabled  # offline: no sign-up dialog
        assert (tmp_path / "data" / "dagster" / "storage").is_dir()  # created where the config says
    finally:
        instance.dispose()


def test_make_dev_serves_on_localhost_only():
    if shutil.which("make") is None:
        pytest.skip("no make")
    p = subprocess.run(["make", "-n", "-C", str(ROOT), "dev"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    line = next(ln for ln in p.stdout.splitlines() if "dagster dev" in ln)
    assert "-h 127.0.0.1" in line and "0.0.0.0" not in line, line
    assert "-w workspace.yaml" in line


# ------------------------------------------------------------------ shared defaults and the graph's layout
# Table assets whose columns depend on the run (the model's embedding width, the reference set): their column
# schema comes with each materialization instead of the definition.
COLUMNS_AT_MATERIALIZATION = {"embeddings", "reference_set"}


def test_every_table_asset_lists_its_columns():
    for key in ASSET_KEYS:
        node = GRAPH.get(key)
        if "parquet" not in node.kinds or key.to_user_string() in COLUMNS_AT_MATERIALIZATION:
            continue
        schema = (node.metadata or {}).get("dagster/column_schema")
        assert isinstance(schema, dg.TableSchema) and schema.columns, key.to_user_string()
        assert "uid" in {c.name for c in schema.columns} or key.to_user_string() in {
            "score_calibration", "curation_report", "ngram_analysis"}, key.to_user_string()


def test_shared_owner_and_groups_read_left_to_right():
    assert {tuple(GRAPH.get(k).owners) for k in ASSET_KEYS} == {("team:curation",)}
    catalog = GRAPH.get(dg.AssetKey("catalog"))
    assert catalog.group_name == "catalog"
    assert all(GRAPH.get(k).group_name != "catalog" for k in ASSET_KEYS if k != catalog.key)
    # the catalog's check is one of its own check specs: every rebuild (automatic ones included) evaluates it
    assert dg.AssetCheckKey(catalog.key, "views_and_drops_balance") in catalog.check_keys
    # no group depends on a group to its right: ingest -> embed -> score -> curate / iwl -> catalog
    order = {"ingest": 0, "embed": 1, "score": 2, "curate": 3, "iwl": 3, "catalog": 4}
    for key in ASSET_KEYS:
        for parent in GRAPH.get(key).parent_keys:
            assert order[GRAPH.get(parent).group_name] <= order[GRAPH.get(key).group_name], (parent, key)


def test_runs_execute_in_process():
    """No step worker per asset: the process_drop job (and the asset jobs the UI launches) run in-process."""
    assert REPO.get_job("process_drop").executor_def.name == "in_process"
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"


@pytest.mark.parametrize("op, config, needle", [
    ("curation_report", {"keep_fraction": 1.5}, "keep_fraction"),
    ("reference_set", {"n": 0}, "n"),
    ("ngram_analysis", {"max_rows": 5}, "max_rows"),
    ("ngram_analysis", {"ks": [0, 10]}, "ks must hold positive integers"),
    ("iwl_models", {"normalise": "median"}, "normalise"),
    ("iwl_models", {"steps": 0}, "steps"),
    ("importance_weights", {"a_prime": float("inf")}, "a_prime"),
])
def test_bad_run_config_is_refused_before_the_asset_runs(home, op, config, needle):
    """Config constraints are pydantic's (Field bounds, Literal, validators), checked before any work."""
    from clip_assets.defs.keys import CURATION_REPORT, IMPORTANCE_WEIGHTS, IWL_MODEL, NGRAM_ANALYSIS, REFERENCE_SET

    keys = {"curation_report": [CURATION_REPORT], "reference_set": [REFERENCE_SET], "ngram_analysis": [NGRAM_ANALYSIS],
            "iwl_models": [IWL_MODEL, dg.AssetKey("baseline_model")], "importance_weights": [IMPORTANCE_WEIGHTS]}
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(drops_partitions.name, ["d"])
        with pytest.raises(Exception, match=needle) as e:
            dg.materialize([*defs.assets, *defs.asset_checks], selection=keys[op], instance=inst,
                           partition_key="d" if op == "importance_weights" else None,
                           resources={"home": HomeResource(home=str(home))},
                           run_config={"ops": {op: {"config": config}}})
        assert "refuses incomplete upstream" not in str(e.value)  # refused at config, before reading anything


def test_checkpoint_source_needs_a_path(home):
    from clip_assets.defs.keys import CONTRASTIVE_MODEL

    with pytest.raises(Exception, match="source='checkpoint' needs config checkpoint"):
        dg.materialize([*defs.assets, *defs.asset_checks], selection=[CONTRASTIVE_MODEL],
                       resources={"home": HomeResource(home=str(home))},
                       run_config={"ops": {"contrastive_model": {"config": {"source": "checkpoint"}}}})
    assert not (home / "models").exists()  # refused before anything was trained or written
