"""Landing drops on an object store (CLIP_ASSETS_LANDING=s3://...), the warehouse local: listing, status,
fingerprints, reading and ingesting a drop on a real S3 API on loopback (moto's server, tests/io/s3_server.py)
give what the same files give on local disk, and the landing sensor and `clip-assets synth --out s3://...` work
there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from s3_server import s3_store  # noqa: F401 - the module-scoped loopback S3 fixture

from clip_assets import config
from clip_assets.defs.ingest.sensors import landing_sensor, plan_landing
from clip_assets.defs.resources import HomeResource
from clip_assets.io import fs
from clip_assets.io.drops import (
    ShardEnd, close_handles, drop_fingerprint, drop_signature, drop_status, index_drop, iter_shard, link_problem,
    read_pointer, read_sidecar, read_stats, scan_landing, shard_ids,
)
from clip_assets.io.ingest import drop_changed, ingest_drop, ingest_record, relanded
from clip_assets.io.warehouse import partition_dir
from clip_assets.world import write_drops
from conftest import build_drop, jpeg_bytes

SYNTH = {"drops": 2, "pairs": 40, "seed": 5, "shard_size": 16}
# moto keeps one in-memory store per process, shared by every module's server: this module's own prefix
ROOT = "landing-store"


def _good(key, seed):
    return {"key": key, "image": jpeg_bytes(seed), "caption": f"caption number {seed}"}


def _bad_drop(drop_dir: Path) -> Path:
    """Rejections of several kinds, and shard 1 truncated inside its 4th sample's image (as tests/io/test_ingest)."""
    dup = jpeg_bytes(500)
    shard0 = [
        _good("000000000", 0),
        {"key": "000000001", "image": b"\xff\xd8\xff\xe0 this is not a jpeg", "caption": "corrupt bytes"},
        {"key": "000000002", "image": jpeg_bytes(2), "caption": None},
        {"key": "000000003", "image": None, "caption": "no image member"},
        {"key": "000000004", "image": None, "caption": "failed download", "status": "failed_to_download"},
        {"key": "000000005", "image": dup, "caption": "twice"},
        {"key": "000000006", "image": dup, "caption": "twice"},
        _good("000000007", 7),
    ]
    shard1 = [_good(f"00001{i:04d}", 100 + i) for i in range(6)]
    shard2 = [_good(f"00002{i:04d}", 200 + i) for i in range(2)]
    drop = build_drop(drop_dir, [shard0, shard1, shard2])
    tar = drop / "00001.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[:data.find(b"000010003.jpg") + 512 + 200])
    # shard 2: cut inside the first header, and no sidecar to say what was lost -> one shard-level row
    (drop / "00002.tar").write_bytes((drop / "00002.tar").read_bytes()[:300])
    (drop / "00002.parquet").unlink()
    return drop


@pytest.fixture(scope="module")
def landing(s3_store, tmp_path_factory):  # noqa: F811
    """The same landing area twice: a local folder and s3://<bucket>/landing-store/landing (synthetic drops written by
    write_drops to the store itself, the others uploaded): two synthetic drops, a damaged drop, an incomplete
    drop and a drop with an unsafe name."""
    local = tmp_path_factory.mktemp("local") / "landing"
    url = s3_store.url(ROOT, "landing")
    write_drops(local, **SYNTH)
    urls = write_drops(url, **SYNTH)
    assert urls == [fs.join(url, f"synth-s5-00{i}") for i in range(2)]
    extra = [_bad_drop(local / "damaged"),
             build_drop(local / "half", [[_good("000000000", 1)], [_good("000010000", 2)]]),
             build_drop(local / "bad=..name", [[_good("000000000", 3)]])]
    (local / "half" / "00001_stats.json").unlink()
    for d in extra:
        s3_store.upload_dir(d, f"{ROOT}/landing/{d.name}")
    return local, url


def _status_view(st):
    return (st.name, st.shards, st.finished_shards, st.has_success_marker, st.name_error, st.complete)


def test_synth_writes_to_the_store_the_bytes_of_a_local_run(landing):
    local, url = landing
    names = ["world.json", *(f"synth-s5-00{i}.truth.parquet" for i in range(2))]
    for i in range(2):
        drop = local / f"synth-s5-00{i}"
        names += [f"{drop.name}/{p.name}" for p in sorted(drop.iterdir())]
    assert "synth-s5-000/00002_stats.json" in names
    for name in names:
        assert fs.read_bytes(fs.join(url, name)) == (local / name).read_bytes(), name
    with pytest.raises(FileExistsError, match=r"s3://.*/landing/synth-s5-000 already exists"):
        write_drops(url, **SYNTH)


def test_scan_landing_over_the_url_gives_the_statuses_of_a_local_copy(landing):
    local, url = landing
    on_store, on_disk = scan_landing(url), scan_landing(local)
    assert [_status_view(s) for s in on_store] == [_status_view(s) for s in on_disk]
    assert [s.name for s in on_store] == ["bad=..name", "damaged", "half", "synth-s5-000", "synth-s5-001"]
    assert [s.complete for s in on_store] == [False, True, False, True, True]
    assert on_store[0].name_error.startswith("bad drop name 'bad=..name'")
    assert all(s.path == fs.join(url, s.name) and isinstance(s.path, str) for s in on_store)
    assert _status_view(drop_status(url + "/half/")) == _status_view(drop_status(local / "half"))
    assert shard_ids(fs.join(url, "damaged")) == shard_ids(local / "damaged") == ["00000", "00001", "00002"]
    assert link_problem(fs.join(url, "damaged")) is None  # a store has no symbolic links
    assert scan_landing(fs.join(url, "nothing-here-yet")) == []  # as a missing local folder
    known = {"synth-s5-000"}
    assert plan_landing(url, known) == plan_landing(local, known) == (
        ["damaged", "synth-s5-001"], ["half"], ["bad=..name"])


def test_fingerprint_is_the_local_one_and_fingerprint_and_signature_change_with_a_reupload(landing, s3_store,  # noqa: F811
                                                                                          tmp_path):
    local, url = landing
    for name in ("synth-s5-000", "damaged", "half"):
        assert drop_fingerprint(fs.join(url, name)) == drop_fingerprint(local / name), name
    d = s3_store.url(ROOT, "reland", "d")
    s3_store.upload_dir(local / "synth-s5-000", f"{ROOT}/reland/d")
    fp, sig = drop_fingerprint(d), drop_signature(d)
    assert (drop_fingerprint(d), drop_signature(d)) == (fp, sig)  # stable
    other = write_drops(tmp_path, drops=1, pairs=40, seed=6, shard_size=16)[0]
    s3_store.upload_dir(other, f"{ROOT}/reland/d")  # the same names, other contents
    assert drop_fingerprint(d) == drop_fingerprint(other) != fp
    assert drop_signature(d) != sig


def test_the_tar_reader_gives_the_same_samples_offsets_and_errors_from_the_store(landing):
    local, url = landing
    for drop, shard in (("synth-s5-000", "00000"), ("damaged", "00000"), ("damaged", "00001"),
                        ("damaged", "00002")):
        on_store = list(iter_shard(fs.join(url, drop, f"{shard}.tar")))
        on_disk = list(iter_shard(local / drop / f"{shard}.tar"))
        assert on_store == on_disk, (drop, shard)
    assert on_store[-1].error is not None  # the damaged shard 2 ends with its error, on both
    [end] = list(iter_shard(fs.join(url, "damaged", "07777.tar")))
    assert isinstance(end, ShardEnd) and end.error.startswith("cannot open tar: FileNotFoundError")
    assert "damaged/07777.tar" in end.error
    for shard in ("00000", "00001", "00002"):
        assert read_sidecar(fs.join(url, "damaged"), shard) == read_sidecar(local / "damaged", shard)
        assert read_stats(fs.join(url, "damaged"), shard) == read_stats(local / "damaged", shard)
    assert read_sidecar(fs.join(url, "damaged"), "00002").present is False


def test_a_shard_is_streamed_in_a_few_large_ranged_gets_not_one_per_member(landing, s3_store):  # noqa: F811
    local, url = landing
    tar = fs.join(url, "synth-s5-000", "00000.tar")
    s3_store.reset()
    samples = [s for s in iter_shard(tar) if not isinstance(s, ShardEnd)]
    gets = [r for r in s3_store.gets() if r.path.endswith("/00000.tar")]
    size = (local / "synth-s5-000" / "00000.tar").stat().st_size
    assert len(samples) == 16 and 1 <= len(gets) <= 3  # 48 members; one buffer holds the whole small tar
    assert sum(r.body_bytes for r in gets) <= 2 * size


def test_the_pointer_index_of_a_store_drop_points_into_the_store(landing):
    local, url = landing
    drop_url = fs.join(url, "synth-s5-001")
    on_store, on_disk = index_drop(drop_url), index_drop(local / "synth-s5-001")
    assert len(on_store) == len(on_disk) == 3
    for a, b in zip(on_store, on_disk):
        assert a.drop_columns(["tar_path"]).equals(b.drop_columns(["tar_path"]))
        shard = a["shard"][0].as_py()
        assert set(a["tar_path"].to_pylist()) == {fs.join(drop_url, f"{shard}.tar")}


def _ingested(home: Path, drop: str) -> tuple[list[dict], list[dict]]:
    kept = pq.read_table(partition_dir("raw_pairs", drop, home)).to_pylist()
    rej = pq.read_table(partition_dir("rejected_pairs", drop, home)).to_pylist()
    return kept, rej


def _without_tar_path(rows: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k != "tar_path"} for r in rows),
                  key=lambda r: (r["uid"] or "", r["shard"], r["key"] or "", r["reason"] if "reason" in r else ""))


@pytest.mark.parametrize("drop", ["synth-s5-000", "damaged"])
def test_ingesting_a_store_drop_gives_the_rows_of_the_local_copy(landing, tmp_path, drop):
    local, url = landing
    drop_url = fs.join(url, drop)
    res_s = ingest_drop(drop_url, home=tmp_path / "store-home")
    res_l = ingest_drop(local / drop, home=tmp_path / "local-home")
    kept_s, rej_s = _ingested(tmp_path / "store-home", drop)
    kept_l, rej_l = _ingested(tmp_path / "local-home", drop)
    assert _without_tar_path(kept_s) == _without_tar_path(kept_l)
    assert _without_tar_path(rej_s) == _without_tar_path(rej_l)
    assert res_s.seen == len(kept_s) + len(rej_s) == res_l.seen and res_s.balanced
    assert (res_s.kept, res_s.rejected, res_s.reasons) == (res_l.kept, res_l.rejected, res_l.reasons)
    assert res_s.fingerprint == res_l.fingerprint
    assert {r["tar_path"] for r in kept_s + rej_s if r["tar_path"]} <= {
        fs.join(drop_url, f"{s}.tar") for s in shard_ids(drop_url)}
    if drop == "damaged":
        reasons = {(r["key"], r["reason"]) for r in rej_s}
        assert {("000010003", "truncated_tar"), ("000010004", "truncated_tar"), ("000010005", "truncated_tar"),
                (None, "truncated_tar"), ("000000001", "undecodable_image"), ("000000006", "duplicate_uid")} <= reasons
        [shard_row] = [r for r in rej_s if r["shard"] == "00002"]
        assert shard_row["detail"] == "cannot open tar: ReadError: truncated header"
    else:
        assert len(kept_s) == SYNTH["pairs"] and not rej_s
    # every pointer of the store-ingested rows reads back, by ranged reads, the bytes of the local pointer
    local_by_uid = {r["uid"]: r for r in kept_l}
    handles: dict = {}
    try:
        for r in kept_s:
            lr = local_by_uid[r["uid"]]
            assert read_pointer(r["tar_path"], r["offset"], r["size"], handles) == read_pointer(
                lr["tar_path"], lr["offset"], lr["size"])
    finally:
        close_handles(handles)
    rec = ingest_record(drop, tmp_path / "store-home")
    assert rec["fingerprint"] == res_s.fingerprint and rec["signature"] == drop_signature(drop_url)
    assert not drop_changed(drop_url, tmp_path / "store-home") and relanded(drop_url, tmp_path / "store-home") is None


def test_malformed_store_drops_and_landing_values_are_refused_by_name(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"'s3://b/a//c'"):
        ingest_drop("s3://b/a//c", home=tmp_path)
    monkeypatch.setenv("CLIP_ASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLIP_ASSETS_LANDING", raising=False)
    assert config.landing_dir() == tmp_path / "home" / "landing"
    monkeypatch.setenv("CLIP_ASSETS_LANDING", "s3://bucket/pools/landing/")
    assert config.landing_dir() == "s3://bucket/pools/landing"
    assert config.landing_dir(tmp_path / "other") == "s3://bucket/pools/landing"
    monkeypatch.setenv("CLIP_ASSETS_LANDING", str(tmp_path / "elsewhere"))
    assert config.landing_dir() == tmp_path / "elsewhere"
    for bad in ("ftp://host/landing", "s3://", "s3://bucket/a/../b"):
        monkeypatch.setenv("CLIP_ASSETS_LANDING", bad)
        with pytest.raises(ValueError, match=rf"CLIP_ASSETS_LANDING={bad!r}".replace("?", r"\?").replace(".", r"\.")):
            config.landing_dir()


def test_the_landing_sensor_sees_the_store_drops_with_clip_assets_landing_set(landing, tmp_path, monkeypatch):
    _, url = landing
    monkeypatch.setenv("CLIP_ASSETS_LANDING", url)
    home = tmp_path / "home"
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, resources={"home": HomeResource(home=str(home))}) as ctx:
        res = landing_sensor(ctx)
    assert [r.partition_key for r in res.run_requests] == ["damaged", "synth-s5-000", "synth-s5-001"]
    assert json.loads(res.cursor)["incomplete"] == ["half"]
    for req in res.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    with dg.build_sensor_context(instance=instance, resources={"home": HomeResource(home=str(home))}) as ctx:
        again = landing_sensor(ctx)
    assert isinstance(again, dg.SkipReason) and url in again.skip_message


def test_cli_synth_out_s3_then_listing(s3_store, tmp_path, monkeypatch, capsys):  # noqa: F811
    from clip_assets import cli

    url = s3_store.url(ROOT, "cli-landing")
    monkeypatch.setenv("CLIP_ASSETS_HOME", str(tmp_path / "home"))
    assert cli.main(["synth", "--out", url + "/", "--drops", "2", "--pairs", "5", "--shard-size", "3",
                     "--seed", "9"]) == 0
    out = capsys.readouterr()
    assert out.out.split() == [fs.join(url, "synth-s9-000"), fs.join(url, "synth-s9-001")]
    assert f"to {url}" in out.err
    assert [(s.name, s.shards, s.complete) for s in scan_landing(url)] == [
        ("synth-s9-000", ("00000", "00001"), True), ("synth-s9-001", ("00000", "00001"), True)]
    assert fs.list_dir(url) == ["synth-s9-000", "synth-s9-000.truth.parquet", "synth-s9-001",
                                "synth-s9-001.truth.parquet", "world.json"]
    # the default --out is the landing area, on the store too
    monkeypatch.setenv("CLIP_ASSETS_LANDING", url)
    assert cli.main(["synth", "--drops", "1", "--pairs", "2", "--seed", "9", "--start", "2"]) == 0
    assert [s.name for s in scan_landing(config.landing_dir())] == ["synth-s9-000", "synth-s9-001", "synth-s9-002"]
    dh = tmp_path / "dagster"  # `status` lists the landing area beside the instance's partitions
    dh.mkdir()
    (dh / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(dh))
    capsys.readouterr()
    assert cli.main(["status", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(",")[:3] for ln in lines if ln.startswith("synth-s9-")] == [
        [f"synth-s9-00{i}", "complete", "false"] for i in range(3)]
    with pytest.raises(ValueError, match=r"'ftp://x/y'"):
        cli.main(["synth", "--out", "ftp://x/y", "--pairs", "2"])
    shutil.rmtree(tmp_path / "home", ignore_errors=True)


def _chain_run(root: Path, monkeypatch, landing_location) -> Path:
    """raw_pairs -> embeddings through Dagster (clip-assets materialize) for the synthetic drops of
    ``landing_location``, into a fresh local home; returns the home."""
    from clip_assets import cli
    from clip_assets.models.card import write_card
    from clip_assets.models.loading import ModelSpec, load_model

    home, dh = root / "home", root / "dagster"
    dh.mkdir(parents=True)
    (dh / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("CLIP_ASSETS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dh))
    monkeypatch.setenv("CLIP_ASSETS_LANDING", str(landing_location))
    spec = ModelSpec(name="clip-assets-tiny", device="cpu", batch_size=32, workers=0)
    lm = load_model(spec)  # seeded random init: the same weights for both runs
    write_card(spec.to_dict(), lm.model_id, lm.model_id_str, home=home)
    chain = "key:raw_pairs or key:embeddings"  # the rest of the chain on a store: tests/io/test_home_store.py
    assert cli.main(["materialize", "--drop", "synth-s5-000", "--drop", "synth-s5-001", "--select", chain]) == 0
    return home


def test_the_chain_from_a_store_landing_gives_the_rows_of_a_local_landing(landing, tmp_path, monkeypatch):
    """A local home with its landing on the store: Dagster's ingest asset reads the drops on the store, and
    embeddings reads every image through its s3:// pointer (ranged reads): raw_pairs (but its tar paths) and
    embeddings equal a run on a local copy of the same landing (the whole chain with the home on the store:
    tests/io/test_home_store.py)."""
    local, url = landing
    from clip_assets.io.tables import read_partition

    homes = {"store": _chain_run(tmp_path / "s", monkeypatch, url),
             "local": _chain_run(tmp_path / "l", monkeypatch, local)}
    for drop in ("synth-s5-000", "synth-s5-001"):
        raw = {k: read_partition("raw_pairs", drop, h).sort_by("uid").to_pylist() for k, h in homes.items()}
        assert len(raw["store"]) == SYNTH["pairs"]
        assert _without_tar_path(raw["store"]) == _without_tar_path(raw["local"])
        assert all(r["tar_path"].startswith(fs.join(url, drop) + "/") for r in raw["store"])
        for asset in ("embeddings",):
            got, want = (read_partition(asset, drop, homes[k]).sort_by("uid") for k in ("store", "local"))
            assert got.num_rows == SYNTH["pairs"] and got.equals(want), (asset, drop)

