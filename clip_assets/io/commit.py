"""The commit layer: every file and folder the project writes is published through here, atomically.

One mechanism for everything (warehouse partitions, model checkpoints and cards, exports, synthetic drops,
IWL artefacts): write into a private scratch name in the destination's own folder, then publish with one
rename. A reader therefore sees the old object or the new one, never a half-written one, and a run killed at any
point leaves at most scratch leftovers (hidden ``.staging-*`` / ``.trash-*`` folders and ``.*.tmp`` files,
which no glob of the catalog matches) that :func:`clean_stale` removes.

Interface (small on purpose, so that an object-store backend can implement the same calls)::

    write_bytes(path, data) / write_text(path, text) / write_json(path, obj) / write_table(path, table)
    with stage_dir(final_dir) as st:          # a whole folder, swapped in on success
        st.write_table("part-00000.parquet", table)
        w = st.parquet_writer("part-00001.parquet", schema)  # streaming; close before the block ends
        st.write_bytes("00000.tar", data) / st.path("x.bin") -> a staging path to write yourself
    # on exception: staging removed, the previous folder untouched

Replacing a folder takes two renames (old -> trash, staging -> final). A crash between them leaves the final
name absent and the previous contents under ``.trash-<name>-*``; :func:`recover_dir` (called by every
:func:`stage_dir` and by readers through :func:`clean_stale`) puts the newest trash back, so a partition never
vanishes.
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


def _scratch(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")


def _publish_file(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Run ``fill(scratch_path)`` then rename the scratch file onto ``path`` (atomic on one filesystem)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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


class StagedDir:
    """A folder built under a hidden staging name and swapped in by :meth:`commit`."""

    def __init__(self, final_dir: str | os.PathLike):
        self.final_dir = Path(final_dir)
        self.final_dir.parent.mkdir(parents=True, exist_ok=True)
        recover_dir(self.final_dir)
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
        trash = None
        if self.final_dir.exists():
            trash = self.final_dir.parent / f"{TRASH_PREFIX}{self.final_dir.name}-{time.time_ns():020d}"
            os.replace(self.final_dir, trash)
        os.replace(self.staging, self.final_dir)
        self._done = True
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return self.final_dir

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        self._done = True

    def __enter__(self) -> "StagedDir":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def stage_dir(final_dir: str | os.PathLike) -> StagedDir:
    """Context manager: build a folder in staging, publish it on success (see module doc)."""
    return StagedDir(final_dir)


def recover_dir(final_dir: str | os.PathLike) -> bool:
    """If ``final_dir`` is missing but a crashed swap left its previous contents in trash, restore the newest.

    Returns True when something was restored.
    """
    final_dir = Path(final_dir)
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


def clean_stale(folder: str | os.PathLike, older_than_s: float = 0.0) -> int:
    """Remove leftovers of killed runs below ``folder``; first restore any folder a crashed swap left in trash.

    ``older_than_s`` spares scratch younger than that (a run in flight may own it). Returns how many were removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now = time.time()
    n = 0
    for p in sorted(folder.rglob(".*"), key=lambda q: len(q.parts), reverse=True):
        if p.name.startswith(TRASH_PREFIX) and p.is_dir():
            name = p.name[len(TRASH_PREFIX):].rsplit("-", 1)[0]
            recover_dir(p.parent / name)
        try:
            young = now - p.stat().st_mtime < older_than_s
        except FileNotFoundError:
            continue
        if young:
            continue
        if p.name.startswith((STAGING_PREFIX, TRASH_PREFIX)) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            n += 1
        elif p.name.endswith(TMP_SUFFIX) and p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


@contextlib.contextmanager
def publishing(path: str | os.PathLike) -> Iterator[Path]:
    """``with publishing(p) as tmp: <write tmp>`` publishes ``tmp`` at ``p`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
