"""Reading a drop: the validating tar reader, the sidecar and stats, per-sample json, pointer reads, the index.

:func:`iter_shard` walks one tar member by member with the standard library's ``tarfile`` (chosen over
webdataset because we need each member's byte offset for zero-copy pointers and fine-grained control over
truncated archives: every sample read before the damage is kept, every sample after it is reported, nothing is
silently lost). Members are grouped into samples like webdataset does: the key is the member name up to the first
dot of its last path component, folder included (``a/000.jpg`` and ``b/000.txt`` are two samples).

A tar, sidecar or stats file may be an object-store URL (``str``, see :mod:`clip_assets.io.fs`): the tar is then
read through a random-access input file of the store behind a large read buffer (a few ranged GETs per shard,
not one per member), with the same ``tarfile`` reader, so member offsets, problems and errors are those of the
same bytes on local disk.
"""

from __future__ import annotations

import contextlib
import io
import json
import operator
import os
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from clip_assets.io import fs
from clip_assets.io.drops.layout import (
    IMAGE_EXTS, POINTER_SCHEMA, Location, as_location, child, entry_name, is_store, shard_ids, sidecar_name,
    stats_name, tar_name,
)
from clip_assets.io.images import sniff_format
from clip_assets.io.uid import carried_uid, compute_uid


@dataclass
class Sample:
    """One key's members from a shard, plus where its image bytes live inside the tar."""

    key: str
    image: bytes | None = None
    image_ext: str | None = None
    image_member: str | None = None
    image_offset: int | None = None
    image_size: int | None = None
    caption_bytes: bytes | None = None
    meta_bytes: bytes | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (reason, detail)


@dataclass
class ShardEnd:
    """Sentinel yielded last by :func:`iter_shard`: why reading stopped (``None`` = clean end)."""

    error: str | None


def split_member(name: str) -> tuple[str, str]:
    """(key, lower-case extension) of a member name: ``"a/b/000.jpg"`` -> ``("a/b/000", "jpg")``."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _printable_name(name: str) -> tuple[str, str | None]:
    """(a valid UTF-8 rendering of a member name, a problem detail when the raw name is not UTF-8)."""
    try:
        name.encode("utf-8")
        return name, None
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return shown, f"member name {shown!r} is not UTF-8"


def _read_member(tf: tarfile.TarFile, ti: tarfile.TarInfo) -> tuple[bytes | None, str | None]:
    """The member's bytes, or (None, why) when the archive breaks inside it."""
    try:
        fobj = tf.extractfile(ti)
        data = fobj.read() if fobj is not None else b""
    except (tarfile.TarError, OSError, EOFError) as e:
        return None, f"member {ti.name!r}: {type(e).__name__}: {e}"
    if len(data) != ti.size:
        return None, f"member {ti.name!r} has {len(data)} of {ti.size} bytes"
    return data, None


def _add_member(sample: Sample, ti: tarfile.TarInfo, shown: str, ext: str, data: bytes) -> None:
    if ext in IMAGE_EXTS:
        if sample.image is not None:
            sample.problems.append(("duplicate_member", f"second image member {shown}"))
            return
        sample.image, sample.image_ext = data, ext
        sample.image_member, sample.image_offset, sample.image_size = shown, ti.offset_data, ti.size
    elif ext == "txt":
        sample.caption_bytes = data
    elif ext == "json":
        sample.meta_bytes = data


STORE_READ_BUFFER = 8 << 20  # bytes per ranged GET while streaming a tar from a store


class _StoreRaw(io.RawIOBase):
    """A pyarrow random-access input file as a raw Python stream (for io.BufferedReader and then tarfile)."""

    def __init__(self, fh: Any, name: str):
        self._fh, self.name = fh, name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._fh.read(len(b))
        b[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()


def _open_tar(tar_path: Location) -> tuple[tarfile.TarFile, io.BufferedReader | None]:
    """``tarfile.open(path, "r:")`` of a local tar, or of a store object through a buffered random-access file;
    with the store file to close after the TarFile (tarfile never closes a file object it was given)."""
    if not is_store(tar_path):
        return tarfile.open(tar_path, mode="r:", encoding="utf-8", errors="surrogateescape"), None
    url = as_location(tar_path)
    buffered = io.BufferedReader(_StoreRaw(fs.open_input_file(url), url), buffer_size=STORE_READ_BUFFER)
    try:
        return tarfile.open(fileobj=buffered, mode="r:", encoding="utf-8", errors="surrogateescape"), buffered
    except BaseException:
        buffered.close()
        raise


def iter_shard(tar_path: Location) -> Iterator[Sample | ShardEnd]:
    """Stream the samples of one tar (consecutive members with the same key), then one :class:`ShardEnd`.

    A damaged archive (truncated, bad header) ends the stream with ``ShardEnd(error=...)``; a sample whose
    member data is cut short carries a ``truncated_tar`` problem; a member name that is not UTF-8 gives its sample
    a ``member_name_not_utf8`` problem (the key is shown with backslash escapes). Memory holds one sample.
    ``tar_path`` may be a store URL (``str``).
    """
    current: Sample | None = None
    error: str | None = None
    try:
        tf, store_file = _open_tar(tar_path)
    except (tarfile.TarError, OSError, EOFError) as e:
        yield ShardEnd(error=f"cannot open tar: {type(e).__name__}: {e}")
        return
    with contextlib.closing(store_file) if store_file is not None else contextlib.nullcontext(), tf:
        while True:
            try:
                ti = tf.next()
            except (tarfile.TarError, OSError, EOFError) as e:
                error = f"tar damaged after {tf.offset} bytes: {type(e).__name__}: {e}"
                break
            if ti is None:
                break
            if not ti.isfile():
                continue
            shown, name_problem = _printable_name(ti.name)
            key, ext = split_member(shown)
            if current is not None and key != current.key:
                yield current
                current = None
            if current is None:
                current = Sample(key=key)
            if name_problem is not None:
                current.problems.append(("member_name_not_utf8", name_problem))
            data, cut = _read_member(tf, ti)
            if data is None:
                current.problems.append(("truncated_tar", cut))
                error = f"tar damaged inside {cut}"
                break
            _add_member(current, ti, shown, ext, data)
    if current is not None:
        yield current
    yield ShardEnd(error=error)


@dataclass
class Sidecar:
    """A shard's sidecar Parquet: every row in file order, or why it could not be read (``error``)."""

    present: bool
    rows: list[dict] = field(default_factory=list)
    error: str | None = None


def read_sidecar(drop_dir: Location, shard: str) -> Sidecar:
    """The shard's img2dataset sidecar: absent, read (all rows, duplicates and null keys included), or broken."""
    if is_store(drop_dir):
        url = child(drop_dir, sidecar_name(shard))
        fsys, path = fs.resolve(url)
        if fsys.get_file_info(path).type != pafs.FileType.File:
            return Sidecar(present=False)
        try:
            rows = pq.read_table(path, filesystem=fsys).to_pylist()
        except Exception as e:  # noqa: BLE001 - as for a local sidecar
            return Sidecar(present=True, error=f"{sidecar_name(shard)}: {type(e).__name__}: {e}")
        return Sidecar(present=True, rows=rows)
    path = Path(drop_dir) / sidecar_name(shard)
    if not path.is_file():
        return Sidecar(present=False)
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # noqa: BLE001 - any unreadable sidecar is a recorded shard-level reason
        return Sidecar(present=True, error=f"{path.name}: {type(e).__name__}: {e}")
    return Sidecar(present=True, rows=rows)


def read_stats(drop_dir: Location, shard: str) -> dict | None:
    """The shard's ``NNNNN_stats.json`` as a dict, or None when it is missing or not a JSON object."""
    path = child(drop_dir, stats_name(shard))
    try:
        text = fs.read_bytes(path).decode("utf-8") if isinstance(path, str) else path.read_text(encoding="utf-8")
        obj = json.loads(text)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def parse_meta(meta_bytes: bytes | None) -> tuple[dict, str | None]:
    """A sample's ``{key}.json`` as (object, None); ``({}, why)`` when it is not a UTF-8 JSON object of valid text
    (a lone surrogate such as ``"\\ud800"`` is valid JSON but not text); ``({}, None)`` when absent."""
    if not meta_bytes:
        return {}, None
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return {}, f"json is not valid UTF-8 JSON: {e}"
    if not isinstance(meta, dict):
        return {}, f"json is a {type(meta).__name__}, not an object"
    try:
        json.dumps(meta, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        return {}, f"json holds text that is not valid Unicode (a lone surrogate?): {e.reason} at {e.start}"
    return meta, None


def read_pointer(tar_path: str | os.PathLike, offset: int, size: int,
                 handles: dict[str, Any] | None = None) -> bytes:
    """The ``size`` bytes at ``offset`` of ``tar_path`` (a raw_pairs pointer; no tar parsing).

    ``tar_path`` is a local path or an object-store URL (``s3://bucket/.../00000.tar``, see
    :mod:`clip_assets.io.fs`); on a store this is one ranged read of exactly that member, never a download of
    the tar. ``handles`` is a cache of open files for many reads in a row: the current tar stays open (at most
    one file open per cache); close them with :func:`close_handles`. Raises OSError on a short read or a
    missing file or object.
    """
    key = str(tar_path)
    remote = _is_remote_url(key)
    if handles is None:
        if remote:
            with fs.open_input_file(key) as fh:
                return fs.read_at(fh, key, operator.index(offset), operator.index(size))
        with open(key, "rb") as fh:
            return _read_at(fh, key, offset, size)
    fh = handles.get(key)
    if fh is None:
        close_handles(handles)
        fh = handles[key] = fs.open_input_file(key) if remote else open(key, "rb")
    if remote:
        return fs.read_at(fh, key, operator.index(offset), operator.index(size))
    return _read_at(fh, key, offset, size)


STORE_READ_THREADS = 16  # concurrent ranged reads per batch on a store (latency-bound, not bandwidth-bound)
_read_pool: ThreadPoolExecutor | None = None
_read_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _read_pool
    with _read_pool_lock:
        if _read_pool is None:
            _read_pool = ThreadPoolExecutor(STORE_READ_THREADS, thread_name_prefix="clip-assets-read")
        return _read_pool


def read_pointers(tar_paths: Sequence[str], offsets: Sequence[int], sizes: Sequence[int],
                  handles: dict[str, Any] | None = None) -> list[bytes]:
    """:func:`read_pointer` for many rows, in their order, with the same bytes and errors.

    On a store the ranged reads of a batch run concurrently (``STORE_READ_THREADS``): each is one GET of exactly
    its member, so the bytes fetched stay the image sizes, while the latency of one request per image overlaps
    (pyarrow's input files allow concurrent ``read_at``). Local rows are read one after another (a page-cache
    read is microseconds). The first failing row raises, as a loop of :func:`read_pointer` would.
    """
    n = len(tar_paths)
    if not (len(offsets) == len(sizes) == n):
        raise ValueError(f"read_pointers: {n} paths, {len(offsets)} offsets, {len(sizes)} sizes")
    keys = [str(p) for p in tar_paths]
    if n < 2 or not all(_is_remote_url(k) for k in keys):
        return [read_pointer(k, o, s, handles) for k, o, s in zip(keys, offsets, sizes)]
    own = handles is None
    handles = {} if own else handles
    opened: dict[str, Any] = {}
    try:
        for k in dict.fromkeys(keys):  # one open file per tar of the batch (the cache's, when it holds it)
            opened[k] = handles[k] if k in handles else fs.open_input_file(k)
        futures = [_pool().submit(fs.read_at, opened[k], k, operator.index(o), operator.index(s))
                   for k, o, s in zip(keys, offsets, sizes)]
        wait(futures)  # every read is done before any file is closed, even when one fails
        return [f.result() for f in futures]
    finally:
        last = keys[-1]
        for k, fh in opened.items():
            if k not in handles:
                if k == last and not own:  # the cache keeps the batch's last tar open for the next batch
                    close_handles(handles)
                    handles[k] = fh
                else:
                    fh.close()
        if own:
            close_handles(handles)


def _is_remote_url(path: str) -> bool:
    """An object-store URL; anything else (``file://`` and unknown schemes included) is opened as a local path."""
    return "://" in path and path.split("://", 1)[0].lower() in fs.REMOTE_SCHEMES


def _read_at(fh: BinaryIO, path: str, offset: int, size: int) -> bytes:
    fh.seek(offset)
    data = fh.read(size)
    if len(data) != size:
        raise OSError(f"short read: {len(data)} of {size} bytes at offset {offset} of {path}")
    return data


def close_handles(handles: dict[str, Any]) -> None:
    """Close every file a :func:`read_pointer` cache holds (local files and object-store input files alike)."""
    for fh in handles.values():
        fh.close()
    handles.clear()


def index_shard(tar_path: str | os.PathLike, shard: str | None = None) -> pa.Table:
    """Pointer table of one webdataset tar: one row per key that has an image and a UTF-8 caption (tar order).

    Images are not decoded (ingestion validates them). The uid is the json's DataComp uid when it carries a valid
    one, else the content uid; ``image_format`` is decided by content, by extension when the content is unknown.
    A store URL stays the ``tar_path`` of every row (later reads are ranged reads of it).
    """
    if is_store(tar_path):
        tar_path = as_location(tar_path)
        shard = shard if shard is not None else entry_name(tar_path).split(".", 1)[0]
    else:
        tar_path = Path(tar_path).resolve()
        shard = shard if shard is not None else tar_path.stem
    rows: dict[str, list[Any]] = {f.name: [] for f in POINTER_SCHEMA}
    for s in iter_shard(tar_path):
        if isinstance(s, ShardEnd) or s.image is None or s.caption_bytes is None or s.problems:
            continue
        try:
            caption = s.caption_bytes.decode("utf-8")
        except UnicodeDecodeError:
            continue
        uid, _ = carried_uid(parse_meta(s.meta_bytes)[0].get("uid"), None)
        fmt = sniff_format(s.image) or ("jpg" if s.image_ext == "jpeg" else s.image_ext)
        values = (uid or compute_uid(s.image, caption), shard, s.key, caption, fmt, str(tar_path), s.image_member,
                  s.image_offset, s.image_size)
        for name, v in zip(POINTER_SCHEMA.names, values):
            rows[name].append(v)
    return pa.Table.from_pydict(rows, schema=POINTER_SCHEMA)


def index_drop(drop_dir: str | os.PathLike) -> list[pa.Table]:
    """Pointer tables of every ``NNNNN.tar`` in a drop folder (or under a drop's store URL), one per shard, in
    shard order."""
    drop_dir = as_location(drop_dir)
    shards = shard_ids(drop_dir)
    if not shards:
        raise FileNotFoundError(f"no NNNNN.tar shards in {drop_dir}")
    return [index_shard(child(drop_dir, tar_name(s)), s) for s in shards]
