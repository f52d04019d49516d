"""The drop-format module: one shard pattern, one reader behind ingestion and the training index, pointer reads,
the shard writer, content sniffing and the drop fingerprint."""

from __future__ import annotations

import io
import tarfile

import pyarrow.parquet as pq
import pytest
from PIL import Image

from clip_assets.io.commit import stage_dir
from clip_assets.io.drops import (
    POINTER_COLUMNS, SIDECAR_SCHEMA, ShardWriter, close_handles, drop_fingerprint, drop_status, index_drop,
    read_pointer, shard_ids,
)
from clip_assets.io.images import sniff_format
from clip_assets.io.ingest import ingest_drop
from clip_assets.io.warehouse import partition_dir
from conftest import build_drop, jpeg_bytes


def _good(key, seed):
    return {"key": key, "image": jpeg_bytes(seed), "caption": f"caption {seed}"}


def test_ingestion_and_training_agree_on_what_a_shard_is(home):
    drop = build_drop(home / "landing" / "d", [[_good("000000000", 0)], [_good("000010000", 1)]])
    (drop / "00001.tar").rename(drop / "123456.tar")
    (drop / "00001_stats.json").rename(drop / "123456_stats.json")
    (drop / "0007.tar").write_bytes((drop / "00000.tar").read_bytes())  # 4 digits: not a shard
    assert shard_ids(drop) == ["00000", "123456"] == list(drop_status(drop).shards)
    assert [t["shard"][0].as_py() for t in index_drop(drop)] == ["00000", "123456"]


def test_the_training_index_points_where_raw_pairs_points(home):
    samples = [_good(f"00000000{i}", i) for i in range(4)] + [{"key": "000000009", "image": None, "caption": "x"}]
    drop = build_drop(home / "landing" / "d", [samples])
    ingest_drop(drop, home=home)
    raw = pq.read_table(partition_dir("raw_pairs", "d", home)).select(list(POINTER_COLUMNS)).to_pylist()
    (index,) = index_drop(drop)
    assert index.column_names == list(POINTER_COLUMNS)
    assert index.to_pylist() == raw


def test_read_pointer_reuses_one_handle_and_refuses_short_reads(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    a.write_bytes(b"0123456789")
    b.write_bytes(b"abcdefghij")
    handles: dict = {}
    assert read_pointer(a, 2, 3, handles) == b"234" and read_pointer(a, 0, 1, handles) == b"0"
    fa = handles[str(a)]
    assert read_pointer(b, 5, 2, handles) == b"fg"
    assert list(handles) == [str(b)] and fa.closed  # at most one file open per cache
    with pytest.raises(OSError, match="short read"):
        read_pointer(b, 8, 5, handles)
    close_handles(handles)
    assert handles == {}
    assert read_pointer(a, 9, 1) == b"9"  # without a cache


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, name", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"),
                                       ("BMP", "bmp"), ("TIFF", "tiff")])
def test_formats_are_sniffed_from_content(fmt, name):
    assert sniff_format(_encoded(fmt)) == name
    assert sniff_format(b"RIFF\0\0\0\0WAVE") is None and sniff_format(b"") is None


def test_shard_writer_writes_img2dataset_layout_with_fixed_metadata(tmp_path):
    with stage_dir(tmp_path / "out") as st:
        w = ShardWriter(st, 3)
        w.add("000030000", b"img", "jpg", "a caption", {c: None for c in SIDECAR_SCHEMA.names} | {"key": "000030000"})
        assert w.close(0.0, 1.0) == 1
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["00003.parquet", "00003.tar", "00003_stats.json"]
    with tarfile.open(out / "00003.tar") as tf:
        ms = tf.getmembers()
        assert [m.name for m in ms] == ["000030000.jpg", "000030000.txt", "000030000.json"]
        assert all(m.mtime == 0 and m.mode == 0o444 and m.uname == "" for m in ms)
    assert pq.read_table(out / "00003.parquet").schema.equals(SIDECAR_SCHEMA)


def test_fingerprint_follows_the_sidecar_and_the_tar_ends(home):
    drop = build_drop(home / "landing" / "d", [[_good(f"00000000{i}", i) for i in range(3)]])
    fp = drop_fingerprint(drop)
    tar = drop / "00000.tar"
    data = bytearray(tar.read_bytes())
    data[-1030] ^= 0xFF  # same size, one byte changed near the end
    tar.write_bytes(bytes(data))
    assert drop_fingerprint(drop) != fp
    tar.write_bytes(bytes(data[:-1030]) + bytes([data[-1030] ^ 0xFF]) + bytes(data[-1029:]))
    assert drop_fingerprint(drop) == fp
    (drop / "_SUCCESS").touch()
    assert drop_fingerprint(drop) != fp
