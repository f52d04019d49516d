"""Writing shards in img2dataset's layout (synthetic drops and webdataset exports share this writer).

The tar is written with the standard library's ``tarfile`` rather than webdataset's TarWriter: we need USTAR
members with fixed metadata (mtime 0, uid/gid 0, no user names, mode 0o444) so the same samples give the same
bytes, and the reader's pointers depend on plain tar layout; TarWriter would add a dependency, set its own user
names and encode whole sample dicts, and offers nothing else we use. Every file lands in a
:class:`~clip_assets.io.commit.StagedDir`, so a shard is only ever seen inside a finished folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pyarrow as pa

from clip_assets.io.commit import StagedDir
from clip_assets.io.drops.layout import SIDECAR_SCHEMA, shard_id, sidecar_name, stats_name, tar_name

TAR_MODE = 0o444


def success_row(key: str, caption: str, url: str, width: int, height: int, image: bytes,
                sha256: str | None = None, **extra) -> dict:
    """The sidecar / ``{key}.json`` row of a sample written whole: img2dataset's columns in their order
    (``status`` success, the size as original size, ``sha256`` of ``image`` unless given), then ``extra``."""
    return {"caption": caption, "url": url, "key": key, "status": "success", "error_message": None,
            "width": width, "height": height, "original_width": width, "original_height": height, "exif": None,
            "sha256": sha256 or hashlib.sha256(image).hexdigest(), **extra}


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append one member with fixed metadata (mtime 0, root, 0o444) so the same bytes give the same tar."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = TAR_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


class ShardWriter:
    """One shard in a staged folder: ``add`` samples to ``NNNNN.tar``; ``close`` writes the sidecar then stats.

    Each sample becomes ``{key}.{ext}``, ``{key}.txt`` and ``{key}.json`` (the ``meta`` dict, indent 4, in its
    key order); the sidecar holds one row of ``meta`` per sample under ``schema`` (img2dataset's columns, plus any
    extra columns a caller appends).
    """

    def __init__(self, stage: StagedDir, index: int, schema: pa.Schema = SIDECAR_SCHEMA):
        self.stage, self.shard, self.schema = stage, shard_id(index), schema
        self.rows: list[dict] = []
        self._tar = tarfile.open(stage.path(tar_name(self.shard)), "w", format=tarfile.USTAR_FORMAT)

    def add(self, key: str, image: bytes, ext: str, caption: str, meta: dict) -> None:
        add_tar_member(self._tar, f"{key}.{ext}", image)
        add_tar_member(self._tar, f"{key}.txt", caption.encode("utf-8"))
        add_tar_member(self._tar, f"{key}.json", json.dumps(meta, indent=4).encode("utf-8"))
        self.rows.append(meta)

    def close(self, start_time: float, end_time: float) -> int:
        """Finish the tar, write the sidecar and then ``NNNNN_stats.json`` (img2dataset's counts); return rows."""
        self._tar.close()
        self.stage.write_table(sidecar_name(self.shard), pa.Table.from_pylist(self.rows, schema=self.schema))
        n = len(self.rows)
        stats = {"count": n, "successes": n, "failed_to_download": 0, "failed_to_resize": 0,
                 "duration": end_time - start_time, "start_time": start_time, "end_time": end_time,
                 "status_dict": {"success": n}}
        self.stage.write_bytes(stats_name(self.shard), json.dumps(stats, indent=4).encode("utf-8"))
        return n

    def abort(self) -> None:
        self._tar.close()
