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
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from clip_assets.io import fs
from clip_assets.io.fs import StorePath

PARQUET_COMPRESSION = "zstd"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
TMP_SUFFIX = ".tmp"
JOURNAL_PREFIX = ".journal-"
JOURNAL_SUFFIX = ".json"
VERSION_PREFIX = ".v-"
SCRATCH_GRACE_S = 6 * 3600.0  # scratch younger than this may belong to a run in flight: left alone
VERSION_GRACE_S = 3600.0  # a version no pointer names is kept this long after its pointer moved (held readers)
POINTER_FILE = ".pointer.json"  # on a store: the object below a versioned folder's name that names its version
LOCAL_STAGING = "clip-assets-staging"  # on a store: local folder (below the temp dir) where staged folders are built

Loc = Path | StorePath


def _loc(path: "str | os.PathLike | StorePath") -> Loc:
    """A local Path, or a StorePath for an object-store URL."""
    return fs.location(path)


def on_store(path: "str | os.PathLike | StorePath") -> bool:
    return isinstance(_loc(path), StorePath)


def _scratch(path: Loc) -> Loc:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")


def clean_scratch_of(path: str | os.PathLike, older_than_s: float = SCRATCH_GRACE_S) -> int:
    """Remove the scratch that killed writers of ``path`` left beside it (``.staging-<name>-*``,
    ``.trash-<name>-*`` once ``path`` exists, ``.<name>.*.tmp``), sparing what is younger than ``older_than_s``.
    Every writer calls this for its own target, so no leftover outlives the next write of the same name."""
    path = _loc(path)
    if isinstance(path, StorePath):
        return _clean_store_scratch_of(path, older_than_s)
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


def _publish_file(path: str | os.PathLike, fill: Callable[[Path], None]) -> Loc:
    """Run ``fill(scratch_path)`` then rename the scratch file onto ``path`` (atomic on one filesystem). On a
    store, ``fill`` writes a local temporary file which is then uploaded (:func:`_upload_file`)."""
    path = _loc(path)
    if isinstance(path, StorePath):
        with _local_tmp() as tmp:
            fill(tmp)
            _upload_file(tmp, path)
        return path
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

    def __init__(self, final_dir: str | os.PathLike, versioned: bool = False, commit_id: str | None = None,
                 plain: bool = False, marker: str | None = None):
        self.final_dir = _loc(final_dir)
        self.store = isinstance(self.final_dir, StorePath)
        if plain and (versioned or not marker):
            raise ValueError("stage_dir: plain=True needs a marker file and no versioning")
        self.plain, self.marker = plain, marker
        # a store has no rename: every staged folder is a version there, but for a plain one (see stage_dir)
        self.versioned = versioned or (self.store and not plain)
        self.commit_id = commit_id or new_commit_id()
        self.final_dir.parent.mkdir(parents=True, exist_ok=True)
        recover_dir(self.final_dir)
        clean_scratch_of(self.final_dir)
        name = f"{STAGING_PREFIX}{self.final_dir.name}-{uuid.uuid4().hex[:12]}"
        # on a store the folder is built on local disk and uploaded whole at commit (pyarrow's output streams cannot
        # be aborted, so nothing is written below a name a reader could find until the files are complete)
        self.staging = (_local_staging_root() / name) if self.store else self.final_dir.parent / name
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
        if self.store and self.plain:
            self._done = True
            try:
                _upload_plain(self.staging, self.final_dir, self.marker)
            finally:
                shutil.rmtree(self.staging, ignore_errors=True)
            return self.final_dir
        if self.store:
            self._done = True
            version = version_dir(self.final_dir, self.commit_id)
            try:
                _upload_dir(self.staging, version)
            finally:
                shutil.rmtree(self.staging, ignore_errors=True)
            _point_store(self.final_dir, version)
            return self.final_dir
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


def stage_dir(final_dir: str | os.PathLike, versioned: bool = False, plain: bool = False,
              marker: str | None = None) -> StagedDir:
    """Context manager: build a folder in staging, publish it on success (see module doc; ``versioned``: as an
    immutable version behind a pointer).

    ``plain`` (with ``marker``, a file the folder always holds) is for folders read by tools that know nothing of
    pointers (exports, HTML reports). On local disk it changes nothing (one swap). On a store the files go straight
    below the folder's own name, Hadoop-committer style: the old ``marker`` is deleted first, the new files are
    uploaded (each object whole), the old files not rewritten are deleted, and ``marker`` is uploaded last, so a
    reader that waits for the marker (``_SUCCESS``, ``index.html``) sees one complete folder."""
    return StagedDir(final_dir, versioned=versioned, plain=plain, marker=marker)


def new_commit_id() -> str:
    """A commit id that sorts by time (nanoseconds) and is unique (random suffix)."""
    return f"{time.time_ns():020d}{uuid.uuid4().hex[:8]}"


def version_dir(final_dir: str | os.PathLike, commit_id: str) -> Loc:
    """The immutable version folder of ``final_dir`` for ``commit_id``."""
    final_dir = _loc(final_dir)
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
    """Turn ``staging`` into ``version`` (if not done yet) and point ``final_dir`` at it (idempotent). A pointer
    that already names a later commit is left alone (a recovery rolling an old journal forward after a later
    commit must not move the pointer back), as on a store (:func:`_point_store`)."""
    if staging.is_dir():
        os.replace(staging, version)
    current = resolve(final_dir)
    if version.is_dir() and current != version:
        if (_commit_of(current, final_dir) or "") > (_commit_of(version, final_dir) or ""):
            return final_dir
        _point(final_dir, version)
    return final_dir


def resolve(final_dir: str | os.PathLike) -> Loc:
    """The folder a reader should read for ``final_dir``: the version its pointer names, or ``final_dir`` itself
    when it is a plain folder (unversioned) or absent. On a store the pointer is the object ``final_dir/.pointer.json``
    (one GET)."""
    final_dir = _loc(final_dir)
    if isinstance(final_dir, StorePath):
        target = _read_store_pointer(final_dir)
        return final_dir if target is None else final_dir.parent / target
    try:
        target = os.readlink(final_dir)
    except (FileNotFoundError, OSError):
        return final_dir
    return final_dir.parent / target


def is_pointer(final_dir: str | os.PathLike) -> bool:
    """Whether ``final_dir`` is a versioned folder's pointer (a symbolic link; on a store, a pointer object)."""
    final_dir = _loc(final_dir)
    if isinstance(final_dir, StorePath):
        return (final_dir / POINTER_FILE).is_file()
    return final_dir.is_symlink()


def _commit_of(version: Loc, final_dir: Loc) -> str | None:
    prefix = f"{VERSION_PREFIX}{final_dir.name}-"
    return version.name[len(prefix):] if version.name.startswith(prefix) else None


def snapshot(final_dirs: list[str | os.PathLike]) -> list[Path]:
    """:func:`resolve` each folder, consistently: where one folder's pointer already names a newer commit whose
    version the others also have (a multi-table commit whose pointers are being swapped), every folder takes that
    commit's version."""
    finals = [_loc(f) for f in final_dirs]
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
    folder = _loc(folder)
    if not folder.is_dir():
        return 0
    now, n = time.time(), 0
    current = {resolve(p).name for p in folder.iterdir() if not p.name.startswith(".") and is_pointer(p)}
    for v in sorted(folder.glob(f"{VERSION_PREFIX}*")):
        if v.name in current or not v.is_dir():
            continue
        final = folder / v.name[len(VERSION_PREFIX):].rsplit("-", 1)[0]
        try:
            if isinstance(final, StorePath):
                since = ((final / POINTER_FILE) if is_pointer(final) else v).stat().st_mtime
            else:
                since = (final if final.is_symlink() else v).lstat().st_mtime
        except FileNotFoundError:
            continue
        if now - since >= grace_s:
            _rmtree(v)
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
        if any(d.store for d in self.dirs):
            return self._commit_store()
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

    def _commit_store(self) -> list[Loc]:
        """On a store: upload every version, publish the journal (commit point), move the pointers, drop the
        journal. Readers resolving the folders together (:func:`snapshot`) see all old or all new throughout."""
        if not all(d.store for d in self.dirs):
            raise ValueError("stage_dirs: the folders of one commit must all be local or all on the store")
        versions = [version_dir(d.final_dir, d.commit_id) for d in self.dirs]
        try:
            for d, v in zip(self.dirs, versions):
                _upload_dir(d.staging, v)
        finally:
            for d in self.dirs:
                shutil.rmtree(d.staging, ignore_errors=True)
                d._done = True
        name = f"{JOURNAL_PREFIX}{uuid.uuid4().hex[:12]}{JOURNAL_SUFFIX}"
        journals = list(dict.fromkeys(d.final_dir.parent / name for d in self.dirs))
        doc = {"entries": [{"final": d.final_dir.url, "version": v.url} for d, v in zip(self.dirs, versions)],
               "journals": [j.url for j in journals]}  # whole URLs: the folders may have different parents
        for j in journals:
            fs.write_bytes_atomic(j, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
            self._journaled = True
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


def _roll_forward(journal: Loc) -> None:
    """Finish the commit a journal describes (idempotent: safe to repeat after a crash at any step)."""
    if isinstance(journal, StorePath):
        return _roll_forward_store(journal)
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
    folder = _loc(folder)
    if not isinstance(folder, StorePath) and not folder.is_dir():
        return 0  # (on a store the listing below is the probe)
    journals = sorted(folder.glob(f"{JOURNAL_PREFIX}*{JOURNAL_SUFFIX}"))
    for j in journals:
        _roll_forward(j)
    return len(journals)


def recover_dir(final_dir: str | os.PathLike) -> bool:
    """Roll forward commit journals beside ``final_dir``; then, if ``final_dir`` is missing but a crashed swap left
    its previous contents in trash, restore the newest.

    Returns True when something was restored.
    """
    final_dir = _loc(final_dir)
    recover_journals(final_dir.parent)
    if isinstance(final_dir, StorePath):
        return False  # nothing is ever renamed on a store, so no swap can be left half done
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
    folder = _loc(folder)
    if isinstance(folder, StorePath):
        recover_journals(folder)
        return 0
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
    folder = _loc(folder)
    if isinstance(folder, StorePath):
        return _clean_stale_store(folder, older_than_s, version_grace_s)
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
    path = _loc(path)
    if isinstance(path, StorePath):
        clean_scratch_of(path)
        with _local_tmp() as tmp:
            yield tmp
            _upload_file(tmp, path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_scratch_of(path)
    tmp = _scratch(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_tree(path: str | os.PathLike) -> None:
    """Remove a folder and everything below it (a prefix on a store); nothing when absent."""
    _rmtree(_loc(path))


def remove(path: str | os.PathLike) -> bool:
    """Unpublish one file (a single unlink, so a reader sees it or not); False when it was not there."""
    try:
        _loc(path).unlink()
    except FileNotFoundError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# The same protocol on an object store (no rename): immutable version prefixes named by pointer objects
# ---------------------------------------------------------------------------------------------------------------
#
# * a file (write_bytes / write_table / publishing) is written locally, uploaded to a scratch key beside its name
#   (``.<name>.<id>.tmp``) and then copied onto its name server-side (pyarrow's ``move``: CopyObject + delete).
#   An object appears whole or not at all, and an upload that fails half way leaves only scratch, which the next
#   writer of the name removes once it is older than ``SCRATCH_GRACE_S``.
# * a staged folder is built on local disk, uploaded below ``.v-<name>-<commit id>/`` (a name no reader looks
#   at), and published by one PUT of ``<name>/.pointer.json`` naming that version: the store's commit point.
# * a multi-folder commit uploads every version, then one journal per parent folder (the first PUT is the commit
#   point), then the pointers, then deletes the journals; recovery re-writes the pointers a journal names.
# * versions no pointer names are deleted after ``VERSION_GRACE_S`` (collect_versions), as on local disk.


def _local_staging_root() -> Path:
    root = Path(tempfile.gettempdir()) / LOCAL_STAGING
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for p in root.iterdir():  # staging of killed runs: removed once older than the scratch grace
        with contextlib.suppress(FileNotFoundError):
            if now - p.lstat().st_mtime >= SCRATCH_GRACE_S:
                shutil.rmtree(p, ignore_errors=True)
    return root


@contextlib.contextmanager
def _local_tmp() -> Iterator[Path]:
    """A local scratch file path (removed afterwards) for a file bound for a store."""
    tmp = _local_staging_root() / f".upload-{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _upload_file(local: Path, dest: StorePath) -> None:
    """Publish the local file ``local`` as the object ``dest``, whole or not at all (:func:`fs.upload_file`)."""
    fs.upload_file(local, dest)


def _upload_dir(local: Path, dest: StorePath) -> None:
    """Upload every file below the local folder ``local`` to the prefix ``dest`` (not yet named by any pointer, so
    no reader sees it while it is incomplete). An empty folder gets a marker object so that the version exists."""
    fsys, path = fs.arrow(dest)
    files = [p for p in local.rglob("*") if p.is_file()]
    if not files:
        fs.write_bytes_atomic(dest / ".empty", b"")
        return
    try:
        pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fsys,
                        use_threads=True)
    except OSError as e:
        raise OSError(f"cannot upload {dest}: {e}") from e


def _upload_plain(local: Path, dest: StorePath, marker: str) -> None:
    """The store side of ``stage_dir(plain=True)`` (see there)."""
    if not (local / marker).is_file():
        raise ValueError(f"stage_dir({dest}): the folder was built without its marker file {marker!r}")
    old = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    (dest / marker).unlink(missing_ok=True)
    new = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    for rel in new:
        if rel != marker:
            _upload_file(local / rel, dest / rel)
    for rel in sorted(old - set(new)):
        (dest / rel).unlink(missing_ok=True)
    _upload_file(local / marker, dest / marker)


def _read_store_pointer(final_dir: StorePath) -> str | None:
    try:
        doc = json.loads((final_dir / POINTER_FILE).read_bytes())
    except FileNotFoundError:
        return None
    target = doc.get("version") if isinstance(doc, dict) else None
    if not isinstance(target, str) or not target.startswith(f"{VERSION_PREFIX}{final_dir.name}-"):
        raise ValueError(f"{final_dir / POINTER_FILE}: not a pointer to a version of {final_dir.name}: {doc!r}")
    return target


def _point_store(final_dir: StorePath, version: StorePath) -> None:
    """Name ``version`` as ``final_dir``'s contents: one PUT of the pointer object (atomic). A pointer that already
    names a later commit is left alone: a recovery rolling forward a journal it read before that journal's writer
    finished (and a later commit followed) must not move the pointer back to the older version."""
    current = _read_store_pointer(final_dir)
    if current == version.name:
        return
    if current is not None and (_commit_of(final_dir.parent / current, final_dir) or "") > (
            _commit_of(version, final_dir) or ""):
        return
    doc = {"version": version.name, "commit": _commit_of(version, final_dir)}
    fs.write_bytes_atomic(final_dir / POINTER_FILE, (json.dumps(doc, sort_keys=True) + "\n").encode())


def _roll_forward_store(journal: StorePath) -> None:
    try:
        doc = json.loads(journal.read_bytes())
    except FileNotFoundError:
        return
    for e in doc["entries"]:
        version = StorePath(e["version"])
        if version.is_dir():  # written before the journal, so present unless collected long after
            _point_store(StorePath(e["final"]), version)
    for j in doc["journals"]:
        StorePath(j).unlink(missing_ok=True)


def _rmtree(p: Loc) -> None:
    if isinstance(p, StorePath):
        p.rmtree()
    else:
        shutil.rmtree(p, ignore_errors=True)


def _clean_store_scratch_of(path: StorePath, older_than_s: float) -> int:
    """Scratch objects a failed upload left beside ``path`` (``.<name>.*.tmp``), once older than the grace."""
    now, n = time.time(), 0
    try:
        names = fs.list_dir(path.parent)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for name in names:
        if name.startswith(f".{path.name}.") and name.endswith(TMP_SUFFIX):
            p = path.parent / name
            with contextlib.suppress(FileNotFoundError):
                if now - p.stat().st_mtime >= older_than_s:
                    p.unlink(missing_ok=True)
                    n += 1
    return n


def _clean_stale_store(folder: StorePath, older_than_s: float, version_grace_s: float) -> int:
    """:func:`clean_stale` on a store: roll journals forward, remove old scratch objects, collect versions."""
    if not folder.is_dir():
        return 0
    now, n = time.time(), 0
    below = sorted(folder.rglob(".*"))
    for j in below:
        if j.name.startswith(JOURNAL_PREFIX) and j.name.endswith(JOURNAL_SUFFIX):
            _roll_forward_store(j)
    for p in below:
        if p.name.endswith(TMP_SUFFIX) and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                if now - p.stat().st_mtime >= older_than_s:
                    p.unlink(missing_ok=True)
                    n += 1
    parents = {p.parent for p in below if p.name.startswith(VERSION_PREFIX)}
    return n + sum(collect_versions(d, version_grace_s) for d in sorted(parents))
