"""``clip-assets``: materialize goes on past a failed drop, takes multi-asset neighbours along, reads a launchpad
run config, prints readable progress; iwl-report is a subcommand."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from clip_assets import cli
from clip_assets.definitions import defs
from clip_assets.world import write_drops

GRAPH = defs.resolve_asset_graph()
K = dg.AssetKey


@pytest.fixture
def instance_home(home, tmp_path, monkeypatch):
    """The test's data home plus its own Dagster instance (DAGSTER_HOME), with two small synthetic drops."""
    dh = tmp_path / "dagster"
    dh.mkdir()
    (dh / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(dh))
    write_drops(home / "landing", drops=2, pairs=40, seed=3, shard_size=20)
    return home


def test_selecting_one_output_of_a_multi_asset_takes_its_neighbours():
    assert cli.with_required_neighbours(GRAPH, {K("raw_pairs")}) == {K("raw_pairs"), K("rejected_pairs")}
    scores = cli.with_required_neighbours(GRAPH, {K("pair_scores")})
    assert {K("pair_scores"), K("kl_stats")} <= scores
    assert cli.with_required_neighbours(GRAPH, {K("catalog")}) == {K("catalog")}


@pytest.mark.slow
def test_materialize_goes_on_past_a_failed_drop_and_reports_it(instance_home, capsys):
    assert cli.main(["materialize", "--drop", "synth-s3-000", "--select", "key:raw_pairs"]) == 0
    out = capsys.readouterr()
    assert "[1/1] raw_pairs, rejected_pairs: 1 drop(s)" in out.out
    assert "STEP_START" not in out.out + out.err  # Dagster's event lines only with --verbose
    instance = dg.DagsterInstance.get()
    assert "synth-s3-000" in instance.get_materialized_partitions(K("rejected_pairs"))

    # the second drop is registered, then its landing folder disappears: its run fails, the rest still runs
    cli._register_complete_drops(instance)
    shutil.rmtree(instance_home / "landing" / "synth-s3-001")
    rc = cli.main(["materialize", "--all-drops", "--select", "key:raw_pairs or key:catalog"])
    out = capsys.readouterr()
    assert rc == 1
    assert "raw_pairs, rejected_pairs for drop synth-s3-001: failed" in out.err
    assert "was it moved or deleted" in out.err  # the step's own error, in one line
    assert "synth-s3-000: ok" in out.err
    assert "1 run(s) failed" in out.err and "synth-s3-000" not in out.err.split("run(s) failed")[1]
    assert instance.get_latest_materialization_event(K("catalog")) is not None  # the global stage ran
    assert "synth-s3-001" not in instance.get_materialized_partitions(K("raw_pairs"))


def test_run_config_is_validated_before_any_run(instance_home, tmp_path, capsys):
    bad_type = tmp_path / "bad.yaml"
    bad_type.write_text("ops:\n  reference_set:\n    config: {n: many}\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("ops:\n  no_such_op: {config: {}}\n")
    for path, needle in ((bad_type, "ops:reference_set:config:n"), (unknown, "no_such_op")):
        assert cli.main(["materialize", "--drop", "synth-s3-000", "--select", "key:raw_pairs",
                         "--config", str(path)]) == 2
        assert needle in capsys.readouterr().err
    assert dg.DagsterInstance.get().get_runs() == []
    with pytest.raises(ValueError, match="mapping"):
        cli.validate_run_config(["not", "a", "mapping"], defs)


def test_run_config_goes_to_the_stage_of_each_op():
    config = {"ops": {"reference_set": {"config": {"n": 10}}, "embeddings": {"config": {}}},
              "resources": {"home": {"config": {"home": "/x"}}}}
    cli.validate_run_config(config, defs)
    stage = cli._stage_config(config, [K("reference_set")], GRAPH, verbose=False)
    assert stage["ops"] == {"reference_set": {"config": {"n": 10}}}
    assert stage["resources"] == config["resources"]
    assert stage["loggers"]["console"]["config"]["log_level"] == "CRITICAL"
    assert cli._stage_config(None, [K("raw_pairs")], GRAPH, verbose=True)["loggers"]["console"]["config"][
        "log_level"] == "DEBUG"


@pytest.mark.slow
def test_materialize_with_a_launchpad_config_file(instance_home, tmp_path):
    """What the launchpad sets, the file sets: here the home resource, so the rows land in another home."""
    other = tmp_path / "other-home"
    shutil.copytree(instance_home / "landing", other / "landing")
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(f"resources:\n  home:\n    config: {{home: '{other}'}}\n"
                        "ops:\n  reference_set:\n    config: {n: 10}\n")
    assert cli.main(["materialize", "--drop", "synth-s3-000", "--select", "key:raw_pairs",
                     "--config", str(run_yaml)]) == 0
    assert (other / "warehouse" / "raw_pairs" / "drop=synth-s3-000").is_dir()
    assert not (instance_home / "warehouse" / "raw_pairs").exists()


def test_iwl_report_is_a_subcommand_that_needs_embeddings(instance_home, capsys):
    assert cli.main(["iwl-report", "--seeds", "0"]) == 2
    assert "no embeddings" in capsys.readouterr().err
