"""The commit layer on an object store (no rename) against a real S3 API on loopback: files appear whole or not
at all, a staged folder is invisible until its pointer object names it, a multi-folder commit is all old or all
new to a reader at every step (including a crash after any pointer), and leftovers of killed writers are
collected. Also StorePath, the pathlib-like location type the store home uses."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pytest
from s3_server import s3_store  # noqa: F401 - the module-scoped loopback S3 fixture

from clip_assets.io import commit, fs
from clip_assets.io.fs import StorePath

ROOT = "commit-store"  # this module's own prefix (moto's store is shared per process)


@pytest.fixture
def base(s3_store, request):  # noqa: F811
    return StorePath(s3_store.url(ROOT, request.node.name.replace("[", "-").replace("]", "")))


def _table(n: int, tag: int) -> pa.Table:
    return pa.table({"uid": [f"u{tag}-{i}" for i in range(n)], "x": np.full(n, tag, dtype=np.int64)})


# -- StorePath ----------------------------------------------------------------------------------------------------

def test_storepath_has_pathlib_semantics_on_the_store(base):
    p = base / "a" / "drop=x" / "part-00000.parquet"
    assert p.name == "part-00000.parquet" and p.stem == "part-00000" and p.suffix == ".parquet"
    assert p.parent.name == "drop=x" and p.parent.parent.parent == base
    assert str(p) == p.as_posix() and str(p).startswith("s3://") and p.relative_to(base).as_posix() == \
        "a/drop=x/part-00000.parquet"
    assert not p.exists() and not p.parent.is_dir()
    p.write_bytes(b"hello")
    (base / "a" / "drop=y" / "part-00000.parquet").write_bytes(b"hi")
    (base / "a" / ".hidden").write_bytes(b"h")
    assert p.is_file() and p.parent.is_dir() and p.read_bytes() == b"hello" and p.stat().st_size == 5
    assert abs(p.stat().st_mtime - time.time()) < 120
    assert [q.name for q in (base / "a").iterdir()] == [".hidden", "drop=x", "drop=y"]
    assert [q.parent.name for q in (base / "a").glob("drop=*/part-*.parquet")] == ["drop=x", "drop=y"]
    assert sorted(q.name for q in base.rglob("part-*")) == ["part-00000.parquet"] * 2
    with pytest.raises(ValueError, match=r"\*\*"):
        list(base.glob("**/x"))
    p.unlink()
    assert not p.exists()
    p.unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="part-00000"):
        p.unlink()
    with pytest.raises(FileNotFoundError, match="nope"):
        (base / "nope").read_bytes()


def test_storepath_refuses_what_is_not_a_store_url_and_is_not_a_local_path_for_libraries(base):
    for bad in ("relative/x", "/abs/x", "s3://", "s3://b/../x", "ftp://h/x"):
        with pytest.raises(ValueError):
            StorePath(bad)
    with pytest.raises(TypeError):
        open(base / "x", "rb")  # noqa: SIM115 - no __fspath__: a library never writes a local file named like a URL
    assert fs.location(str(base)) == base and fs.location("/tmp/x").as_posix() == "/tmp/x"


# -- files --------------------------------------------------------------------------------------------------------

def test_files_are_published_whole_and_leave_no_scratch(base):
    t = _table(50, 1)
    commit.write_table(base / "t.parquet", t)
    commit.write_json(base / "m.json", {"b": 1, "a": [1, 2]})
    commit.write_npy(base / "a.npy", np.arange(5))
    assert fs.read_table(base / "t.parquet").equals(t)
    assert json.loads((base / "m.json").read_text()) == {"a": [1, 2], "b": 1}
    assert [p.name for p in base.iterdir()] == ["a.npy", "m.json", "t.parquet"]
    with commit.publishing(base / "p.bin") as tmp:
        tmp.write_bytes(b"x" * 10)
    assert (base / "p.bin").read_bytes() == b"x" * 10
    with pytest.raises(RuntimeError), commit.publishing(base / "q.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed while writing")
    assert not (base / "q.bin").exists()
    assert commit.remove(base / "p.bin") and not commit.remove(base / "p.bin")


def test_an_old_scratch_object_of_a_failed_upload_is_removed_by_the_next_writer(base):
    stale = base / ".t.parquet.deadbeef0000.tmp"
    stale.write_bytes(b"half an upload")
    assert commit.clean_scratch_of(base / "t.parquet") == 0  # young: may belong to a writer in flight
    assert commit.clean_scratch_of(base / "t.parquet", older_than_s=0) == 1
    assert not stale.exists()


# -- staged folders -----------------------------------------------------------------------------------------------

def test_a_staged_folder_is_invisible_until_its_pointer_is_written_and_then_replaced_whole(base):
    final = base / "asset" / "drop=a"
    with commit.stage_dir(final) as st:
        st.write_table("part-00000.parquet", _table(3, 1))
        w = st.parquet_writer("part-00001.parquet", _table(1, 1).schema)
        w.write_table(_table(2, 1))
        w.close()
        assert commit.resolve(final) == final and not list(final.glob("*.parquet"))  # nothing visible yet
    v1 = commit.resolve(final)
    assert v1.name.startswith(".v-drop=a-") and commit.is_pointer(final)
    assert [p.name for p in v1.glob("*.parquet")] == ["part-00000.parquet", "part-00001.parquet"]
    with commit.stage_dir(final) as st:
        st.write_table("part-00000.parquet", _table(4, 2))
    v2 = commit.resolve(final)
    assert v2 != v1 and [p.name for p in v2.iterdir()] == ["part-00000.parquet"]
    assert v1.is_dir()  # kept for readers that resolved it (grace period)
    assert fs.read_table(v2 / "part-00000.parquet")["x"].to_pylist() == [2] * 4
    assert commit.collect_versions(final.parent) == 0
    assert commit.collect_versions(final.parent, grace_s=0) == 1 and not v1.is_dir() and v2.is_dir()


def test_a_failed_staged_folder_leaves_the_previous_version_and_nothing_a_reader_sees(base):
    final = base / "drop=a"
    with commit.stage_dir(final) as st:
        st.write_table("part-00000.parquet", _table(3, 1))
    before = commit.resolve(final)
    with pytest.raises(RuntimeError), commit.stage_dir(final) as st:
        st.write_table("part-00000.parquet", _table(9, 9))
        raise RuntimeError("killed mid-build")
    assert commit.resolve(final) == before
    assert [p.name for p in base.iterdir()] == [before.name, "drop=a"]  # nothing was uploaded


def test_an_upload_that_dies_half_way_is_never_named_and_is_collected(base, monkeypatch):
    final = base / "drop=a"
    with commit.stage_dir(final) as st:
        st.write_table("part-00000.parquet", _table(3, 1))
    before = commit.resolve(final)
    real = commit.pafs.copy_files

    def dies(src, dst, **kw):  # one file arrives, then the process is gone
        real(src + "/part-00000.parquet", dst + "/part-00000.parquet", **kw)
        raise OSError("connection reset")

    monkeypatch.setattr(commit.pafs, "copy_files", dies)
    with pytest.raises(OSError, match="connection reset"), commit.stage_dir(final) as st:
        st.write_table("part-00000.parquet", _table(9, 9))
        st.write_table("part-00001.parquet", _table(9, 9))
    monkeypatch.undo()
    assert commit.resolve(final) == before
    orphans = [p for p in base.glob(".v-*") if p != before]
    assert len(orphans) == 1 and commit.clean_stale(base, version_grace_s=0) == 1 and not orphans[0].exists()
    assert commit.resolve(final) == before and before.is_dir()


def test_a_two_folder_commit_is_all_old_or_all_new_at_every_step_of_a_crash(base, monkeypatch):
    a, b = base / "raw" / "drop=x", base / "rej" / "drop=x"
    with commit.stage_dirs([a, b], versioned=True) as (sa, sb):
        sa.write_table("part-00000.parquet", _table(2, 1))
        sb.write_table("part-00000.parquet", _table(1, 1))
    old = commit.snapshot([a, b])
    writes = []
    real_point = commit._point_store

    def crash_after_first_pointer(final, version):
        real_point(final, version)
        writes.append(final)
        raise KeyboardInterrupt("killed between the pointers")

    monkeypatch.setattr(commit, "_point_store", crash_after_first_pointer)
    with pytest.raises(KeyboardInterrupt), commit.stage_dirs([a, b], versioned=True) as (sa, sb):
        sa.write_table("part-00000.parquet", _table(5, 2))
        sb.write_table("part-00000.parquet", _table(3, 2))
    monkeypatch.undo()
    assert writes == [a] and commit.resolve(a) != old[0] and commit.resolve(b) == old[1]  # half swapped...
    snap = commit.snapshot([a, b])  # ...yet a reader takes the new commit's version of both
    assert [fs.read_table(v / "part-00000.parquet")["x"].to_pylist() for v in snap] == [[2] * 5, [2] * 3]
    assert commit.recover_dir(b) is False and commit.resolve(b) == snap[1]  # the journal is rolled forward
    assert not list(b.parent.glob(".journal-*")) and not list(a.parent.glob(".journal-*"))
    assert commit.snapshot([a, b]) == snap


def test_clean_stale_on_the_store_rolls_journals_forward_and_spares_named_versions(base):
    a = base / "t" / "drop=x"
    with commit.stage_dir(a) as st:
        st.write_table("part-00000.parquet", _table(2, 1))
    v = commit.resolve(a)
    v2 = commit.version_dir(a, commit.new_commit_id())
    (v2 / "part-00000.parquet").write_bytes(b"PAR1")
    journal = a.parent / ".journal-0123456789ab.json"
    journal.write_text(json.dumps({"entries": [{"final": a.url, "version": v2.url}], "journals": [journal.url]}))
    assert commit.clean_stale(base, version_grace_s=0) == 1  # the journal moved the pointer; the old version went
    assert commit.resolve(a) == v2 and not v.exists() and not list(a.parent.glob(".journal-*"))


def test_a_large_object_goes_up_under_scratch_and_appears_whole_or_not_at_all(base, monkeypatch):
    big = bytes(range(256)) * (fs.SINGLE_PUT_BYTES // 256 + 4096)
    (base / "big.bin").write_bytes(big)
    assert (base / "big.bin").read_bytes() == big and [p.name for p in base.iterdir()] == ["big.bin"]
    real = fs.resolve

    class CopyFails:  # the store, but the server-side copy onto the name fails (after the parts went up)
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def move(self, src, dst):
            raise OSError("lost")

    monkeypatch.setattr(fs, "resolve", lambda u: (CopyFails(real(u)[0]), real(u)[1]))
    with pytest.raises(OSError, match="cannot write .*big2.bin.*lost"):
        (base / "big2.bin").write_bytes(big)
    assert [p.name for p in base.iterdir()] == ["big.bin"]  # nothing under the name, and the scratch was removed
