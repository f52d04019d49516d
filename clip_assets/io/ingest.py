"""Ingestion of one drop into ``raw_pairs`` (kept rows) and ``rejected_pairs`` (rows with their reason).

Invariant, per shard and per drop: rows seen = rows kept + rows rejected. A *row* is a key that appears in the
shard's tar or in its sidecar Parquet (img2dataset lists failed downloads in the sidecar only).

Rejection reasons (column ``reason``; ``detail`` says more):

=====================  ==========================================================================
``status_not_success`` the sidecar (or per-sample json) says the download did not succeed
``missing_image``      no image member for the key
``undecodable_image``  the image bytes do not decode (corrupt, truncated, wrong format)
``missing_caption``    no .txt member and no caption in the json
``empty_caption``      the caption is empty or whitespace
``caption_not_utf8``   the caption bytes are not valid UTF-8
``truncated_tar``      the tar ends (or breaks) inside this sample, or before a sample the sidecar lists
``duplicate_uid``      the same (image, caption) already appeared earlier in this drop
``duplicate_member``   the key holds two image members (the sample is ambiguous)
=====================  ==========================================================================
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
from PIL import Image

from clip_assets.io.drops import (
    ShardEnd,
    Sample,
    drop_status,
    iter_shard,
    parse_meta,
    read_sidecar,
    validate_drop_name,
)
from clip_assets.io.uid import compute_uid
from clip_assets.io.commit import stage_dir
from clip_assets.io.warehouse import partition_dir

REJECT_REASONS = frozenset({
    "status_not_success", "missing_image", "undecodable_image", "missing_caption", "empty_caption",
    "caption_not_utf8", "truncated_tar", "duplicate_uid", "duplicate_member",
})

RAW_PAIRS_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("drop", pa.string()),
        ("shard", pa.string()),
        ("key", pa.string()),
        ("caption", pa.string()),
        ("url", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("image_sha256", pa.string()),
        ("image_format", pa.string()),
        ("tar_path", pa.string()),
        ("member", pa.string()),
        ("offset", pa.int64()),
        ("size", pa.int64()),
    ]
)

REJECTED_SCHEMA = pa.schema(
    [
        ("drop", pa.string()),
        ("shard", pa.string()),
        ("key", pa.string()),
        ("uid", pa.string()),
        ("caption", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("tar_path", pa.string()),
        ("member", pa.string()),
    ]
)

Image.MAX_IMAGE_PIXELS = 50_000_000  # a decompression bomb is rejected, not decoded


@dataclass
class ShardCounts:
    shard: str
    seen: int = 0
    kept: int = 0
    rejected: int = 0
    tar_error: str | None = None


@dataclass
class IngestResult:
    drop: str
    seen: int = 0
    kept: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    shards: list[ShardCounts] = field(default_factory=list)
    seconds: float = 0.0
    image_bytes: int = 0

    @property
    def balanced(self) -> bool:
        return self.seen == self.kept + self.rejected


def _decode_check(data: bytes) -> tuple[int, int, str | None]:
    """Fully decode an image; return (width, height, error or None)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.width, im.height, None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a data problem, not a crash
        return 0, 0, f"{type(e).__name__}: {e}"


def _caption_of(sample: Sample, meta: dict, side: dict | None) -> tuple[str | None, tuple[str, str] | None]:
    raw = sample.caption_bytes
    if raw is None:
        fallback = meta.get("caption") if meta else None
        if fallback is None and side is not None:
            fallback = side.get("caption")
        if fallback is None:
            return None, ("missing_caption", "no .txt member and no caption in json/sidecar")
        caption = str(fallback)
    else:
        try:
            caption = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, ("caption_not_utf8", f"{e}")
    if not caption.strip():
        return None, ("empty_caption", f"caption is {caption!r}")
    return caption.strip(), None


def ingest_drop(
    drop_dir: Path,
    home: Path | None = None,
    progress: Callable[[ShardCounts, int, int], None] | None = None,
) -> IngestResult:
    """Ingest every shard of ``drop_dir`` into the warehouse, replacing any earlier rows of this drop.

    Streams one sample at a time; the warehouse partitions of ``raw_pairs`` and ``rejected_pairs`` are staged and
    swapped in together at the end (a crash leaves the previous state visible, never a partial one).
    """
    drop_dir = Path(drop_dir).resolve()
    drop = validate_drop_name(drop_dir.name)
    status = drop_status(drop_dir)
    result = IngestResult(drop=drop)
    t0 = time.perf_counter()
    seen_uids: set[str] = set()
    kept_w = stage_dir(partition_dir("raw_pairs", drop, home))
    rej_w = stage_dir(partition_dir("rejected_pairs", drop, home))
    try:
        for i, shard in enumerate(status.shards):
            counts = _ingest_shard(drop_dir, drop, shard, seen_uids, kept_w, rej_w, result)
            result.shards.append(counts)
            if progress is not None:
                progress(counts, i + 1, len(status.shards))
        kept_w.commit()
        rej_w.commit()
    except BaseException:
        kept_w.abort()
        rej_w.abort()
        raise
    result.seconds = time.perf_counter() - t0
    return result


def _ingest_shard(drop_dir, drop, shard, seen_uids, kept_w, rej_w, result) -> ShardCounts:
    tar_path = drop_dir / f"{shard}.tar"
    side = read_sidecar(drop_dir, shard)
    counts = ShardCounts(shard=shard)
    kept: dict[str, list] = {n: [] for n in RAW_PAIRS_SCHEMA.names}
    rej: dict[str, list] = {n: [] for n in REJECTED_SCHEMA.names}
    tar_keys: set[str] = set()

    def reject(key, reason, detail, uid=None, caption=None, member=None):
        for n, v in zip(
            REJECTED_SCHEMA.names, (drop, shard, key, uid, caption, reason, detail, str(tar_path), member)
        ):
            rej[n].append(v)
        counts.rejected += 1
        result.reasons[reason] = result.reasons.get(reason, 0) + 1

    for item in iter_shard(tar_path):
        if isinstance(item, ShardEnd):
            counts.tar_error = item.error
            break
        s: Sample = item
        tar_keys.add(s.key)
        counts.seen += 1
        srow = side.get(s.key) if side is not None else None
        meta = parse_meta(s.meta_bytes)
        if s.problems:
            reason, detail = s.problems[0]
            reject(s.key, reason, detail, member=s.image_member)
            continue
        status = (srow or {}).get("status") or meta.get("status") or "success"
        if status != "success":
            err = (srow or {}).get("error_message") or meta.get("error_message")
            reject(s.key, "status_not_success", f"status={status!r} error={err!r}", member=s.image_member)
            continue
        if s.image is None:
            reject(s.key, "missing_image", "no .jpg/.png/.webp member for this key")
            continue
        caption, problem = _caption_of(s, meta, srow)
        if problem is not None:
            reject(s.key, *problem, member=s.image_member)
            continue
        width, height, err = _decode_check(s.image)
        if err is not None:
            reject(s.key, "undecodable_image", err, caption=caption, member=s.image_member)
            continue
        uid = compute_uid(s.image, caption)
        if uid in seen_uids:
            reject(s.key, "duplicate_uid", f"uid {uid} already ingested in this drop", uid, caption, s.image_member)
            continue
        seen_uids.add(uid)
        row = (
            uid, drop, shard, s.key, caption, (srow or {}).get("url") or meta.get("url"), width, height,
            hashlib.sha256(s.image).hexdigest(), "jpg" if s.image_ext == "jpeg" else s.image_ext,
            str(tar_path), s.image_member, s.image_offset, s.image_size,
        )
        for n, v in zip(RAW_PAIRS_SCHEMA.names, row):
            kept[n].append(v)
        counts.kept += 1
        result.image_bytes += s.image_size or 0

    # Rows the sidecar lists but the tar never delivered: failed downloads, or lost to a damaged tar.
    if side is not None:
        for key in sorted(set(side) - tar_keys):
            srow = side[key]
            counts.seen += 1
            status = srow.get("status") or "unknown"
            if status != "success":
                reject(key, "status_not_success", f"status={status!r} error={srow.get('error_message')!r}",
                       caption=srow.get("caption"))
            elif counts.tar_error is not None:
                reject(key, "truncated_tar", f"listed as success but not reached: {counts.tar_error}",
                       caption=srow.get("caption"))
            else:
                reject(key, "missing_image", "listed as success in the sidecar but absent from the tar",
                       caption=srow.get("caption"))
    elif counts.tar_error is not None and counts.seen == 0:
        # Nothing readable and no sidecar to say what was lost: record the shard itself as one rejected row.
        counts.seen += 1
        reject(None, "truncated_tar", counts.tar_error)

    kept_w.write_table(f"part-{shard}.parquet", pa.table(kept, schema=RAW_PAIRS_SCHEMA))
    rej_w.write_table(f"part-{shard}.parquet", pa.table(rej, schema=REJECTED_SCHEMA))
    result.seen += counts.seen
    result.kept += counts.kept
    result.rejected += counts.rejected
    return counts
