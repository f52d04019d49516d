"""The drop format, in one place: img2dataset's webdataset layout as read by ingestion and training and written by
the synthetic world and the webdataset export.

* :mod:`.layout`  shard names (``SHARD_RE``), ``IMAGE_EXTS``, ``SIDECAR_SCHEMA``, ``POINTER_SCHEMA`` /
  ``POINTER_COLUMNS``, drop names and status, symbolic links, ``drop_fingerprint`` / ``drop_signature``; a location is a local path or a store URL (``is_store``, ``child``,
  ``entry_name``).
* :mod:`.reader`  the validating tar reader ``iter_shard``, ``read_sidecar``, ``read_stats``, ``parse_meta``,
  ``read_pointer`` (bytes by pointer, with a handle cache), the pointer index ``index_shard`` / ``index_drop``.
* :mod:`.writer`  ``ShardWriter`` (tar, sidecar, stats), ``success_row`` (a written sample's sidecar row), ``add_tar_member``.
"""

from clip_assets.io.drops.layout import (
    IMAGE_EXTS, MODEL_INPUT_COLUMNS, POINTER_COLUMNS, POINTER_SCHEMA, SHARD_RE, SIDECAR_SCHEMA, SUCCESS_MARKER, BadDropName,
    DropStatus, Location, as_location, child, entry_name, is_store, drop_fingerprint, drop_signature, drop_status, link_problem, scan_landing, shard_id, shard_ids, sidecar_name,
    stats_name, tar_name, validate_drop_name,
)
from clip_assets.io.drops.reader import (
    Sample, ShardEnd, Sidecar, close_handles, index_drop, index_shard, iter_shard, parse_meta, read_pointer,
    read_pointers, read_sidecar, read_stats, split_member,
)
from clip_assets.io.drops.writer import ShardWriter, add_tar_member, success_row

__all__ = [
    "IMAGE_EXTS", "MODEL_INPUT_COLUMNS", "POINTER_COLUMNS", "POINTER_SCHEMA", "SHARD_RE", "SIDECAR_SCHEMA", "SUCCESS_MARKER",
    "BadDropName", "DropStatus", "Location", "as_location", "child", "entry_name", "is_store", "Sample", "ShardEnd", "ShardWriter", "Sidecar", "add_tar_member", "success_row",
    "close_handles", "drop_fingerprint", "drop_signature", "drop_status", "index_drop", "index_shard", "iter_shard", "link_problem",
    "parse_meta", "read_pointer", "read_pointers", "read_sidecar", "read_stats", "scan_landing", "shard_id", "shard_ids",
    "sidecar_name", "split_member", "stats_name", "tar_name", "validate_drop_name",
]
