"""Drops: folders of img2dataset webdataset shards in ``<home>/landing/<drop>/``.

Layout of one drop (img2dataset's ``output_format="webdataset"``)::

    00000.tar            {key}.jpg|png|webp, {key}.txt (caption), {key}.json (per-sample metadata)
    00000.parquet        sidecar: caption, url, key, status, error_message, width, height,
                         original_width, original_height, exif, sha256 (one row per attempted sample)
    00000_stats.json     written last, when the shard is finished
    _SUCCESS             optional marker: the whole drop is finished

A drop is *complete* when ``_SUCCESS`` exists or every ``NNNNN.tar`` has its ``NNNNN_stats.json``.

Reading is streaming: :func:`iter_shard` walks one tar member by member with the standard library's
``tarfile`` (chosen over webdataset here because we need each member's byte offset for zero-copy pointers and
fine-grained control over truncated archives: every sample read before the damage is kept, every sample after it
is reported, nothing is silently lost).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
SHARD_RE = re.compile(r"^(\d{5,})\.tar$")
DROP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$")


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


@dataclass(frozen=True)
class DropStatus:
    name: str
    path: Path
    shards: tuple[str, ...]
    finished_shards: tuple[str, ...]
    has_success_marker: bool
    name_error: str | None = None

    @property
    def complete(self) -> bool:
        if self.name_error is not None or not self.shards:
            return False
        return self.has_success_marker or set(self.shards) == set(self.finished_shards)


def shard_ids(drop_dir: Path) -> list[str]:
    """Sorted shard ids (``"00000"``...) of the tars in a drop folder."""
    out = []
    for p in Path(drop_dir).iterdir():
        m = SHARD_RE.match(p.name)
        if m and p.is_file():
            out.append(m.group(1))
    return sorted(out)


def drop_status(drop_dir: Path) -> DropStatus:
    drop_dir = Path(drop_dir)
    try:
        validate_drop_name(drop_dir.name)
        err = None
    except BadDropName as e:
        err = str(e)
    shards = shard_ids(drop_dir)
    finished = [s for s in shards if (drop_dir / f"{s}_stats.json").is_file()]
    return DropStatus(
        name=drop_dir.name,
        path=drop_dir,
        shards=tuple(shards),
        finished_shards=tuple(finished),
        has_success_marker=(drop_dir / "_SUCCESS").exists(),
        name_error=err,
    )


def scan_landing(landing: Path) -> list[DropStatus]:
    """Every candidate drop folder in the landing folder (hidden folders ignored), sorted by name."""
    landing = Path(landing)
    if not landing.is_dir():
        return []
    return [
        drop_status(p)
        for p in sorted(landing.iterdir())
        if p.is_dir() and not p.name.startswith((".", "_"))
    ]


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


def _split_member(name: str) -> tuple[str, str]:
    base = name.rsplit("/", 1)[-1]
    if "." not in base:
        return base, ""
    key, ext = base.split(".", 1)
    return key, ext.lower()


def iter_shard(tar_path: Path) -> Iterator[Sample | ShardEnd]:
    """Stream the samples of one tar (consecutive members with the same key), then one :class:`ShardEnd`.

    A damaged archive (truncated, bad header) ends the stream with ``ShardEnd(error=...)``; a sample whose
    member data is cut short carries a ``truncated_tar`` problem. Nothing is read twice and memory holds one
    sample at a time.
    """
    current: Sample | None = None
    error: str | None = None
    try:
        tf = tarfile.open(tar_path, mode="r:")
    except (tarfile.TarError, OSError, EOFError) as e:
        yield ShardEnd(error=f"cannot open tar: {type(e).__name__}: {e}")
        return
    with tf:
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
            key, ext = _split_member(ti.name)
            if current is not None and key != current.key:
                yield current
                current = None
            if current is None:
                current = Sample(key=key)
            try:
                fobj = tf.extractfile(ti)
                data = fobj.read() if fobj is not None else b""
            except (tarfile.TarError, OSError, EOFError) as e:
                current.problems.append(("truncated_tar", f"member {ti.name}: {type(e).__name__}: {e}"))
                error = f"tar damaged inside member {ti.name}"
                break
            if len(data) != ti.size:
                current.problems.append(
                    ("truncated_tar", f"member {ti.name} has {len(data)} of {ti.size} bytes")
                )
                error = f"tar truncated inside member {ti.name}"
                break
            if ext in IMAGE_EXTS:
                if current.image is not None:
                    current.problems.append(("duplicate_member", f"second image member {ti.name}"))
                    continue
                current.image, current.image_ext = data, ext
                current.image_member, current.image_offset, current.image_size = ti.name, ti.offset_data, ti.size
            elif ext == "txt":
                current.caption_bytes = data
            elif ext == "json":
                current.meta_bytes = data
    if current is not None:
        yield current
    yield ShardEnd(error=error)


TAR_MODE = 0o444


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append one member with fixed metadata (mtime 0, root, 0644) so the same bytes give the same tar."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = TAR_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def read_sidecar(drop_dir: Path, shard: str) -> dict[str, dict] | None:
    """The shard's img2dataset sidecar Parquet as ``{key: row}``, or None when it is missing/unreadable."""
    path = Path(drop_dir) / f"{shard}.parquet"
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except Exception:  # noqa: BLE001 - a broken sidecar is reported by the caller, never fatal
        return None
    rows = table.to_pylist()
    return {str(r.get("key")): r for r in rows if r.get("key") is not None}


def read_member_bytes(tar_path: str | Path, offset: int, size: int) -> bytes:
    """Bytes of one tar member given the pointer stored in raw_pairs (no tar parsing)."""
    with open(tar_path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise OSError(f"{tar_path}: expected {size} bytes at offset {offset}, got {len(data)}")
    return data


def parse_meta(meta_bytes: bytes | None) -> dict:
    if not meta_bytes:
        return {}
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}
