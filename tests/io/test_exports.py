"""Exports of curated subsets: DataComp uid .npy, Parquet manifest, webdataset reshard (ingestible as a drop)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets.cli import main as cli_main
from clip_assets.curate import filters as F
from clip_assets.io import exports as E
from clip_assets.io.ingest import ingest_drop
from clip_assets.io.tables import read_partition
from clip_assets.io.uid import compute_uid, uid_to_u64_pair
from clip_assets.io.commit import stage_dir
from clip_assets.io.warehouse import partition_dir
from conftest import build_drop, jpeg_bytes

SPECS = F.parse_filters({"filters": [
    {"name": "no_filter", "keep": "all"},
    {"name": "kl_text", "column": "text_kl", "keep_fraction": 0.4},
    {"name": "clip_score", "column": "clip_score", "keep_fraction": 0.5},
    {"name": "both", "all_of": ["kl_text", "clip_score"]},
]})
WORDS = ["red", "blue", "green", "circle", "square", "large", "small", "photo"]


def _sample(i: int) -> dict:
    caption = " ".join(WORDS[(i * j) % len(WORDS)] for j in range(1, 2 + i % 5))
    return {"key": f"{i:09d}", "image": jpeg_bytes(i), "caption": caption}


def _scores(home: Path, drop: str) -> None:
    raw = read_partition("raw_pairs", drop, home, columns=["uid"])
    uids = raw["uid"].to_pylist()
    n = len(uids)
    h = np.array([zlib.crc32(u.encode()) / 2**32 for u in uids])
    lineage = {"drop": [drop] * n, "model_id": ["m1"] * n, "reference_id": ["r1"] * n}
    pair = pa.table({"uid": uids, "clip_score": h, "s": h * 100, "log_r_img": h - 0.5, "log_r_txt": h - 0.4,
                     "log_r_siglip": pa.nulls(n, pa.float64()), **lineage})
    kl = pa.table({"uid": uids, **{c: (h * 7 + k) % 1.0 for k, c in enumerate(
        ["image_kl", "image_klr", "image_dc", "image_dw", "text_kl", "text_klr", "text_dc", "text_dw"])}, **lineage})
    with stage_dir(partition_dir("pair_scores", drop, home)) as w:
        w.write_table("part-00000.parquet", pair)
    with stage_dir(partition_dir("kl_stats", drop, home)) as w:
        w.write_table("part-00000.parquet", kl)


@pytest.fixture
def curated(home) -> Path:
    """Two ingested drops (real tars; 3 samples of d2 repeat d1's, so their uids are in both) with scores and
    curated subsets."""
    samples = [_sample(i) for i in range(30)]
    build_drop(home / "landing" / "d1", [samples[:12], samples[12:20]])
    build_drop(home / "landing" / "d2", [samples[17:30]])
    for d in ("d1", "d2"):
        assert ingest_drop(home / "landing" / d, home=home).rejected == 0
        _scores(home, d)
    pool, _ = F.build_subsets(home, SPECS)
    assert (pool.rows, pool.duplicates_removed) == (30, 3)
    return home


def _kept(home: Path, subset: str) -> list[str]:
    t = pq.read_table(E.decisions_path(subset, E.subsets_dir(home))).to_pydict()
    return sorted(u for u, k in zip(t["uid"], t["keep"]) if k)


# ------------------------------------------------------------------------------------------------ npy
def test_uids_to_datacomp_matches_datacomps_own_recipe():
    uids = ["ffffffffffffffff0000000000000001", "139e4a9b22a614771f06c700a8ebe150",
            "8000000000000000ffffffffffffffff", "6e356964a967af455c8016b75d691203",
            "139e4a9b22a614770000000000000000"]
    ours = E.uids_to_datacomp(uids)
    # DataComp's README: np.array([(int(uid[:16], 16), int(uid[16:32], 16)) ...], np.dtype("u8,u8")); .sort()
    ref = np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in uids], np.dtype("u8,u8"))
    ref.sort()
    assert ours.dtype == np.dtype("u8,u8") and ours.dtype.names == ("f0", "f1")
    assert ours.tobytes() == ref.tobytes()
    assert E.datacomp_to_uids(ours) == sorted(uids)  # ascending uid order, both halves unsigned
    assert [tuple(map(int, x)) for x in ours] == [uid_to_u64_pair(u) for u in sorted(uids)]
    with pytest.raises(ValueError, match="32 hex"):
        E.uids_to_datacomp(["abc"])
    with pytest.raises(ValueError, match="hexadecimal"):
        E.uids_to_datacomp(["z" * 32])
    assert E.uids_to_datacomp([]).dtype == np.dtype("u8,u8")


def test_npy_export_is_datacomps_format(curated, tmp_path):
    res = E.export_subset("kl_text", "npy", tmp_path / "out", home=curated)
    assert res.path == tmp_path / "out" / "kl_text.npy"
    arr = np.load(res.path, allow_pickle=False)
    kept = _kept(curated, "kl_text")
    assert arr.dtype == np.dtype("u8,u8") and arr.shape == (len(kept),) == (res.rows,) and 0 < res.rows < 30
    pairs = [tuple(map(int, x)) for x in arr]
    assert pairs == sorted(set(pairs))  # strictly ascending, no duplicates
    assert E.datacomp_to_uids(arr) == kept  # round trip uid -> halves -> uid
    assert pairs == [uid_to_u64_pair(u) for u in kept]
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left


# ------------------------------------------------------------------------------------------------ parquet
def test_parquet_manifest(curated, tmp_path):
    res = E.export_subset("both", "parquet", tmp_path, home=curated)
    t = pq.read_table(res.path)
    kept = _kept(curated, "both")
    assert t.num_rows == res.rows == len(kept) > 0
    assert t["uid"].to_pylist() == kept
    for c in ("uid", "drop", "shard", "key", "caption", "url", "clip_score", "text_kl", "image_kl", "model_id",
              "reference_id"):
        assert c in t.column_names, c
    raw = {r["uid"]: r for d in ("d1", "d2") for r in read_partition("raw_pairs", d, curated).to_pylist()}
    for r in t.to_pylist():
        assert r["caption"] == raw[r["uid"]]["caption"] and r["key"] == raw[r["uid"]]["key"]
        assert r["drop"] == "d1" or r["uid"] not in {x["uid"] for x in raw.values() if x["drop"] == "d1"}


# ------------------------------------------------------------------------------------------------ webdataset
def test_webdataset_reshard_is_a_drop_holding_exactly_the_kept_samples(curated, tmp_path):
    res = E.export_subset("no_filter", "webdataset", tmp_path / "out", home=curated, samples_per_shard=7)
    folder = tmp_path / "out" / "no_filter"
    assert res.path == folder and res.rows == 30 and res.shards == 5
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(["_SUCCESS", *(f"{s:05d}{x}" for s in range(5) for x in (".tar", ".parquet", "_stats.json"))])
    side = pq.read_table(folder / "00000.parquet")
    assert side.column_names[:11] == ["caption", "url", "key", "status", "error_message", "width", "height",
                                      "original_width", "original_height", "exif", "sha256"]
    stats = json.loads((folder / "00004_stats.json").read_text())
    assert stats["count"] == stats["successes"] == 2 and stats["status_dict"] == {"success": 2}

    # placed in a fresh landing folder, the project's own ingestion reads it as a drop
    other = tmp_path / "other"
    shutil.copytree(folder, other / "landing" / "no_filter")
    got = ingest_drop(other / "landing" / "no_filter", home=other)
    assert got.balanced and got.rejected == 0 and got.kept == 30
    ingested = read_partition("raw_pairs", "no_filter", other).to_pylist()
    assert sorted(r["uid"] for r in ingested) == _kept(curated, "no_filter")
    # same bytes and caption (the uid is their hash), keys unique, sources recorded in the json
    with tarfile.open(folder / "00000.tar") as tf:
        first = json.loads(tf.extractfile("000000000.json").read())
    source = int(first["source_key"])
    assert first["uid"] == compute_uid(jpeg_bytes(source), _sample(source)["caption"])
    assert first["key"] == "000000000" and first["sha256"] == hashlib.sha256(jpeg_bytes(source)).hexdigest()


def test_webdataset_of_an_intersection_only_has_its_kept_samples(curated, tmp_path):
    res = E.export_subset("both", "webdataset", tmp_path / "out", home=curated, samples_per_shard=100)
    (tmp_path / "landing").mkdir()
    shutil.move(str(res.path), str(tmp_path / "landing" / "both"))
    got = ingest_drop(tmp_path / "landing" / "both", home=tmp_path / "h2")
    assert got.kept == res.rows == len(_kept(curated, "both")) and got.rejected == 0
    assert sorted(read_partition("raw_pairs", "both", tmp_path / "h2")["uid"].to_pylist()) == _kept(curated, "both")


def test_failed_export_leaves_the_previous_one(curated, tmp_path):
    out = tmp_path / "out"
    E.export_subset("no_filter", "webdataset", out, home=curated, samples_per_shard=10)
    before = {p.name: p.read_bytes() for p in (out / "no_filter").iterdir()}
    (curated / "landing" / "d2" / "00000.tar").unlink()  # an image source vanished
    with pytest.raises(E.ExportError, match="d2"):
        E.export_subset("no_filter", "webdataset", out, home=curated, samples_per_shard=10)
    assert {p.name: p.read_bytes() for p in (out / "no_filter").iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == ["no_filter"]  # no staging folder left


# ------------------------------------------------------------------------------------------------ errors, CLI
def test_unknown_subset_is_named_with_the_known_ones(home, tmp_path):
    with pytest.raises(E.UnknownSubset, match="no curated subsets yet"):
        E.export_subset("kl_text", "npy", tmp_path, home=home)


def test_cli_export(curated, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["export", "kl_txt", "--format", "npy", "--out", str(tmp_path)])
    msg = str(e.value)
    assert "unknown subset 'kl_txt'" in msg and "no_filter, kl_text, clip_score, both" in msg
    assert cli_main(["export", "kl_text", "--format", "npy", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "kl_text.npy")
    assert E.datacomp_to_uids(np.load(tmp_path / "kl_text.npy")) == _kept(curated, "kl_text")


# ------------------------------------------------------------------------------------------------ DataComp pools
def _resharder_selects(drop: Path, subset: np.ndarray) -> list[str]:
    """DataComp's resharder rule, re-implemented: json["uid"] -> "u8,u8" -> searchsorted in the sorted subset."""
    keys = []
    for tar_path in sorted(drop.glob("*.tar")):
        with tarfile.open(tar_path) as tf:
            for m in tf:
                if not m.name.endswith(".json"):
                    continue
                uid = json.loads(tf.extractfile(m).read())["uid"]
                x = np.array((int(uid[:16], 16), int(uid[16:32], 16)), dtype=np.dtype("u8,u8"))
                i = int(np.searchsorted(subset, x))
                if i < len(subset) and subset[i] == x:
                    keys.append(m.name[: -len(".json")])
    return sorted(keys)


def test_datacomp_pool_uids_are_exported_and_select_the_subset_with_datacomps_rule(home, tmp_path):
    rng = np.random.default_rng(16)
    pool_uids = [f"{int(a):016x}{int(b):016x}" for a, b in rng.integers(0, 2**63, size=(20, 2), dtype=np.uint64)]
    samples = [_sample(i) | {"uid": u} for i, u in enumerate(pool_uids)]  # uid in each json and the sidecar
    drop = build_drop(home / "landing" / "pool", [samples[:12], samples[12:]])
    assert ingest_drop(drop, home=home).kept == 20
    raw = read_partition("raw_pairs", "pool", home).to_pylist()
    assert sorted(r["uid"] for r in raw) == sorted(pool_uids)  # the pool's own uids, not content hashes
    assert all(r["content_uid"] == compute_uid(jpeg_bytes(int(r["key"])), r["caption"]) for r in raw)
    _scores(home, "pool")
    F.build_subsets(home, SPECS)
    kept = _kept(home, "kl_text")
    assert 0 < len(kept) < 20 and set(kept) <= set(pool_uids)
    arr = np.load(E.export_subset("kl_text", "npy", tmp_path, home=home).path)
    assert E.datacomp_to_uids(arr) == kept  # exactly the subset's pool uids
    key_of = {r["uid"]: r["key"] for r in raw}
    assert _resharder_selects(drop, arr) == sorted(key_of[u] for u in kept)
