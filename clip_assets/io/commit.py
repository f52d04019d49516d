"""The commit layer: every file and folder the project writes is published through here, atomically.

One mechanism for everything (warehouse partitions, model checkpoints and cards, exports, synthetic drops,
IWL artefacts): write into a private scratch name in the destination's own folder, then publish with one
rename. A reader therefore sees the old object or the new one, never a half-written one, and a run killed at any
point leaves at most scratch leftovers (hidden ``.staging-*`` / ``.trash-*`` folders and ``.*.tmp`` files,
which no glob of the catalog matches): the next write of the same name removes them once they are older than
``SCRATCH_GRACE_S`` (:func:`clean_scratch_of`, run by every writer), and :func:`clean_stale` sweeps a whole tree.

Interface (small on purpose, so that an object-store backend can implement the same calls)::

    write_bytes(path, data) / write_text(path, text) / write_json(path, obj) / write_table(path, table)
    with stage_dir(final_dir) as st:          # a whole folder, swapped in on success
        st.write_table("part-00000.parquet", table)
        w = st.parquet_writer("part-00001.parquet", schema)  # streaming; close before the block ends
        st.write_bytes("00000.tar", data) / st.path("x.bin") -> a staging path to write yourself
    # on exception: staging removed, the previous folder untouched
    with stage_dirs([a, b], versioned=True) as (sa, sb): ...   # both folders as versions of one commit
    resolve(final_dir) / snapshot([a, b])  # what a reader reads (the version a pointer names)

Replacing a folder takes two renames (old -> trash, staging -> final). A crash between them leaves the final
name absent and the previous contents under ``.trash-<name>-*``; :func:`recover_dir` (called by every
:func:`stage_dir` and by :func:`clean_stale`) puts the newest trash back, so a partition never vanishes.

Several folders that must change together (a drop's raw_pairs and rejected_pairs) use :func:`stage_dirs`: each
is built in staging, then a journal naming every (final, staging, trash) is published in each final folder's
parent (``.journal-*.json``; the first copy published is the commit point), then the renames run, then the
journals and trash are removed. :func:`recover_journals` (run by :func:`recover_dir`, hence by every
:func:`stage_dir` and :func:`clean_stale` there) rolls any journal it finds forward, so after a crash at any step
and a recovery the folders are all old (no journal was published) or all new.

Versioned folders (``versioned=True``; the drop's raw_pairs + rejected_pairs use them) are for folders read while
they are replaced. A commit never touches the files a reader may be reading: the staging folder becomes an
immutable version ``.v-<name>-<commit id>`` beside the final name, and the final name is a *pointer* to it (a
symbolic link, swapped with one atomic rename; on an object store, one pointer object written with one PUT).
Commit ids sort by time, and the folders of one multi-table commit share theirs. Readers resolve the pointer once
(:func:`resolve`) and read the version's files, so they see the old version or the new one, never nothing, and a
file they listed is never deleted under them: a version no pointer names is removed only after a grace period
(:func:`collect_versions`, run by :func:`clean_stale`; ``VERSION_GRACE_S``). :func:`snapshot` resolves several
folders together: when one pointer of a multi-table commit is already swapped and another not yet, the reader
takes the newer commit's version of each (it exists before any pointer moves), so the tables agree.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_COMPRESSION = "zstd"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
TMP_SUFFIX = ".tmp"
JOURNAL_PREFIX = ".journal-"
JOURNAL_SUFFIX = ".json"
VERSION_PREFIX = ".v-"
SCRATCH_GRACE_S = 6 * 3600.0  # scratch younger than this may belong to a run in flight: left alone
VERSION_GRACE_S = 3600.0  # a version no pointer names is kept this long after its pointer moved (held readers)


def _scratch(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")


def clean_scratch_of(path: str | os.PathLike, older_than_s: float = SCRATCH_GRACE_S) -> int:
    """Remove the scratch that killed writers of ``path`` left beside it (``.staging-<name>-*``,
    ``.trash-<name>-*`` once ``path`` exists, ``.<name>.*.tmp``), sparing what is younger than ``older_than_s``.
    Every writer calls this for its own target, so no leftover outlives the next write of the same name."""
    path = Path(path)
    if not path.parent.is_dir():
        return 0
    now, n, name = time.time(), 0, path.name
    for p in list(path.parent.iterdir()):
        folder = p.name.startswith(f"{STAGING_PREFIX}{name}-") or (
            p.name.startswith(f"{TRASH_PREFIX}{name}-") and path.exists())
        scratch_file = p.name.startswith(f".{name}.") and p.name.endswith(TMP_SUFFIX)
        if not (folder or scratch_file):
            continue
        try:
            if now - p.lstat().st_mtime < older_than_s:
                continue
        except FileNotFoundError:
            continue
        if folder and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n


def _publish_file(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Run ``fill(scratch_path)`` then rename the scratch file onto ``path`` (atomic on one filesystem)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_scratch_of(path)
    tmp = _scratch(path)
    try:
        fill(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Publish ``data`` at ``path`` atomically."""
    return _publish_file(path, lambda p: p.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Publish ``obj`` as JSON (sorted keys, so the same object gives the same bytes)."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n")


def write_table(path: str | os.PathLike, table: pa.Table) -> Path:
    """Publish one Parquet file (zstd)."""
    return _publish_file(path, lambda p: pq.write_table(table, p, compression=PARQUET_COMPRESSION))


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return write_bytes(path, buf.getvalue())


class _CommitOnExit:
    """``with`` support shared by the staged writers: commit when the block succeeds, abort when it raises."""

    _done: bool

    def commit(self):  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def abort(self) -> None:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class StagedDir(_CommitOnExit):
    """A folder built under a hidden staging name and swapped in by :meth:`commit`."""

    def __init__(self, final_dir: str | os.PathLike, versioned: bool = False, commit_id: str | None = None):
        self.final_dir = Path(final_dir)
        self.versioned = versioned
        self.commit_id = commit_id or new_commit_id()
        self.final_dir.parent.mkdir(parents=True, exist_ok=True)
        recover_dir(self.final_dir)
        clean_scratch_of(self.final_dir)
        self.staging = self.final_dir.parent / f"{STAGING_PREFIX}{self.final_dir.name}-{uuid.uuid4().hex[:12]}"
        self.staging.mkdir()
        self.names: list[str] = []
        self._done = False

    def path(self, name: str) -> Path:
        """Staging path for ``name`` (sub-folders allowed); the caller writes the file itself."""
        p = self.staging / name
        p.parent.mkdir(parents=True, exist_ok=True)
        self.names.append(name)
        return p

    def write_bytes(self, name: str, data: bytes) -> Path:
        p = self.path(name)
        p.write_bytes(data)
        return p

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_bytes(name, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())

    def write_table(self, name: str, table: pa.Table) -> Path:
        p = self.path(name)
        pq.write_table(table, p, compression=PARQUET_COMPRESSION)
        return p

    def parquet_writer(self, name: str, schema: pa.Schema) -> pq.ParquetWriter:
        """A streaming Parquet writer in the staging folder; close it before the commit."""
        return pq.ParquetWriter(self.path(name), schema, compression=PARQUET_COMPRESSION)

    def commit(self) -> Path:
        """Swap the staging folder in place of the final one (the old one, if any, is removed after)."""
        if self._done:
            raise RuntimeError(f"{self.final_dir}: staged folder already committed or aborted")
        if self.versioned:
            self._done = True
            return _publish_version(self.final_dir, self.staging, version_dir(self.final_dir, self.commit_id))
        trash = None
        if self.final_dir.exists():
            trash = _trash_for(self.final_dir)
            os.replace(self.final_dir, trash)
        os.replace(self.staging, self.final_dir)
        self._done = True
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return self.final_dir

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        self._done = True


def stage_dir(final_dir: str | os.PathLike, versioned: bool = False) -> StagedDir:
    """Context manager: build a folder in staging, publish it on success (see module doc; ``versioned``: as an
    immutable version behind a pointer)."""
    return StagedDir(final_dir, versioned=versioned)


def new_commit_id() -> str:
    """A commit id that sorts by time (nanoseconds) and is unique (random suffix)."""
    return f"{time.time_ns():020d}{uuid.uuid4().hex[:8]}"


def version_dir(final_dir: str | os.PathLike, commit_id: str) -> Path:
    """The immutable version folder of ``final_dir`` for ``commit_id``."""
    final_dir = Path(final_dir)
    return final_dir.parent / f"{VERSION_PREFIX}{final_dir.name}-{commit_id}"


def _point(final_dir: Path, version: Path) -> None:
    """Make ``final_dir`` a pointer (relative symbolic link) to ``version`` with one atomic rename. A real folder
    left there by an unversioned commit first becomes a version itself (once; readers may miss it meanwhile)."""
    if final_dir.is_dir() and not final_dir.is_symlink():
        os.replace(final_dir, version_dir(final_dir, "0" * 20 + "legacy00"))
    link = _scratch(final_dir)
    os.symlink(version.name, link)
    try:
        os.replace(link, final_dir)
    finally:
        link.unlink(missing_ok=True)


def _publish_version(final_dir: Path, staging: Path, version: Path) -> Path:
    """Turn ``staging`` into ``version`` (if not done yet) and point ``final_dir`` at it (idempotent)."""
    if staging.is_dir():
        os.replace(staging, version)
    if version.is_dir() and resolve(final_dir) != version:
        _point(final_dir, version)
    return final_dir


def resolve(final_dir: str | os.PathLike) -> Path:
    """The folder a reader should read for ``final_dir``: the version its pointer names, or ``final_dir`` itself
    when it is a plain folder (unversioned) or absent."""
    final_dir = Path(final_dir)
    try:
        target = os.readlink(final_dir)
    except (FileNotFoundError, OSError):
        return final_dir
    return final_dir.parent / target


def _commit_of(version: Path, final_dir: Path) -> str | None:
    prefix = f"{VERSION_PREFIX}{final_dir.name}-"
    return version.name[len(prefix):] if version.name.startswith(prefix) else None


def snapshot(final_dirs: list[str | os.PathLike]) -> list[Path]:
    """:func:`resolve` each folder, consistently: where one folder's pointer already names a newer commit whose
    version the others also have (a multi-table commit whose pointers are being swapped), every folder takes that
    commit's version."""
    finals = [Path(f) for f in final_dirs]
    resolved = [resolve(f) for f in finals]
    commits = [c for f, r in zip(finals, resolved) if (c := _commit_of(r, f)) is not None]
    if not commits:
        return resolved
    newest = max(commits)
    out = []
    for f, r in zip(finals, resolved):
        v = version_dir(f, newest)
        out.append(v if _commit_of(r, f) != newest and v.is_dir() else r)
    return out


def collect_versions(folder: str | os.PathLike, grace_s: float = VERSION_GRACE_S) -> int:
    """Remove version folders in ``folder`` that no pointer names and whose pointer moved (or, without a
    pointer, that were made) more than ``grace_s`` seconds ago. Returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now, n = time.time(), 0
    current = {resolve(p).name for p in folder.iterdir() if p.is_symlink()}
    for v in sorted(folder.glob(f"{VERSION_PREFIX}*")):
        if v.name in current or not v.is_dir():
            continue
        final = folder / v.name[len(VERSION_PREFIX):].rsplit("-", 1)[0]
        try:
            since = (final if final.is_symlink() else v).lstat().st_mtime
        except FileNotFoundError:
            continue
        if now - since >= grace_s:
            shutil.rmtree(v, ignore_errors=True)
            n += 1
    return n


def _trash_for(final_dir: Path) -> Path:
    return final_dir.parent / f"{TRASH_PREFIX}{final_dir.name}-{time.time_ns():020d}"


class StagedDirs(_CommitOnExit):
    """Several folders, each built in staging, swapped in by one journalled :meth:`commit` (see module doc)."""

    def __init__(self, final_dirs: list[str | os.PathLike], versioned: bool = False):
        cid = new_commit_id()
        self.versioned = versioned
        # each recovers its folder (and journals beside it); one commit id for all
        self.dirs = [StagedDir(f, versioned=versioned, commit_id=cid) for f in final_dirs]
        self._done = False
        self._journaled = False

    def __getitem__(self, i: int) -> StagedDir:
        return self.dirs[i]

    def __iter__(self) -> Iterator[StagedDir]:
        return iter(self.dirs)

    def commit(self) -> list[Path]:
        """Publish a journal beside every final folder (the first one is the commit point), then roll it forward."""
        if self._done:
            raise RuntimeError("staged folders already committed or aborted")
        entries = [(d.final_dir, d.staging, version_dir(d.final_dir, d.commit_id) if self.versioned
                    else _trash_for(d.final_dir)) for d in self.dirs]
        key = "version" if self.versioned else "trash"
        name = f"{JOURNAL_PREFIX}{uuid.uuid4().hex[:12]}{JOURNAL_SUFFIX}"
        journals = list(dict.fromkeys(d.final_dir.parent / name for d in self.dirs))
        for j in journals:
            rel = lambda p: os.path.relpath(p, j.parent)  # noqa: E731 - paths relative to this journal
            write_json(j, {"entries": [{"final": rel(f), "staging": rel(s), key: rel(t)} for f, s, t in entries],
                           "journals": [rel(o) for o in journals]})
            self._journaled = True
        for d in self.dirs:
            d._done = True
        _roll_forward(journals[0])
        self._done = True
        return [d.final_dir for d in self.dirs]

    def abort(self) -> None:
        """Remove the staging folders, unless the commit point is passed (recovery then completes the commit)."""
        if not self._journaled:
            for d in self.dirs:
                d.abort()
        self._done = True


def stage_dirs(final_dirs: list[str | os.PathLike], versioned: bool = False) -> StagedDirs:
    """Context manager: ``with stage_dirs([a, b]) as (sa, sb):`` builds both, publishes both or neither
    (``versioned``: as versions of one commit id behind pointers, see the module doc)."""
    return StagedDirs(final_dirs, versioned=versioned)


def _roll_forward(journal: Path) -> None:
    """Finish the commit a journal describes (idempotent: safe to repeat after a crash at any step)."""
    try:
        doc = json.loads(journal.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return  # another recovery finished it
    base = journal.parent
    entries = [{k: base / v for k, v in e.items()} for e in doc["entries"]]
    for e in entries:  # every version exists before any pointer moves (what snapshot() relies on)
        if "version" in e and e["staging"].is_dir():
            os.replace(e["staging"], e["version"])
    for e in entries:
        if "version" in e:
            _publish_version(e["final"], e["staging"], e["version"])
        elif e["staging"].is_dir():
            if e["final"].exists():
                os.replace(e["final"], e["trash"] if not e["trash"].exists() else _trash_for(e["final"]))
            os.replace(e["staging"], e["final"])
    for j in doc["journals"]:
        (base / j).unlink(missing_ok=True)
    for e in entries:
        if "trash" in e:
            shutil.rmtree(e["trash"], ignore_errors=True)


def recover_journals(folder: str | os.PathLike) -> int:
    """Roll forward every commit journal in ``folder`` (left by a crashed :class:`StagedDirs` commit)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    journals = sorted(folder.glob(f"{JOURNAL_PREFIX}*{JOURNAL_SUFFIX}"))
    for j in journals:
        _roll_forward(j)
    return len(journals)


def recover_dir(final_dir: str | os.PathLike) -> bool:
    """Roll forward commit journals beside ``final_dir``; then, if ``final_dir`` is missing but a crashed swap left
    its previous contents in trash, restore the newest.

    Returns True when something was restored.
    """
    final_dir = Path(final_dir)
    recover_journals(final_dir.parent)
    if final_dir.exists() or not final_dir.parent.is_dir():
        return False
    prefix = f"{TRASH_PREFIX}{final_dir.name}-"
    trashes = sorted(p for p in final_dir.parent.iterdir() if p.name.startswith(prefix) and p.is_dir())
    if not trashes:
        return False
    with contextlib.suppress(FileNotFoundError):
        os.replace(trashes[-1], final_dir)
        return True
    return False


def recover_folder(folder: str | os.PathLike) -> int:
    """Non-destructive recovery of the folders directly in ``folder`` (for readers): roll forward its commit
    journals, then restore every folder a crashed swap left only in trash. Returns how many were restored."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    recover_journals(folder)
    names = {p.name[len(TRASH_PREFIX):].rsplit("-", 1)[0] for p in folder.glob(f"{TRASH_PREFIX}*") if p.is_dir()}
    return sum(recover_dir(folder / n) for n in sorted(names))


def clean_stale(folder: str | os.PathLike, older_than_s: float = 0.0, version_grace_s: float = VERSION_GRACE_S
                ) -> int:
    """Remove leftovers of killed runs below ``folder``; first roll forward commit journals and restore any folder
    a crashed swap left in trash; last, remove versions no pointer has named for ``version_grace_s``
    (:func:`collect_versions`).

    ``older_than_s`` spares scratch younger than that (a run in flight may own it). Returns how many were removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now = time.time()
    n = 0
    for j in sorted(folder.rglob(f"{JOURNAL_PREFIX}*{JOURNAL_SUFFIX}")):
        recover_journals(j.parent)
    for p in sorted(folder.rglob(".*"), key=lambda q: len(q.parts), reverse=True):
        if p.name.startswith(TRASH_PREFIX) and p.is_dir():
            name = p.name[len(TRASH_PREFIX):].rsplit("-", 1)[0]
            recover_dir(p.parent / name)
        try:
            young = now - p.lstat().st_mtime < older_than_s
        except FileNotFoundError:
            continue
        if young:
            continue
        if p.name.startswith((STAGING_PREFIX, TRASH_PREFIX)) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            n += 1
        elif p.name.endswith(TMP_SUFFIX) and (p.is_symlink() or p.is_file()):
            p.unlink(missing_ok=True)  # a scratch file, or a pointer that was never swapped in
            n += 1
    parents = {v.parent for v in folder.rglob(f"{VERSION_PREFIX}*") if v.is_dir()}
    return n + sum(collect_versions(d, version_grace_s) for d in sorted(parents))


@contextlib.contextmanager
def publishing(path: str | os.PathLike) -> Iterator[Path]:
    """``with publishing(p) as tmp: <write tmp>`` publishes ``tmp`` at ``p`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_scratch_of(path)
    tmp = _scratch(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove(path: str | os.PathLike) -> bool:
    """Unpublish one file (a single unlink, so a reader sees it or not); False when it was not there."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return False
    return True
