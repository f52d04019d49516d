"""The commit layer under crashes: a swap never makes a folder vanish, a multi-folder commit is all-or-nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from clip_assets.io import commit
from clip_assets.io.commit import clean_stale, recover_dir, recover_journals, stage_dir, stage_dirs


class Crash(Exception):
    """Stands for a kill: raised from inside the commit, no cleanup of ours runs after the commit point."""


def _fill(final: Path, text: str) -> None:
    with stage_dir(final) as st:
        st.write_bytes("part-00000.parquet", text.encode())


def _content(final: Path) -> str | None:
    p = final / "part-00000.parquet"
    return p.read_text() if p.is_file() else None


def _crash_on_replace(monkeypatch, at: int) -> None:
    """Make the ``at``-th os.replace (0-based) inside the commit layer raise Crash."""
    real, calls = os.replace, {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] - 1 == at:
            raise Crash(f"killed at rename {at}: {src} -> {dst}")
        real(src, dst)

    monkeypatch.setattr(commit.os, "replace", replace)


def test_a_crash_between_the_two_renames_of_a_swap_does_not_lose_the_folder(tmp_path, monkeypatch):
    final = tmp_path / "asset" / "drop=a"
    _fill(final, "old")
    _crash_on_replace(monkeypatch, 1)  # rename 0: old -> trash; rename 1: staging -> final
    with pytest.raises(Crash):
        _fill(final, "new")
    monkeypatch.undo()
    assert not final.exists()  # the torn state the crash leaves ...
    assert recover_dir(final) and _content(final) == "old"  # ... is healed by recovery: the old folder is back
    _fill(final, "new")  # and the next writer proceeds
    assert _content(final) == "new"
    clean_stale(final.parent)  # the killed run's staging folder is scratch: cleaned
    assert [p.name for p in final.parent.iterdir()] == ["drop=a"]


def test_stage_dir_itself_recovers_before_writing(tmp_path, monkeypatch):
    final = tmp_path / "asset" / "drop=a"
    _fill(final, "old")
    _crash_on_replace(monkeypatch, 1)
    with pytest.raises(Crash):
        _fill(final, "new")
    monkeypatch.undo()
    st = stage_dir(final)  # a new writer on the folder restores it first
    assert _content(final) == "old"
    st.abort()


RENAMES = 6  # two journal copies published, then (old -> trash, staging -> final) for each of two folders


@pytest.mark.parametrize("at", range(RENAMES))
def test_a_two_folder_commit_is_all_old_or_all_new_after_a_crash_at_any_rename(tmp_path, monkeypatch, at):
    a, b = tmp_path / "raw_pairs" / "drop=d", tmp_path / "rejected_pairs" / "drop=d"
    with stage_dirs([a, b]) as (sa, sb):
        sa.write_bytes("part-00000.parquet", b"old")
        sb.write_bytes("part-00000.parquet", b"old")
    _crash_on_replace(monkeypatch, at)
    with pytest.raises(Crash):
        with stage_dirs([a, b]) as (sa, sb):
            sa.write_bytes("part-00000.parquet", b"new")
            sb.write_bytes("part-00000.parquet", b"new")
    monkeypatch.undo()
    for folder in (a.parent, b.parent):  # what any later writer or cleaner runs first
        recover_journals(folder)
    recover_dir(a), recover_dir(b)
    state = (_content(a), _content(b))
    # before the first journal copy is published the commit did not happen; from then on it is rolled forward
    assert state == (("old", "old") if at == 0 else ("new", "new")), (at, state)
    clean_stale(tmp_path)
    assert sorted(p.name for p in a.parent.iterdir()) == ["drop=d"]
    assert sorted(p.name for p in b.parent.iterdir()) == ["drop=d"]


def test_a_crash_while_removing_the_journals_or_the_trash_keeps_the_new_state(tmp_path, monkeypatch):
    a, b = tmp_path / "x" / "p", tmp_path / "y" / "p"
    with stage_dirs([a, b]) as (sa, sb):
        sa.write_bytes("part-00000.parquet", b"old")
        sb.write_bytes("part-00000.parquet", b"old")
    real_unlink, calls = Path.unlink, {"n": 0}

    def unlink(self, missing_ok=False):
        if self.name.startswith(commit.JOURNAL_PREFIX):
            calls["n"] += 1
            if calls["n"] == 2:  # the first journal copy is gone, the second still there
                raise Crash("killed while removing journals")
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(Crash):
        with stage_dirs([a, b]) as (sa, sb):
            sa.write_bytes("part-00000.parquet", b"new")
            sb.write_bytes("part-00000.parquet", b"new")
    monkeypatch.undo()
    assert (_content(a), _content(b)) == ("new", "new")
    assert [p.name for p in b.parent.iterdir() if p.name.startswith(commit.JOURNAL_PREFIX)]  # one copy left
    clean_stale(b.parent)  # replaying it is harmless and removes it and the trash
    assert sorted(p.name for p in a.parent.iterdir()) == ["p"] and sorted(p.name for p in b.parent.iterdir()) == ["p"]
    assert (_content(a), _content(b)) == ("new", "new")


def test_an_exception_before_the_commit_leaves_both_old_and_no_scratch(tmp_path):
    a, b = tmp_path / "x" / "p", tmp_path / "y" / "p"
    with stage_dirs([a, b]) as (sa, sb):
        sa.write_bytes("f", b"old")
        sb.write_bytes("f", b"old")
    with pytest.raises(KeyboardInterrupt):
        with stage_dirs([a, b]) as (sa, sb):
            sa.write_bytes("f", b"new")
            raise KeyboardInterrupt
    assert (a / "f").read_bytes() == (b / "f").read_bytes() == b"old"
    assert [p.name for p in a.parent.iterdir()] == ["p"] and [p.name for p in b.parent.iterdir()] == ["p"]


def test_clean_stale_spares_young_scratch_and_removes_old(tmp_path):
    root = tmp_path / "asset"
    root.mkdir()
    old_stage, young_stage = root / ".staging-drop=a-1", root / ".staging-drop=b-2"
    old_tmp = root / ".part.parquet.abc.tmp"
    for d in (old_stage, young_stage):
        d.mkdir()
    old_tmp.write_bytes(b"x")
    past = time.time() - 7200
    for p in (old_stage, old_tmp):
        os.utime(p, (past, past))
    assert clean_stale(root, older_than_s=3600) == 2
    assert sorted(p.name for p in root.iterdir()) == [young_stage.name]


def test_readers_restore_a_partition_a_crashed_swap_left_in_trash(tmp_path, monkeypatch):
    import pyarrow as pa

    from clip_assets.io.tables import drops_with, read_partition
    from clip_assets.io.warehouse import partition_dir

    home = tmp_path / "home"
    final = partition_dir("raw_pairs", "d", home)
    with stage_dir(final) as st:
        st.write_table("part-00000.parquet", pa.table({"uid": ["a"]}))
    for read_first in (drops_with, read_partition):
        _crash_on_replace(monkeypatch, 1)
        with pytest.raises(Crash):
            with stage_dir(final) as st:
                st.write_table("part-00000.parquet", pa.table({"uid": ["b"]}))
        monkeypatch.undo()
        assert not final.exists()
        if read_first is drops_with:
            assert drops_with("raw_pairs", home) == ["d"]  # not skipped
        assert read_partition("raw_pairs", "d", home)["uid"].to_pylist() == ["a"]  # read whole: the old state


VERSIONED_RENAMES = 6  # two journal copies, then staging -> version for both folders, then both pointer swaps


def _versioned(a: Path, b: Path, text: str) -> None:
    with stage_dirs([a, b], versioned=True) as (sa, sb):
        sa.write_bytes("part-00000.parquet", text.encode())
        sb.write_bytes("part-00000.parquet", text.encode())


def _read_together(a: Path, b: Path) -> tuple:
    return tuple((d / "part-00000.parquet").read_text() for d in commit.snapshot([a, b]))


@pytest.mark.parametrize("at", range(VERSIONED_RENAMES))
def test_a_versioned_two_folder_commit_reads_all_old_or_all_new_even_before_recovery(tmp_path, monkeypatch, at):
    a, b = tmp_path / "raw_pairs" / "drop=d", tmp_path / "rejected_pairs" / "drop=d"
    _versioned(a, b, "old")
    held = [d / "part-00000.parquet" for d in commit.snapshot([a, b])]  # what a reader listed before
    _crash_on_replace(monkeypatch, at)
    with pytest.raises(Crash):
        _versioned(a, b, "new")
    monkeypatch.undo()
    # a reader needs no recovery: one pointer swapped and the other not yet still reads one commit
    assert _read_together(a, b) == (("new", "new") if at == VERSIONED_RENAMES - 1 else ("old", "old")), at
    assert [p.read_text() for p in held] == ["old", "old"]  # files a reader listed are never replaced
    for folder in (a.parent, b.parent):
        recover_journals(folder)
    assert _read_together(a, b) == (("old", "old") if at == 0 else ("new", "new")), at
    assert (a / "part-00000.parquet").read_text() == ("old" if at == 0 else "new")  # the plain path follows
    clean_stale(tmp_path, version_grace_s=0)  # scratch and versions no pointer names are removed
    for d in (a, b):
        assert sorted(p.name for p in d.parent.iterdir()) == sorted([d.name, commit.resolve(d).name])


def test_versions_are_kept_through_the_grace_period_and_collected_after(tmp_path):
    final = tmp_path / "asset" / "drop=a"
    for text in ("v1", "v2", "v3"):
        with stage_dir(final, versioned=True) as st:
            st.write_bytes("part-00000.parquet", text.encode())
    versions = sorted(p for p in final.parent.iterdir() if p.name.startswith(commit.VERSION_PREFIX))
    assert [(v / "part-00000.parquet").read_text() for v in versions] == ["v1", "v2", "v3"]
    assert commit.resolve(final) == versions[-1] and final.is_symlink()
    assert clean_stale(final.parent) == 0  # within the grace: a held reader may still read v1 and v2
    past = time.time() - commit.VERSION_GRACE_S - 1
    os.utime(final, (past, past), follow_symlinks=False)  # the pointer moved longer ago than the grace
    assert commit.collect_versions(final.parent) == 2
    assert sorted(p.name for p in final.parent.iterdir()) == sorted([final.name, versions[-1].name])
    assert (final / "part-00000.parquet").read_text() == "v3"


def test_a_versioned_commit_over_a_plain_folder_keeps_it_as_a_version(tmp_path):
    final = tmp_path / "asset" / "drop=a"
    _fill(final, "plain")
    with stage_dir(final, versioned=True) as st:
        st.write_bytes("part-00000.parquet", b"new")
    assert final.is_symlink() and _content(final) == "new"
    old = [p for p in final.parent.iterdir() if p.name.startswith(commit.VERSION_PREFIX) and p != commit.resolve(final)]
    assert [_content(p) for p in old] == ["plain"]


def _plant(folder: Path, name: str, age_s: float) -> list[Path]:
    """Scratch a killed writer of ``name`` leaves: a staging folder, a trash folder, a scratch file."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f".staging-{name}-{age_s:.0f}", folder / f".trash-{name}-{age_s:.0f}",
             folder / f".{name}.{age_s:.0f}.tmp"]
    paths[0].mkdir(), paths[1].mkdir(), paths[2].write_bytes(b"half")
    when = time.time() - age_s
    for p in paths:
        os.utime(p, (when, when))
    return paths


WRITERS = {
    "write_table": lambda p: commit.write_table(p, __import__("pyarrow").table({"x": [1]})),
    "write_bytes": lambda p: commit.write_bytes(p, b"x"),
    "publishing": lambda p: commit.publishing(p).__enter__(),
    "stage_dir": lambda p: stage_dir(p).commit(),
    "stage_dir_versioned": lambda p: stage_dir(p, versioned=True).commit(),
    "stage_dirs": lambda p: stage_dirs([p]).commit(),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_writer_removes_old_scratch_of_its_target_and_spares_young_and_others(tmp_path, writer):
    folder, name = tmp_path / "asset", "drop=a"
    target = folder / name
    if writer.startswith("stage"):
        _fill(target, "old")  # an existing target, so old trash is not the folder's only copy
    else:
        commit.write_bytes(target, b"old")
    old = _plant(folder, name, commit.SCRATCH_GRACE_S + 60)
    young = _plant(folder, name, 10)
    other = _plant(folder, "drop=b", commit.SCRATCH_GRACE_S + 60)
    WRITERS[writer](target)
    assert [p.exists() for p in old] == [False, False, False]
    assert all(p.exists() for p in young + other)


def test_rolling_an_old_journal_forward_never_moves_a_pointer_back_to_an_older_commit(tmp_path):
    """A recovery that read a journal, then stalled while that commit and a later one finished, must leave the
    later commit's pointer alone when it finally rolls the old journal forward."""
    a, b = tmp_path / "raw" / "drop=x", tmp_path / "rej" / "drop=x"
    with commit.stage_dirs([a, b], versioned=True) as (sa, sb):
        (sa.path("p")).write_bytes(b"old")
        (sb.path("p")).write_bytes(b"old")
    older = commit.snapshot([a, b])
    with commit.stage_dirs([a, b], versioned=True) as (sa, sb):
        (sa.path("p")).write_bytes(b"new")
        (sb.path("p")).write_bytes(b"new")
    newer = commit.snapshot([a, b])
    journal = a.parent / ".journal-0123456789ab.json"  # what the stalled recovery still holds: the older commit
    commit.write_json(journal, {"entries": [{"final": "drop=x", "staging": ".staging-gone", "version": older[0].name}],
                                "journals": [journal.name]})
    assert commit.recover_journals(a.parent) == 1 and not journal.exists()
    assert commit.snapshot([a, b]) == newer and (commit.resolve(a) / "p").read_bytes() == b"new"
