"""Where things are in a drop: shard names, img2dataset's sidecar schema, the pointer schema, drop status.

Layout of one drop (img2dataset's ``output_format="webdataset"``)::

    00000.tar            {key}.jpg|png|webp, {key}.txt (caption), {key}.json (per-sample metadata)
    00000.parquet        sidecar: img2dataset's columns (SIDECAR_SCHEMA), one row per attempted sample
    00000_stats.json     written last, when the shard is finished
    _SUCCESS             optional marker: the whole drop is finished

A shard is a ``NNNNN.tar`` with at least 5 digits (``SHARD_RE``; ingestion, training and exports all use it). A
drop is *complete* when ``_SUCCESS`` exists or every shard has its ``NNNNN_stats.json``.

Landing entries that are symbolic links are never drops: :func:`drop_status` reports them with a reason and
they are not complete, so the sensor skips them and :func:`clip_assets.io.ingest.ingest_drop` refuses them (a
link to another drop would otherwise write the other drop's partition, or alias it under a second name). Copy or
move a drop into the landing folder instead.

A landing folder or drop may also be an object-store URL (``s3://bucket/prefix/<drop>``, a ``str``: a
``pathlib.Path`` would fold ``//``). Every function here then lists and reads through :mod:`clip_assets.io.fs`
(pyarrow's FileInfo gives size and modification time); a store has no symbolic links, so no entry is one. Local
paths take exactly the code paths they always did.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from clip_assets.io import fs

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # member extensions that hold a sample's image
SHARD_RE = re.compile(r"^(\d{5,})\.tar$")
DROP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$")
SUCCESS_MARKER = "_SUCCESS"

# img2dataset's sidecar columns, in its order (also the keys of each {key}.json it writes).
SIDECAR_SCHEMA = pa.schema([
    ("caption", pa.string()), ("url", pa.string()), ("key", pa.string()), ("status", pa.string()),
    ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("original_width", pa.int32()), ("original_height", pa.int32()), ("exif", pa.string()),
    ("sha256", pa.string()),
])

# A pointer table: one row per sample, the image bytes are tar_path[offset : offset + size].
POINTER_SCHEMA = pa.schema([
    ("uid", pa.string()), ("shard", pa.string()), ("key", pa.string()), ("caption", pa.string()),
    ("image_format", pa.string()), ("tar_path", pa.string()), ("member", pa.string()),
    ("offset", pa.int64()), ("size", pa.int64()),
])
POINTER_COLUMNS = tuple(POINTER_SCHEMA.names)
# what a model reads of a pointer row: the uid, the caption and where the image bytes are
MODEL_INPUT_COLUMNS = ("uid", "caption", "tar_path", "offset", "size")


def shard_id(index: int) -> str:
    """``"00042"`` for shard 42 (img2dataset's 5-digit names)."""
    return f"{index:05d}"


def tar_name(shard: str) -> str:
    return f"{shard}.tar"


def sidecar_name(shard: str) -> str:
    return f"{shard}.parquet"


def stats_name(shard: str) -> str:
    return f"{shard}_stats.json"


class BadDropName(ValueError):
    """A landing folder whose name cannot be a partition key."""


def validate_drop_name(name: str) -> str:
    """Return ``name`` if it is a safe drop (partition) key, else raise :class:`BadDropName` naming it.

    Allowed: 1-128 characters of letters, digits, ``. _ - =``, starting with a letter or digit, and no ``..``
    (so it can never escape the warehouse folder or be confused with a hidden/staging folder).
    """
    if not isinstance(name, str) or not DROP_NAME_RE.match(name) or ".." in name:
        raise BadDropName(
            f"bad drop name {name!r}: use 1-128 characters of letters, digits, '.', '_', '-', '=' "
            "starting with a letter or digit, without '..' or path separators"
        )
    return name


Location = Path | str  # a local path, or an object-store URL kept as str


def is_store(location: str | os.PathLike) -> bool:
    """True for an object-store URL (``s3://...``): only a ``str`` can be one (a Path would have folded ``//``)."""
    return isinstance(location, str) and fs.is_remote(location)


def as_location(location: str | os.PathLike) -> Location:
    """A store URL unchanged (without a trailing ``/``; ValueError naming a malformed one), else a ``Path``."""
    if is_store(location):
        fs.resolve(location)  # a malformed URL fails here, by name
        return location.rstrip("/")
    return Path(location)


def entry_name(location: str | os.PathLike) -> str:
    """The last component of a drop's location (the drop name): ``Path.name``, or the URL's last segment."""
    loc = as_location(location)
    return loc.rsplit("/", 1)[-1] if isinstance(loc, str) else loc.name


def child(location: str | os.PathLike, name: str) -> Location:
    """``location / name`` for a local path, ``fs.join`` for a store URL."""
    loc = as_location(location)
    return fs.join(loc, name) if isinstance(loc, str) else loc / name


def _store_files(url: str) -> dict[str, pafs.FileInfo]:
    """Name -> FileInfo of the files (not prefixes) directly under a store prefix; {} when there is none."""
    fsys, path = fs.resolve(url)
    try:
        infos = fsys.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    except OSError as e:
        raise OSError(f"cannot list {url}: {e}") from e
    return {i.base_name: i for i in infos if i.type == pafs.FileType.File}


def link_problem(drop_dir: Location) -> str | None:
    """Why ``drop_dir`` cannot be ingested because it is a symbolic link, or None when it is not one (never for a
    store URL: object stores have no links)."""
    if is_store(drop_dir):
        as_location(drop_dir)
        return None
    drop_dir = Path(drop_dir)
    if drop_dir.is_symlink():
        return (f"landing entry {drop_dir.name!r} is a symbolic link (to {drop_dir.readlink()}): links are "
                "skipped; copy or move the drop into the landing folder")
    return None


@dataclass(frozen=True)
class DropStatus:
    """One landing entry. ``name_error`` says why it can never be a partition under this name (an unsafe
    name, or a symbolic link); such an entry is never complete."""

    name: str
    path: Location  # a local Path, or the drop's store URL (str)
    shards: tuple[str, ...]
    finished_shards: tuple[str, ...]
    has_success_marker: bool
    name_error: str | None = None

    @property
    def complete(self) -> bool:
        if self.name_error is not None or not self.shards:
            return False
        return self.has_success_marker or set(self.shards) == set(self.finished_shards)


def _store_shards(files: dict[str, pafs.FileInfo]) -> list[str]:
    return sorted(m.group(1) for name in files if (m := SHARD_RE.match(name)))


def shard_ids(drop_dir: Location) -> list[str]:
    """Sorted shard ids (``"00000"``...) of the tars in a drop folder (or under a drop's store prefix)."""
    if is_store(drop_dir):
        return _store_shards(_store_files(as_location(drop_dir)))
    out = []
    for p in Path(drop_dir).iterdir():
        m = SHARD_RE.match(p.name)
        if m and p.is_file():
            out.append(m.group(1))
    return sorted(out)


def _store_drop_status(url: str) -> DropStatus:
    """:func:`drop_status` of a drop on a store, from one listing of its prefix."""
    name = entry_name(url)
    err = None
    try:
        validate_drop_name(name)
    except BadDropName as e:
        err = str(e)
    files = _store_files(url)
    shards = _store_shards(files)
    return DropStatus(name=name, path=url, shards=tuple(shards),
                      finished_shards=tuple(s for s in shards if stats_name(s) in files),
                      has_success_marker=SUCCESS_MARKER in files, name_error=err)


def drop_status(drop_dir: Location) -> DropStatus:
    if is_store(drop_dir):
        return _store_drop_status(as_location(drop_dir))
    drop_dir = Path(drop_dir)
    err = link_problem(drop_dir)
    if err is None:
        try:
            validate_drop_name(drop_dir.name)
        except BadDropName as e:
            err = str(e)
    shards = [] if drop_dir.is_symlink() else shard_ids(drop_dir)
    finished = [s for s in shards if (drop_dir / stats_name(s)).is_file()]
    return DropStatus(
        name=drop_dir.name,
        path=drop_dir,
        shards=tuple(shards),
        finished_shards=tuple(finished),
        has_success_marker=(drop_dir / SUCCESS_MARKER).exists(),
        name_error=err,
    )


def scan_landing(landing: Location) -> list[DropStatus]:
    """Every candidate drop folder in the landing folder (hidden folders ignored), sorted by name.

    On a store, the drops are the prefixes directly under the landing URL (one listing, then one per drop); a
    landing prefix that holds nothing yet gives no drops, as a missing local folder does.
    """
    if is_store(landing):
        url = as_location(landing)
        fsys, path = fs.resolve(url)
        try:
            infos = fsys.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
        except OSError as e:
            raise OSError(f"cannot list the landing area {url}: {e}") from e
        names = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)
        return [_store_drop_status(fs.join(url, n)) for n in names if not n.startswith((".", "_"))]
    landing = Path(landing)
    if not landing.is_dir():
        return []
    return [
        drop_status(p)
        for p in sorted(landing.iterdir())
        if p.is_dir() and not p.name.startswith((".", "_"))
    ]


EDGE_BYTES = 1 << 16  # bytes hashed at each end of a tar


def drop_fingerprint(drop_dir: Location) -> str:
    """Content identity of a drop: sha256 over, per shard in order, each file's name and size, the full bytes of
    its sidecar and stats files, and the first and last 64 KiB of its tar; then whether ``_SUCCESS`` exists.

    img2dataset's sidecar holds every image's sha256, so a drop re-landed with other images changes it; reading
    64 KiB per tar end instead of the whole tar keeps this cheap on large drops. A drop on a store gives the
    same fingerprint as the same files on local disk (two ranged reads per tar, whole reads of the small files).
    """
    if is_store(drop_dir):
        return _store_fingerprint(as_location(drop_dir))
    drop_dir = Path(drop_dir)
    h = hashlib.sha256()
    for shard in shard_ids(drop_dir):
        for name in (tar_name(shard), sidecar_name(shard), stats_name(shard)):
            p = drop_dir / name
            if not p.is_file():
                h.update(f"{name}:absent\n".encode())
                continue
            size = p.stat().st_size
            h.update(f"{name}:{size}\n".encode())
            with open(p, "rb") as f:
                if name.endswith(".tar"):
                    h.update(f.read(EDGE_BYTES))
                    f.seek(max(size - EDGE_BYTES, 0))
                    h.update(f.read(EDGE_BYTES))
                else:
                    h.update(f.read())
    h.update(f"{SUCCESS_MARKER}:{(drop_dir / SUCCESS_MARKER).exists()}\n".encode())
    return h.hexdigest()


def _store_fingerprint(url: str) -> str:
    h = hashlib.sha256()
    files = _store_files(url)
    for shard in _store_shards(files):
        for name in (tar_name(shard), sidecar_name(shard), stats_name(shard)):
            info = files.get(name)
            if info is None:
                h.update(f"{name}:absent\n".encode())
                continue
            size = info.size
            h.update(f"{name}:{size}\n".encode())
            obj = fs.join(url, name)
            if name.endswith(".tar"):
                with fs.open_input_file(obj) as fh:
                    h.update(fs.read_at(fh, obj, 0, min(EDGE_BYTES, size)))
                    tail = max(size - EDGE_BYTES, 0)
                    h.update(fs.read_at(fh, obj, tail, size - tail))
            else:
                h.update(fs.read_bytes(obj))
    h.update(f"{SUCCESS_MARKER}:{SUCCESS_MARKER in files}\n".encode())
    return h.hexdigest()


def drop_signature(drop_dir: Location) -> str:
    """A cheap stand-in for :func:`drop_fingerprint` (file metadata only): sha256 over each file's name, size and
    modification time in nanoseconds. Equal signatures mean nothing was rewritten; a different one means the
    content may have changed (the fingerprint then decides). On a store the time is the object's last-modified
    time from the listing (S3 gives it to the second), so one listing signs the whole drop."""
    h = hashlib.sha256()
    if is_store(drop_dir):
        for name, info in sorted(_store_files(as_location(drop_dir)).items()):
            h.update(f"{name}:{info.size}:{info.mtime_ns}\n".encode())
        return h.hexdigest()
    for p in sorted(Path(drop_dir).iterdir()):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
