"""The whole data home on an object store (CLIP_ASSETS_HOME=s3://...): `clip-assets synth --out`, `materialize`,
`sql` and `export` as the README shows them, against a real S3 API on loopback (moto's server,
tests/io/s3_server.py). The chain from landing to curated subsets and exports gives the rows and values of the
same run with a local home; nothing of the home is written to local disk but the catalog file and caches."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from s3_server import s3_store  # noqa: F401 - the module-scoped loopback S3 fixture

from clip_assets import cli, config
from clip_assets.io import commit, fs
from clip_assets.io.fs import StorePath
from clip_assets.io.tables import read_partition

ROOT = "home-store"  # this module's own prefix (moto's store is shared per process)
DROPS = ("synth-s7-000", "synth-s7-001")
SYNTH = ["--drops", "2", "--pairs", "48", "--seed", "7", "--shard-size", "20"]
SUBSET = "clip_score"


def _run(home: str | Path, tmp: Path, monkeypatch) -> str | Path:
    """synth -> materialize everything (two drops) -> refreshed catalog, with the home at ``home``."""
    from clip_assets.models.card import write_card
    from clip_assets.models.loading import ModelSpec, load_model

    dh = tmp / "dagster"
    dh.mkdir(parents=True)
    (dh / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(dh))
    monkeypatch.setenv("CLIP_ASSETS_HOME", str(home))
    monkeypatch.setenv("CLIP_ASSETS_CACHE", str(tmp / "cache"))
    monkeypatch.delenv("CLIP_ASSETS_LANDING", raising=False)
    h = config.data_home()
    assert cli.main(["synth", "--out", str(config.landing_dir(h)), *SYNTH]) == 0
    spec = ModelSpec(name="clip-assets-tiny", device="cpu", batch_size=32, workers=0)
    lm = load_model(spec)  # seeded random init: the same weights for both homes
    write_card(spec.to_dict(), lm.model_id, lm.model_id_str, home=h)
    chain = ("key:raw_pairs or key:rejected_pairs or key:embeddings or key:reference_set or key:pair_scores "
             "or key:kl_stats or key:score_calibration or key:curation_report or key:curated_subsets "
             "or key:catalog")
    assert cli.main(["materialize", "--all-drops", "--select", chain]) == 0
    return h


@pytest.fixture(scope="module")
def homes(s3_store, tmp_path_factory):  # noqa: F811
    with pytest.MonkeyPatch.context() as mp:
        store = _run(s3_store.url(ROOT, "home"), tmp_path_factory.mktemp("store"), mp)
        local = _run(tmp_path_factory.mktemp("local") / "home", tmp_path_factory.mktemp("localrun"), mp)
        yield {"store": store, "local": local}


def test_a_store_home_is_a_storepath_and_its_catalog_is_a_local_cache(s3_store, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CLIP_ASSETS_HOME", s3_store.url(ROOT, "h"))
    monkeypatch.setenv("CLIP_ASSETS_CACHE", str(tmp_path / "c"))
    h = config.data_home()
    assert isinstance(h, StorePath) and str(h) == s3_store.url(ROOT, "h")
    assert config.landing_dir(h) == s3_store.url(ROOT, "h", "landing")
    assert isinstance(config.warehouse_dir(h), StorePath)
    cat = config.catalog_path(h)
    assert isinstance(cat, Path) and cat.is_relative_to(tmp_path / "c")
    monkeypatch.setenv("CLIP_ASSETS_HOME", "s3:///nobucket")
    with pytest.raises(ValueError, match="CLIP_ASSETS_HOME='s3:///nobucket'"):
        config.data_home()


def test_the_chain_on_a_store_home_gives_the_rows_of_a_local_home(homes):
    for drop in DROPS:
        for asset in ("raw_pairs", "rejected_pairs", "embeddings", "pair_scores", "kl_stats"):
            got, want = (read_partition(asset, drop, homes[k]) for k in ("store", "local"))
            if "tar_path" in got.column_names:
                assert all(p.startswith("s3://") for p in got["tar_path"].to_pylist())
                got, want = got.drop_columns(["tar_path"]), want.drop_columns(["tar_path"])
            assert got.num_rows == want.num_rows and got.sort_by("uid").equals(want.sort_by("uid")), (asset, drop)
    # the global assets that join the synthetic truth files beside the drops read them on the store too
    for table in ("score_calibration/score_calibration.parquet", "curation_report/curation_report.parquet"):
        got, want = (fs.read_table(homes[k] / "warehouse" / table) for k in ("store", "local"))
        assert got.num_rows > 0 and got.column_names == want.column_names, table
        for c in got.column_names:  # DuckDB's parallel means may differ in the last bits between two runs
            if pa.types.is_floating(got.schema.field(c).type):
                a, b = (np.array(t[c].to_pylist(), dtype=float) for t in (got, want))
                assert np.allclose(a, b, rtol=1e-12, atol=1e-15, equal_nan=True), (table, c)
            else:
                assert got[c].equals(want[c]), (table, c)
    wh = homes["store"] / "warehouse"  # committed as versions behind pointer objects
    assert commit.is_pointer(wh / "raw_pairs" / f"drop={DROPS[0]}") and commit.is_pointer(wh / "curated_subsets")


def _sql(query: str, capsys) -> list[dict]:
    capsys.readouterr()
    assert cli.main(["sql", query, "--format", "json", "--max-rows", "100000"]) == 0
    return json.loads(capsys.readouterr().out)


def test_sql_over_the_store_home_gives_the_answers_of_the_local_home(homes, monkeypatch, capsys):
    answers = {}
    for k in ("store", "local"):
        monkeypatch.setenv("CLIP_ASSETS_HOME", str(homes[k]))
        answers[k] = {
            "subsets": _sql("SELECT subset, drop, count(*) AS n FROM curated_subsets GROUP BY ALL ORDER BY ALL", capsys),
            "scores": _sql("SELECT uid, clip_score, log_r_img FROM pair_scores ORDER BY uid", capsys),
            "drops": _sql("SELECT * FROM drops ORDER BY ALL", capsys),
        }
    assert answers["store"]["subsets"] and answers["store"]["scores"]
    assert answers["store"]["subsets"] == answers["local"]["subsets"]
    assert answers["store"]["drops"] == answers["local"]["drops"]
    for a, b in zip(answers["store"]["scores"], answers["local"]["scores"]):
        assert a["uid"] == b["uid"] and np.isclose(a["log_r_img"], b["log_r_img"], rtol=1e-12)
        assert np.isclose(a["clip_score"], b["clip_score"], rtol=1e-12)
    monkeypatch.setenv("CLIP_ASSETS_HOME", str(homes["store"]))
    assert cli.main(["sql", "COPY (SELECT 1) TO '/tmp/x.csv'"]) != 0  # read-only there too


def test_exports_from_the_store_home_equal_the_local_ones(homes, monkeypatch, capsys):
    out = {}
    for k in ("store", "local"):
        monkeypatch.setenv("CLIP_ASSETS_HOME", str(homes[k]))
        for fmt in ("npy", "parquet", "webdataset"):
            assert cli.main(["export", SUBSET, "--format", fmt]) == 0
        out[k] = config.exports_dir(homes[k])
    s, loc = out["store"], out["local"]
    assert isinstance(s, StorePath)
    uids = [np.load(io.BytesIO((d / f"{SUBSET}.npy").read_bytes())) for d in (s, loc)]
    assert len(uids[0]) > 0 and np.array_equal(uids[0], uids[1])
    got, want = (fs.read_table(d / f"{SUBSET}.parquet") for d in (s, loc))
    paths = [c for c in got.column_names if "path" in c]
    assert got.num_rows == len(uids[0]) and got.drop_columns(paths).equals(want.drop_columns(paths))
    # the webdataset export is a plain folder (tools read it directly), complete once _SUCCESS is there
    names = sorted(p.name for p in (s / SUBSET).iterdir())
    assert "_SUCCESS" in names and names == sorted(p.name for p in (loc / SUBSET).iterdir())
    timing = {"duration", "start_time", "end_time"}  # img2dataset's stats record when the shard was written
    for name in names:
        got, want = ((d / SUBSET / name).read_bytes() for d in (s, loc))
        if name.endswith("_stats.json"):
            got, want = ({k: v for k, v in json.loads(b).items() if k not in timing} for b in (got, want))
        assert got == want, name


def test_a_checkpoint_trained_into_the_store_loads_like_the_local_one_through_the_cache(
        s3_store, tmp_path, monkeypatch):  # noqa: F811
    """Models on a store home: the checkpoint folder is a version behind a pointer; loading fetches that version
    once into the local cache and gives the weights (model id) of the same run trained to local disk."""
    from clip_assets.models.iwl_train import load_checkpoint
    from clip_assets.models.loading import ModelSpec, load_model
    from clip_assets.models.train import CONFIG_FILE, TrainConfig, train_contrastive
    from clip_assets.world import write_drops

    monkeypatch.setenv("CLIP_ASSETS_CACHE", str(tmp_path / "cache"))
    (drop,) = write_drops(tmp_path / "landing", drops=1, pairs=120, seed=4, shard_size=60)
    cfg = TrainConfig(steps=3, batch_size=32, warmup_steps=1, eval_images=16, max_pairs=120)
    models = StorePath(s3_store.url(ROOT, "models"))
    remote = train_contrastive(drop, cfg, name="tiny", out_dir=models)
    local = train_contrastive(drop, cfg, name="tiny", out_dir=tmp_path / "models")
    assert commit.is_pointer(models / "tiny") and remote.checkpoint_dir == models / "tiny"
    assert remote.model_id_str.split("@")[1] == local.model_id_str.split("@")[1]  # the same weights
    cfg_json = json.loads((commit.resolve(models / "tiny") / CONFIG_FILE).read_text())
    timing = {k for k in local.metrics if "second" in k}  # wall and CPU times differ between two runs
    got = cfg_json["clip_assets"]["metrics"]  # written into the committed version after training
    assert set(got) == set(local.metrics) and {k: got[k] for k in set(got) - timing} == {
        k: local.metrics[k] for k in set(got) - timing}
    s3_store.reset()
    again = load_model(ModelSpec(name="x", checkpoint=str(remote.checkpoint_path), device="cpu", workers=0))
    assert again.model_id_str == remote.model_id_str
    assert not [r for r in s3_store.gets() if r.path.endswith(".bin")]  # served from the local cache
    assert load_checkpoint(str(models / "tiny")).model_id_str == remote.model_id_str
    with pytest.raises(Exception, match="does not exist on the store"):
        load_model(ModelSpec(name="x", checkpoint=str(models / "nope" / "w.bin"), device="cpu", workers=0))


def test_sql_on_a_store_home_reads_only_below_its_warehouse(homes, s3_store, monkeypatch, capsys):  # noqa: F811
    """`clip-assets sql` is limited to the warehouse on a store too: another prefix of the same bucket (here the
    landing's truth files) is refused, as a local path outside the warehouse is."""
    monkeypatch.setenv("CLIP_ASSETS_HOME", str(homes["store"]))
    outside = str(homes["store"] / "landing" / f"{DROPS[0]}.truth.parquet")
    assert fs.exists(outside)
    capsys.readouterr()
    assert cli.main(["sql", "SELECT count(*) FROM read_parquet(?)", "--param", outside]) != 0
    assert "Permission Error: Cannot access file" in capsys.readouterr().err
    assert _sql("SELECT count(*) AS n FROM raw_pairs", capsys)[0]["n"] > 0  # the warehouse itself is readable
