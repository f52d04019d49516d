"""Ingestion under hostile input (issue 11): per-sample failures are rejected rows, the sidecar never loses or
double-counts a row, links are refused, killed runs' scratch is cleaned, the two tables commit together, and a
drop's content identity is recorded."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import time
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFile

import clip_assets.io.images as images_mod
from clip_assets.defs.ingest.sensors import plan_landing
from clip_assets.io import commit
from clip_assets.io.drops import drop_fingerprint, drop_status
from clip_assets.io.ingest import (
    DROP_FILE, IngestLimits, RefusedDrop, drop_changed, ingest_drop, ingested_fingerprint,
)
from clip_assets.io.warehouse import partition_dir
from conftest import build_drop, jpeg_bytes


def _good(key, seed):
    return {"key": key, "image": jpeg_bytes(seed), "caption": f"caption number {seed}"}


def _tables(home, drop):
    kept = pq.read_table(partition_dir("raw_pairs", drop, home)).to_pylist()
    rej = pq.read_table(partition_dir("rejected_pairs", drop, home)).to_pylist()
    return kept, rej


def _reasons(rej):
    return {r["key"]: r["reason"] for r in rej}


def _png(size=(8, 8), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels but carries no pixel data (a few dozen bytes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="GIF")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ class 3
def test_bad_samples_are_rejected_rows_never_a_crashed_drop(home):
    bad_name = b"caf\xe9".decode("utf-8", "surrogateescape")  # a member name whose bytes are not UTF-8
    samples = [
        _good("000000000", 0),
        {"key": "000000001", "image": jpeg_bytes(1), "caption": None,
         "json": b'{"key": "000000001", "caption": "lone \\ud800 surrogate"}'},
        {"key": "000000002", "in_sidecar": False,
         "members": [(f"{bad_name}.jpg", jpeg_bytes(2)), (f"{bad_name}.txt", b"a caption")]},
        {"key": "000000003", "image": _png(), "caption": "png bytes in a .jpg member"},
        {"key": "000000004", "image": _gif(), "caption": "gif bytes in a .jpg member"},
        {"key": "000000005", "image": _png_header_only(9_900, 9_900), "caption": "a 98 megapixel header"},
        {"key": "000000006", "image": jpeg_bytes(6), "caption": "x" * 10_001},
        {"key": "000000007", "image": jpeg_bytes(7), "caption": "broken json", "json": b"{not json"},
        _good("000000008", 8),
    ]
    drop = build_drop(home / "landing" / "d", [samples])
    res = ingest_drop(drop, home=home)
    kept, rej = _tables(home, "d")
    by_key = _reasons(rej)
    assert by_key["000000001"] == "bad_json"
    assert by_key["caf\\xe9"] == "member_name_not_utf8"
    assert by_key["000000004"] == "unsupported_image_format"
    assert by_key["000000005"] == "image_too_large"
    assert by_key["000000006"] == "caption_too_long"
    assert by_key["000000007"] == "bad_json"
    formats = {r["key"]: r["image_format"] for r in kept}
    assert formats == {"000000000": "jpg", "000000003": "png", "000000008": "jpg"}  # by content, not extension
    assert res.seen == len(samples) == res.kept + res.rejected and res.balanced


def test_pixel_cap_is_read_from_the_header_and_each_image_is_decoded_once(home, monkeypatch):
    samples = [_good(f"00000000{i}", i) for i in range(3)]
    samples.append({"key": "000000003", "image": _png((64, 64)), "caption": "too many pixels for the cap"})
    drop = build_drop(home / "landing" / "d", [samples])
    loads = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self):
        loads.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)  # the decode of every file-backed image
    res = ingest_drop(drop, home=home, limits=IngestLimits(max_pixels=40 * 40))
    _, rej = _tables(home, "d")
    assert _reasons(rej) == {"000000003": "image_too_large"}
    assert (64, 64) not in loads  # refused before any decode
    assert loads == [(32, 32)] * res.kept and res.kept == 3  # every kept image decoded exactly once


def test_animated_webp_and_tiff_are_unsupported_formats(home):
    buf = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:])
    tif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tif, format="TIFF")
    samples = [{"key": "000000000", "image": buf.getvalue(), "ext": "webp", "caption": "animated"},
               {"key": "000000001", "image": tif.getvalue(), "ext": "png", "caption": "tiff in a .png"}]
    res = ingest_drop(build_drop(home / "landing" / "d", [samples]), home=home)
    _, rej = _tables(home, "d")
    assert _reasons(rej) == {"000000000": "unsupported_image_format", "000000001": "unsupported_image_format"}
    assert "animated webp" in rej[0]["detail"] and res.balanced


def test_sixteen_bit_png_keeps_its_grey_levels():
    arr = np.full((8, 8), 32768, dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    out = images_mod.decode_resize(buf.getvalue(), 8)
    assert out.shape == (8, 8, 3) and np.all(np.abs(out.astype(int) - 128) <= 1)  # not clipped to white


# ------------------------------------------------------------------------------------------------ class 4
def test_an_unreadable_sidecar_is_a_recorded_reason_not_no_sidecar(home):
    samples = [_good(f"00000000{i}", i) for i in range(3)]
    samples += [{"key": f"00000000{i}", "image": None, "caption": "x", "status": "failed_to_download"}
                for i in (3, 4)]
    drop = build_drop(home / "landing" / "d", [samples])
    side = drop / "00000.parquet"
    side.write_bytes(side.read_bytes()[:40])  # truncated
    res = ingest_drop(drop, home=home)
    kept, rej = _tables(home, "d")
    assert len(kept) == 3 and [r["reason"] for r in rej] == ["unreadable_sidecar"] * 2
    assert res.seen == 5 and res.balanced  # the two failed downloads the stats count are not lost
    assert res.shards[0].sidecar_error and res.warnings and "sidecar unreadable" in res.warnings[0]


def test_an_unreadable_sidecar_without_stats_is_one_shard_level_row(home):
    drop = build_drop(home / "landing" / "d", [[_good("000000000", 0)]])
    (drop / "00000.parquet").write_bytes(b"PAR1 not really")
    (drop / "_SUCCESS").touch()
    os.remove(drop / "00000_stats.json")
    res = ingest_drop(drop, home=home)
    _, rej = _tables(home, "d")
    assert [(r["key"], r["reason"]) for r in rej] == [(None, "unreadable_sidecar")]
    assert res.seen == 2 and res.kept == 1 and res.balanced


@pytest.mark.parametrize("failed_first", [False, True])
def test_a_duplicated_sidecar_key_is_seen_once_each_and_never_rejects_a_good_sample(home, failed_first):
    dup = {"key": "000000001", "image": None, "caption": "x", "status": "failed_to_download", "in_tar": False}
    good = _good("000000001", 1)
    samples = [_good("000000000", 0)] + ([dup, good] if failed_first else [good, dup])
    drop = build_drop(home / "landing" / "d", [samples])
    res = ingest_drop(drop, home=home)
    kept, rej = _tables(home, "d")
    assert sorted(r["key"] for r in kept) == ["000000000", "000000001"]
    assert [(r["key"], r["reason"]) for r in rej] == [("000000001", "duplicate_sidecar_key")]
    assert res.seen == 3 and res.balanced  # two tar keys + one further sidecar row


def test_a_sidecar_row_with_a_null_key_is_a_rejected_row(home):
    samples = [_good("000000000", 0), {"key": "zz", "in_tar": False, "sidecar": {"key": None}}]
    res = ingest_drop(build_drop(home / "landing" / "d", [samples]), home=home)
    _, rej = _tables(home, "d")
    assert [(r["key"], r["reason"]) for r in rej] == [(None, "missing_key")]
    assert res.seen == 2 and res.kept == 1 and res.balanced


def test_members_in_different_folders_are_different_samples(home):
    samples = [{"key": "000", "in_sidecar": False, "members": [("a/000.jpg", jpeg_bytes(0)), ("b/000.txt", b"c")]},
               {"key": "a/001", "in_sidecar": False,
                "members": [("a/001.jpg", jpeg_bytes(1)), ("a/001.txt", b"kept: same folder")]}]
    res = ingest_drop(build_drop(home / "landing" / "d", [samples]), home=home)
    kept, rej = _tables(home, "d")
    assert _reasons(rej) == {"a/000": "missing_caption", "b/000": "missing_image"}
    assert [r["key"] for r in kept] == ["a/001"] and res.seen == 3 and res.balanced


def test_a_key_split_over_non_adjacent_members_is_seen_per_group(home):
    samples = [{"key": "k", "in_sidecar": False, "members": [
        ("000.jpg", jpeg_bytes(0)), ("000.txt", b"first"), ("001.jpg", jpeg_bytes(1)), ("001.txt", b"second"),
        ("000.json", b"{}")]}]
    res = ingest_drop(build_drop(home / "landing" / "d", [samples]), home=home)
    kept, rej = _tables(home, "d")
    assert sorted(r["key"] for r in kept) == ["000", "001"] and _reasons(rej) == {"000": "duplicate_key"}
    assert res.seen == 3 and res.balanced


# ------------------------------------------------------------------------------------------------ class 9
def test_a_landing_symlink_is_skipped_with_a_reason_and_refused(home):
    real = build_drop(home / "landing" / "real", [[_good("000000000", 0)]])
    link = home / "landing" / "alias"
    link.symlink_to(real, target_is_directory=True)
    st = drop_status(link)
    assert not st.complete and "symbolic link" in st.name_error
    new, _, bad = plan_landing(home / "landing", set())
    assert new == ["real"] and bad == ["alias"]
    with pytest.raises(RefusedDrop, match="symbolic link"):
        ingest_drop(link, home=home)
    assert not partition_dir("raw_pairs", "real", home).exists()  # nothing written under the target's name
    assert not partition_dir("raw_pairs", "alias", home).exists()


# ------------------------------------------------------------------------------------------------ class 10
def test_killed_runs_scratch_is_cleaned_when_ingest_starts_and_young_scratch_is_spared(home):
    drop = build_drop(home / "landing" / "d", [[_good("000000000", 0)]])
    root = home / "warehouse" / "raw_pairs"
    root.mkdir(parents=True)
    stale = [root / ".staging-drop=x-111", root / ".trash-drop=y-00000000000000000001", root / ".a.parquet.1.tmp"]
    stale[0].mkdir(), stale[1].mkdir(), stale[2].write_bytes(b"")
    (root / "drop=y").mkdir()  # so the trash is not a vanished partition's only copy
    young = root / ".staging-drop=z-222"
    young.mkdir()
    past = time.time() - 7 * 3600
    for p in stale:
        os.utime(p, (past, past))
    ingest_drop(drop, home=home)
    names = sorted(p.name for p in root.iterdir())
    version = commit.resolve(root / "drop=d").name  # the new partition's version (the pointer drop=d names it)
    assert names == sorted(["drop=d", "drop=y", young.name, version]) and version.startswith(".v-drop=d-")


# ------------------------------------------------------------------------------------------------ class 5
def _relanded(home, version):
    d = home / "landing" / "d"
    shutil.rmtree(d, ignore_errors=True)
    if version == 1:
        return build_drop(d, [[_good(f"00000000{i}", i) for i in range(3)] + [{"key": "000000009", "image": None,
                                                                                "caption": "no image"}]])
    return build_drop(d, [[_good("000000000", 10), {"key": "000000005", "image": b"junk", "caption": "x"},
                           {"key": "000000006", "image": jpeg_bytes(6), "caption": "  "}]])


def _state(home):
    kept, rej = _tables(home, "d")
    fp = json.loads((partition_dir("raw_pairs", "d", home) / DROP_FILE).read_text())["fingerprint"]
    return sorted(r["uid"] for r in kept), sorted(r["key"] for r in rej), fp


@pytest.mark.parametrize("at", range(6))
def test_raw_and_rejected_pairs_commit_together_under_a_crash_at_any_step(home, monkeypatch, at):
    ingest_drop(_relanded(home, 2), home=home)
    v2 = _state(home)
    ingest_drop(_relanded(home, 1), home=home)
    v1 = _state(home)
    drop = _relanded(home, 2)
    real, calls = os.replace, {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] - 1 == at:
            raise KeyboardInterrupt(f"killed at rename {at}")
        real(src, dst)

    monkeypatch.setattr(commit.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        ingest_drop(drop, home=home)
    monkeypatch.undo()
    for asset in ("raw_pairs", "rejected_pairs"):  # what the next run (or cleaner) does first
        commit.clean_stale(home / "warehouse" / asset)
    assert _state(home) == (v1 if at == 0 else v2)


# ------------------------------------------------------------------------------------------------ class 7
def test_a_drop_relanded_with_other_contents_is_detected(home):
    drop = _relanded(home, 1)
    res = ingest_drop(drop, home=home)
    assert ingested_fingerprint("d", home) == res.fingerprint == drop_fingerprint(drop)
    assert not drop_changed(drop, home)
    drop = _relanded(home, 2)  # same name, other contents
    assert drop_fingerprint(drop) != res.fingerprint and drop_changed(drop, home)
    ingest_drop(drop, home=home)
    assert not drop_changed(drop, home)
    copy = shutil.copytree(drop, home / "elsewhere" / "d")
    assert drop_fingerprint(copy) == drop_fingerprint(drop)  # identity is content, not path or mtime


# ------------------------------------------------------------------------------------------------ DataComp uids
def test_carried_uids_are_the_uid_and_the_content_hash_is_kept_beside(home):
    uids = [f"{i:032x}" for i in (7, 3)]
    samples = [_good("000000000", 0) | {"uid": uids[0]}, _good("000000001", 1) | {"uid": uids[1].upper()},
               _good("000000002", 2),  # no uid: the content uid
               _good("000000003", 3) | {"uid": "abc"},
               _good("000000004", 4) | {"uid": f"{9:032x}", "sidecar": {"uid": f"{8:032x}"}},
               _good("000000005", 5) | {"uid": uids[0]}]  # another sample carrying an ingested uid
    res = ingest_drop(build_drop(home / "landing" / "d", [samples]), home=home)
    kept, rej = _tables(home, "d")
    from clip_assets.io.uid import compute_uid
    got = {r["key"]: (r["uid"], r["content_uid"]) for r in kept}
    assert got["000000000"] == (uids[0], compute_uid(jpeg_bytes(0), "caption number 0"))
    assert got["000000001"][0] == uids[1]  # lower-cased
    assert got["000000002"][0] == got["000000002"][1] == compute_uid(jpeg_bytes(2), "caption number 2")
    assert _reasons(rej) == {"000000003": "bad_uid", "000000004": "uid_mismatch", "000000005": "duplicate_uid"}
    assert res.balanced and res.seen == 6
