"""The filesystem layer (clip_assets.io.fs) and pointer reads against a real S3 API on loopback (moto's server).

Bytes fetched from the store are counted by the server itself (tests/io/s3_server.py), so "a ranged read of the
member, never the whole tar" is checked on the wire, not inferred from timing.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from s3_server import s3_store  # noqa: F401 - the module-scoped loopback S3 fixture

from clip_assets.io import fs
from clip_assets.io.drops import close_handles, index_drop, read_pointer, read_pointers
from clip_assets.world import write_drops


@pytest.fixture(scope="module")
def s3_drop(s3_store, tmp_path_factory):  # noqa: F811
    """One synthetic drop (3 shards) written locally and uploaded under landing/<drop>/ on the bucket."""
    [drop] = write_drops(tmp_path_factory.mktemp("world") / "landing", drops=1, pairs=40, seed=3, shard_size=16)
    s3_store.upload_dir(drop, f"landing/{drop.name}")
    pointers = [row for t in index_drop(drop) for row in t.to_pylist()]
    assert len(pointers) == 40
    return drop, s3_store.url("landing", drop.name), pointers


def _remote(tar_path: str, drop_url: str) -> str:
    return fs.join(drop_url, Path(tar_path).name)


# -- resolve / join / is_remote ------------------------------------------------------------------------------

def test_local_paths_resolve_to_the_local_filesystem_and_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for value in ("a/b.tar", Path("a/b.tar"), f"file://{tmp_path}/a/b.tar"):
        fsys, path = fs.resolve(value)
        assert isinstance(fsys, pafs.LocalFileSystem) and path == str(tmp_path / "a" / "b.tar")
        assert not fs.is_remote(value)
    assert fs.resolve("file:///tmp/a%20b")[1] == "/tmp/a b"


def test_s3_urls_resolve_to_the_endpoint_of_aws_endpoint_url_and_reuse_one_filesystem(s3_store):
    fsys, path = fs.resolve(s3_store.url("pre", "fix/"))
    assert isinstance(fsys, pafs.S3FileSystem) and path == f"{s3_store.bucket}/pre/fix"
    assert fs.resolve(s3_store.url("other"))[0] is fsys  # cached per (scheme, bucket, endpoint, region)
    assert fs.resolve(f"s3://{s3_store.bucket}")[1] == s3_store.bucket
    assert fs.is_remote(s3_store.url("x")) and fs.is_remote("gs://b/x")
    assert fs.is_remote("abfs://c@a.dfs.core.windows.net/x") and not fs.is_remote("file:///tmp/x")
    fs.write_bytes_atomic(s3_store.url("probe.bin"), b"on the loopback server")  # reached AWS_ENDPOINT_URL
    assert fs.read_bytes(s3_store.url("probe.bin")) == b"on the loopback server"


def test_the_s3_specific_endpoint_variable_wins_over_the_general_one(s3_store, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_store.endpoint)
    fs.write_bytes_atomic(s3_store.url("probe-s3.bin"), b"s3 endpoint")
    assert fs.read_bytes(s3_store.url("probe-s3.bin")) == b"s3 endpoint"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "localhost:9000")
    with pytest.raises(ValueError, match=r"AWS_ENDPOINT_URL_S3='localhost:9000'"):
        fs.resolve(s3_store.url("x"))


@pytest.mark.parametrize("bad", [
    "s3://", "s3:///key", "s3://b/a//c", "s3://b/../c", "s3://b/k?versionId=1", "s3://user:pw@b/k",
    "ftp://host/x", "http://example.com/x.tar", "file://otherhost/x",
])
def test_unsupported_or_malformed_locations_are_refused_by_name(bad):
    with pytest.raises(ValueError) as e:
        fs.resolve(bad)
    assert repr(bad) in str(e.value)


def test_az_urls_need_the_account_variable(monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    fs.clear_cache()
    with pytest.raises(ValueError, match=r"'az://container/x'.*AZURE_STORAGE_ACCOUNT_NAME"):
        fs.resolve("az://container/x")


def test_join_works_for_paths_and_urls(tmp_path):
    assert fs.join(tmp_path, "landing", "d1") == os.path.join(tmp_path, "landing", "d1")
    assert fs.join("s3://b", "landing/d1", "00000.tar") == "s3://b/landing/d1/00000.tar"
    assert fs.join("s3://b/home/", "/landing/") == "s3://b/home/landing"
    assert fs.join("s3://b/home") == "s3://b/home"
    with pytest.raises(ValueError, match=r"'\.\./x'"):
        fs.join("s3://b/home", "../x")


# -- pointer reads through the store -------------------------------------------------------------------------

def test_every_pointer_read_from_s3_gives_the_local_bytes_with_one_ranged_get_of_the_member(s3_store, s3_drop):
    drop, drop_url, pointers = s3_drop
    local_handles: dict = {}
    local = [read_pointer(p["tar_path"], p["offset"], p["size"], local_handles) for p in pointers]
    close_handles(local_handles)

    s3_store.reset()
    handles: dict = {}
    remote = []
    for p in pointers:
        remote.append(read_pointer(_remote(p["tar_path"], drop_url), p["offset"], p["size"], handles))
        assert len(handles) == 1 and isinstance(next(iter(handles.values())), pa.NativeFile)
    close_handles(handles)
    assert handles == {}
    assert remote == local and all(len(b) == p["size"] for b, p in zip(local, pointers))

    gets = s3_store.gets()
    assert len(gets) == len(pointers)  # one GET per image, none for a whole tar
    wanted = sorted((f"/{s3_store.bucket}/landing/{drop.name}/{Path(p['tar_path']).name}",
                     f"bytes={p['offset']}-{p['offset'] + p['size'] - 1}") for p in pointers)
    assert sorted((g.path, g.range) for g in gets) == wanted
    assert sum(g.body_bytes for g in gets) == sum(p["size"] for p in pointers)
    tar_bytes = sum((drop / f"{s:05d}.tar").stat().st_size for s in range(3))
    assert sum(g.body_bytes for g in gets) < tar_bytes / 2  # the tars hold json, txt and tar headers too


def test_a_batch_of_pointer_reads_runs_concurrently_with_the_same_bytes_one_get_per_member(s3_store, s3_drop):
    """read_pointers (what embedding uses per batch): the bytes of read_pointer in the rows' order, one ranged GET
    of exactly each member (reads overlap, bytes do not grow), one open file per tar; the first bad row raises the
    error read_pointer raises, after every read of the batch is done."""
    _, drop_url, pointers = s3_drop
    paths = [_remote(p["tar_path"], drop_url) for p in pointers]
    offsets, sizes = [p["offset"] for p in pointers], [p["size"] for p in pointers]
    want = [read_pointer(p["tar_path"], p["offset"], p["size"]) for p in pointers]
    s3_store.reset()
    handles: dict = {}
    got = read_pointers(paths, offsets, sizes, handles)
    assert got == want and list(handles) == [paths[-1]]  # the last tar stays open for the next batch
    close_handles(handles)
    gets = s3_store.gets()
    assert len(gets) == len(pointers) and sum(g.body_bytes for g in gets) == sum(sizes)
    heads = [r for r in s3_store.requests if r.method == "HEAD"]
    assert len(heads) == len(set(paths))  # one open per tar, not per image
    assert read_pointers(paths[:3], offsets[:3], sizes[:3]) == want[:3]  # without a cache
    bad = sizes[:4]
    bad[2] = 10 ** 9
    with pytest.raises(OSError, match=r"short read: .* of 1000000000 bytes"):
        read_pointers(paths[:4], offsets[:4], bad)
    with pytest.raises(ValueError, match="3 paths, 2 offsets"):
        read_pointers(paths[:3], offsets[:2], sizes[:3])


def test_a_pointer_read_without_a_cache_fetches_only_its_member(s3_store, s3_drop):
    _, drop_url, pointers = s3_drop
    p = pointers[7]
    s3_store.reset()
    data = read_pointer(_remote(p["tar_path"], drop_url), p["offset"], p["size"])
    assert data == read_pointer(p["tar_path"], p["offset"], p["size"])
    [get] = s3_store.gets()
    assert get.range == f"bytes={p['offset']}-{p['offset'] + p['size'] - 1}" and get.body_bytes == p["size"]
    assert fs.read_range(_remote(p["tar_path"], drop_url), p["offset"], p["size"]) == data


def test_short_reads_and_missing_objects_raise_oserror_naming_the_url(s3_store, s3_drop):
    drop, drop_url, _ = s3_drop
    url = fs.join(drop_url, "00000.tar")
    n = (drop / "00000.tar").stat().st_size
    with pytest.raises(OSError, match=rf"short read: 2 of 10 bytes at offset {n - 2} of {url}$"):
        read_pointer(url, n - 2, 10, {})
    with pytest.raises(OSError, match=rf"short read: 0 of 10 bytes at offset {n + 5} of {url}$"):
        read_pointer(url, n + 5, 10)
    with pytest.raises(OSError, match=rf"short read: 2 of 10 bytes at offset {n - 2} of {url}$"):
        fs.read_range(url, n - 2, 10)
    missing = fs.join(drop_url, "00009.tar")
    for read in (lambda: read_pointer(missing, 0, 10), lambda: read_pointer(missing, 0, 10, {}),
                 lambda: fs.read_range(missing, 0, 10), lambda: fs.read_bytes(missing)):
        with pytest.raises(FileNotFoundError, match=missing):
            read()
    with pytest.raises(ValueError, match=r"offset must be a non-negative integer, got -1"):
        fs.read_range(url, -1, 10)


# -- writes, listing, existence ------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["local", "s3"])
def test_write_read_exists_and_list_on_both_stores(where, s3_store, tmp_path):
    base = str(tmp_path / "home") if where == "local" else s3_store.url("home-" + where)
    assert not fs.exists(fs.join(base, "a", "x.bin"))
    fs.write_bytes_atomic(fs.join(base, "a", "x.bin"), b"first")
    fs.write_bytes_atomic(fs.join(base, "a", "x.bin"), b"second")  # replaced whole
    fs.write_bytes_atomic(fs.join(base, "a", "b.bin"), b"")
    fs.write_bytes_atomic(fs.join(base, "c.bin"), b"c")
    assert fs.read_bytes(fs.join(base, "a", "x.bin")) == b"second"
    assert fs.read_bytes(fs.join(base, "a", "b.bin")) == b""
    assert fs.exists(fs.join(base, "a", "x.bin")) and fs.exists(fs.join(base, "a"))
    assert fs.list_dir(fs.join(base, "a")) == ["b.bin", "x.bin"]  # no temporary names left behind
    assert fs.list_dir(base) == ["a", "c.bin"]
    with pytest.raises(FileNotFoundError, match=fs.join(base, "nope")):
        fs.list_dir(fs.join(base, "nope"))


# -- DuckDB over the store -----------------------------------------------------------------------------------

def test_duckdb_reads_parquet_on_the_store_through_the_registered_filesystem(s3_store):
    s3, path = fs.resolve(s3_store.url("warehouse", "t"))
    pq.write_table(pa.table({"v": [1, 2, 3]}), f"{path}/drop=d1/part-0.parquet", filesystem=s3)
    pq.write_table(pa.table({"v": [10, 20]}), f"{path}/drop=d2/part-0.parquet", filesystem=s3)
    assert fs.duckdb_filesystem(s3_store.url("warehouse")).protocol == "s3"
    assert fs.duckdb_filesystem("/tmp/x") is None  # DuckDB reads local paths itself
    con = duckdb.connect()
    assert fs.register_duckdb(con, s3_store.url("warehouse")) is True
    assert fs.register_duckdb(con, s3_store.url("warehouse")) is False  # one per protocol and connection
    one = s3_store.url("warehouse", "t", "drop=d1", "part-0.parquet")
    assert con.sql(f"SELECT count(*), sum(v) FROM read_parquet('{one}')").fetchall() == [(3, 6)]
    table = s3_store.url("warehouse", "t")
    glob = con.sql(f"SELECT \"drop\", count(*), sum(v) FROM read_parquet('{table}/*/*.parquet', "
                   "hive_partitioning = true) GROUP BY ALL ORDER BY 1")  # the partition column comes from the path
    assert glob.fetchall() == [("d1", 3, 6), ("d2", 2, 30)]


def test_local_ranged_reads_refuse_short_reads_and_missing_files_by_name(tmp_path):
    f = tmp_path / "x.bin"
    fs.write_bytes_atomic(f, b"0123456789")
    assert fs.read_range(f, 2, 3) == b"234" and fs.read_range(f"file://{f}", 9, 1) == b"9"
    with pytest.raises(OSError, match=rf"short read: 2 of 5 bytes at offset 8 of {f}$"):
        fs.read_range(f, 8, 5)
    with pytest.raises(OSError, match=rf"short read: 0 of 5 bytes at offset 20 of {f}$"):
        fs.read_range(f, 20, 5)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.bin")):
        fs.read_range(tmp_path / "nope.bin", 0, 1)
    assert sorted(os.listdir(tmp_path)) == ["x.bin"]  # the atomic write left no temporary file
