"""Ingestion: every kind of bad input is rejected with its reason, and nothing else is lost."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from clip_assets.io.commit import VERSION_PREFIX, resolve
from clip_assets.io.drops import BadDropName, drop_status, validate_drop_name
from clip_assets.io.ingest import ingest_drop
from clip_assets.io.warehouse import partition_dir
from conftest import build_drop, jpeg_bytes


def _good(key, seed):
    return {"key": key, "image": jpeg_bytes(seed), "caption": f"caption number {seed}"}


def _bad_drop(landing):
    good_img = jpeg_bytes(1000)
    shard0 = [
        _good("000000000", 0),
        {"key": "000000001", "image": b"\xff\xd8\xff\xe0 this is not a jpeg", "caption": "corrupt bytes"},
        {"key": "000000002", "image": jpeg_bytes(2)[:60], "caption": "cut-off jpeg"},
        {"key": "000000003", "image": jpeg_bytes(3), "caption": None},
        {"key": "000000004", "image": jpeg_bytes(4), "caption": "   "},
        {"key": "000000005", "image": jpeg_bytes(5), "caption": b"caf\xe9 latin-1"},
        {"key": "000000006", "image": None, "caption": "no image member"},
        {"key": "000000007", "image": None, "caption": "failed download", "status": "failed_to_download"},
        {"key": "000000008", "image": good_img, "caption": "the same pair twice"},
        {"key": "000000009", "image": good_img, "caption": "the same pair twice"},
        _good("000000010", 10),
    ]
    shard1 = [_good(f"00001{i:04d}", 100 + i) for i in range(6)]
    drop = build_drop(landing / "bad-drop", [shard0, shard1])
    # truncate shard 1 in the middle of its 4th sample's image
    tar = drop / "00001.tar"
    data = tar.read_bytes()
    cut = data.find(b"000010003.jpg") + 512 + 200
    tar.write_bytes(data[:cut])
    return drop


def test_every_bad_input_is_rejected_with_its_reason(home):
    drop = _bad_drop(home / "landing")
    res = ingest_drop(drop, home=home)
    kept = pq.read_table(partition_dir("raw_pairs", "bad-drop", home)).to_pylist()
    rej = pq.read_table(partition_dir("rejected_pairs", "bad-drop", home)).to_pylist()
    by_key = {r["key"]: r["reason"] for r in rej}
    assert by_key["000000001"] == "undecodable_image"
    assert by_key["000000002"] == "undecodable_image"
    assert by_key["000000003"] == "missing_caption"
    assert by_key["000000004"] == "empty_caption"
    assert by_key["000000005"] == "caption_not_utf8"
    assert by_key["000000006"] == "missing_image"
    assert by_key["000000007"] == "status_not_success"
    assert by_key["000000009"] == "duplicate_uid"
    # shard 1: samples 0-2 survive, sample 3 is cut inside its image, 4-5 never reached
    assert by_key["000010003"] == "truncated_tar"
    assert by_key["000010004"] == "truncated_tar" and by_key["000010005"] == "truncated_tar"
    kept_keys = sorted(r["key"] for r in kept)
    assert kept_keys == ["000000000", "000000008", "000000010", "000010000", "000010001", "000010002"]
    # nothing lost: 11 + 6 rows seen
    assert res.seen == 17 and res.kept == len(kept) == 6 and res.rejected == len(rej) == 11
    assert res.balanced


def test_pointers_give_back_the_image_bytes(home):
    from clip_assets.io.drops import read_pointer
    from clip_assets.io.uid import compute_uid

    drop = build_drop(home / "landing" / "d1", [[_good(f"0000000{i:02d}", i) for i in range(5)]])
    ingest_drop(drop, home=home)
    for r in pq.read_table(partition_dir("raw_pairs", "d1", home)).to_pylist():
        data = read_pointer(r["tar_path"], r["offset"], r["size"])
        assert compute_uid(data, r["caption"]) == r["uid"]
        assert len(r["uid"]) == 32


def test_rematerializing_replaces_rows_and_a_crash_leaves_old_state(home, monkeypatch):
    drop = build_drop(home / "landing" / "d2", [[_good(f"0000000{i:02d}", i) for i in range(4)]] * 2)
    ingest_drop(drop, home=home)
    first = pq.read_table(partition_dir("raw_pairs", "d2", home)).sort_by("uid")
    ingest_drop(drop, home=home)
    again = pq.read_table(partition_dir("raw_pairs", "d2", home)).sort_by("uid")
    assert first.equals(again)
    # the second shard repeats the first: its rows are duplicates, rejected, still counted
    assert first.num_rows == 4

    import clip_assets.io.ingest as ing

    calls = {"n": 0}
    real = ing._ingest_shard

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed mid-drop")
        return real(*a, **k)

    monkeypatch.setattr(ing, "_ingest_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        ing.ingest_drop(drop, home=home)
    after = pq.read_table(partition_dir("raw_pairs", "d2", home)).sort_by("uid")
    assert after.equals(first)
    # no scratch left; hidden entries are versions only: the current one, and those retired within the grace
    leftovers = [p for p in (home / "warehouse" / "raw_pairs").iterdir()
                 if p.name.startswith(".") and not p.name.startswith(VERSION_PREFIX)]
    assert leftovers == []
    versions = sorted(p for p in (home / "warehouse" / "raw_pairs").iterdir() if p.name.startswith(VERSION_PREFIX))
    assert resolve(partition_dir("raw_pairs", "d2", home)) == versions[-1] and len(versions) == 2


def test_drop_names_are_validated():
    for bad in ["..", "a/b", "../x", ".hidden", "", "a..b", "x" * 200, "sp ace"]:
        with pytest.raises(BadDropName, match="bad drop name"):
            validate_drop_name(bad)
    assert validate_drop_name("synth-s0-000") == "synth-s0-000"


def test_completeness_needs_every_stats_file_or_success(home):
    d = build_drop(home / "landing" / "d3", [[_good("000000000", 1)], [_good("000010000", 2)]])
    assert drop_status(d).complete
    os.remove(d / "00001_stats.json")
    assert not drop_status(d).complete
    (d / "_SUCCESS").touch()
    assert drop_status(d).complete
