"""Ingestion of one drop into ``raw_pairs`` (kept rows) and ``rejected_pairs`` (rows with their reason).

Invariant, per shard and per drop: rows seen = rows kept + rows rejected. A *row* is a sample of the shard's tar
(members grouped by key, folder included), a sidecar row that no tar sample matched, a sidecar row repeating a
key or lacking one, or a shard-level row when something unreadable may hide rows. Every tar sample and every
sidecar row is seen exactly once.

Rejection reasons (column ``reason``; ``detail`` says more):

============================  ====================================================================
``status_not_success``        the sidecar (or per-sample json) says the download did not succeed
``missing_image``             no image member for the key
``undecodable_image``         the bytes are no known image, or do not decode (corrupt, truncated)
``unsupported_image_format``  the content is an image other than jpg/png/webp, or animated
``image_too_large``           width x height over the cap (read from the header, before decoding)
``missing_caption``           no .txt member and no caption in the json or sidecar
``empty_caption``             the caption is empty or whitespace
``caption_not_utf8``          the caption bytes are not valid UTF-8
``caption_too_long``          the caption has more characters than the cap
``bad_json``                  the {key}.json is not a UTF-8 JSON object of valid text
``member_name_not_utf8``      a member name of the sample is not UTF-8
``bad_uid``                   the carried uid (json or sidecar) is not 32 hex characters
``uid_mismatch``              the json and the sidecar carry different uids
``truncated_tar``             the tar ends (or breaks) inside this sample, or before a sample the sidecar lists
``duplicate_uid``             the same (image, caption), or the same carried uid, already appeared in this drop
``duplicate_member``          the key holds two image members (the sample is ambiguous)
``duplicate_key``             the key's members are not adjacent in the tar (a second group of the key)
``duplicate_sidecar_key``     a further sidecar row for a key (the first success row, else the first, is used)
``missing_key``               a sidecar row without a key
``unreadable_sidecar``        the sidecar Parquet cannot be read: one row per sample its stats count but the tar
                              lacks, or one shard-level row when the stats give no count (and a warning)
============================  ====================================================================

The uid of a kept row is the sample's own (DataComp) uid when its json or sidecar carries one, else its content
uid (:mod:`clip_assets.io.uid`); ``content_uid`` is always the content hash. Beside the rows, the raw_pairs
partition holds ``_drop.json``: the drop's content fingerprint (:func:`~clip_assets.io.drops.drop_fingerprint`),
its cheap file signature, a unique ingest id and counts, committed together with both tables; :func:`relanded`
compares the landing folder with it (the landing sensor and the catch-up schedule request a re-run on a change).

A drop may lie on an object store (``drop_dir`` an ``s3://...`` URL as ``str``): it is listed and read through
:mod:`clip_assets.io.fs`, and its rows' ``tar_path`` is the tar's URL, so later stages read images by ranged reads
of the store. The warehouse stays local.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa

from clip_assets.io.commit import SCRATCH_GRACE_S, StagedDir, clean_stale, stage_dirs
from clip_assets.io.drops import (
    Sample, ShardEnd, Sidecar, drop_fingerprint, drop_signature, drop_status, iter_shard, link_problem, parse_meta, read_sidecar,
    read_stats, tar_name, validate_drop_name,
)
from clip_assets.io.drops.layout import Location, child, entry_name, is_store
from clip_assets.io.images import MAX_PIXELS, check_image
from clip_assets.io.uid import carried_uid, compute_uid
from clip_assets.io.warehouse import partition_dir

log = logging.getLogger(__name__)

REJECT_REASONS = frozenset({
    "status_not_success", "missing_image", "undecodable_image", "unsupported_image_format", "image_too_large",
    "missing_caption", "empty_caption", "caption_not_utf8", "caption_too_long", "bad_json",
    "member_name_not_utf8", "bad_uid", "uid_mismatch", "truncated_tar", "duplicate_uid", "duplicate_member",
    "duplicate_key", "duplicate_sidecar_key", "missing_key", "unreadable_sidecar",
})

RAW_PAIRS_SCHEMA = pa.schema([
    ("uid", pa.string()), ("drop", pa.string()), ("shard", pa.string()), ("key", pa.string()),
    ("caption", pa.string()), ("url", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("image_sha256", pa.string()), ("image_format", pa.string()), ("tar_path", pa.string()),
    ("member", pa.string()), ("offset", pa.int64()), ("size", pa.int64()), ("content_uid", pa.string()),
])

REJECTED_SCHEMA = pa.schema([
    ("drop", pa.string()), ("shard", pa.string()), ("key", pa.string()), ("uid", pa.string()),
    ("caption", pa.string()), ("reason", pa.string()), ("detail", pa.string()), ("tar_path", pa.string()),
    ("member", pa.string()),
])

DROP_FILE = "_drop.json"
STALE_AFTER_S = SCRATCH_GRACE_S  # scratch younger than this may belong to a run in flight: left alone


class RefusedDrop(ValueError):
    """A landing entry that is never ingested (a symbolic link); the message says what to do."""


@dataclass(frozen=True)
class IngestLimits:
    """What one sample may cost: image pixels (checked from the header) and caption characters."""

    max_pixels: int = MAX_PIXELS
    max_caption_chars: int = 10_000


@dataclass
class ShardCounts:
    shard: str
    seen: int = 0
    kept: int = 0
    rejected: int = 0
    tar_error: str | None = None
    sidecar_error: str | None = None


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
    fingerprint: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return self.seen == self.kept + self.rejected


@dataclass
class _DropState:
    drop: str
    limits: IngestLimits
    result: IngestResult
    uids: set[str] = field(default_factory=set)
    content_uids: set[str] = field(default_factory=set)


class _ShardRows:
    """The kept and rejected rows of one shard, and its counts."""

    def __init__(self, st: _DropState, shard: str, tar_path: Location):
        self.st, self.shard, self.tar_path = st, shard, str(tar_path)
        self.counts = ShardCounts(shard=shard)
        self.kept: dict[str, list] = {n: [] for n in RAW_PAIRS_SCHEMA.names}
        self.rej: dict[str, list] = {n: [] for n in REJECTED_SCHEMA.names}

    def reject(self, key, reason, detail, uid=None, caption=None, member=None) -> None:
        values = (self.st.drop, self.shard, key, uid, caption, reason, detail, self.tar_path, member)
        for n, v in zip(REJECTED_SCHEMA.names, values):
            self.rej[n].append(v)
        self.counts.rejected += 1
        self.st.result.reasons[reason] = self.st.result.reasons.get(reason, 0) + 1

    def keep(self, values: tuple) -> None:
        for n, v in zip(RAW_PAIRS_SCHEMA.names, values):
            self.kept[n].append(v)
        self.counts.kept += 1


def ingest_drop(
    drop_dir: Location,
    home: Path | None = None,
    progress: Callable[[ShardCounts, int, int], None] | None = None,
    limits: IngestLimits = IngestLimits(),
) -> IngestResult:
    """Ingest every shard of ``drop_dir`` into the warehouse, replacing any earlier rows of this drop.

    Streams one sample at a time; the drop's ``raw_pairs`` and ``rejected_pairs`` partitions are staged and
    committed together (after a crash at any step both are old or both new). Scratch left by killed runs beside
    them is cleaned first. A symbolic link is refused (:class:`RefusedDrop`): the partition is named after the
    landing entry, never after a link's target. ``drop_dir`` may be a store URL (``str``).
    """
    drop_dir = drop_dir.rstrip("/") if is_store(drop_dir) else Path(drop_dir).absolute()
    if (why := link_problem(drop_dir)) is not None:
        raise RefusedDrop(why)
    drop = validate_drop_name(entry_name(drop_dir))
    signature = drop_signature(drop_dir)
    result = IngestResult(drop=drop, fingerprint=drop_fingerprint(drop_dir))
    t0 = time.perf_counter()
    finals = [partition_dir("raw_pairs", drop, home), partition_dir("rejected_pairs", drop, home)]
    for f in finals:
        clean_stale(f.parent, older_than_s=STALE_AFTER_S)
    state = _DropState(drop, limits, result)
    shards = drop_status(drop_dir).shards
    with stage_dirs(finals, versioned=True) as (kept_w, rej_w):
        for i, shard in enumerate(shards):
            counts = _ingest_shard(drop_dir, shard, state, kept_w, rej_w)
            result.shards.append(counts)
            if progress is not None:
                progress(counts, i + 1, len(shards))
        kept_w.write_json(DROP_FILE, {"drop": drop, "fingerprint": result.fingerprint, "signature": signature,
                                      "ingest_id": uuid.uuid4().hex, "shards": list(shards),
                                      "seen": result.seen, "kept": result.kept, "rejected": result.rejected})
    result.seconds = time.perf_counter() - t0
    return result


def ingest_record(drop: str, home: Path | None = None) -> dict | None:
    """The ``_drop.json`` written when ``drop`` was last ingested (fingerprint, signature, ingest_id, counts), or
    None (never ingested, or unreadable)."""
    path = partition_dir("raw_pairs", drop, home) / DROP_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def ingested_fingerprint(drop: str, home: Path | None = None) -> str | None:
    """The fingerprint recorded when ``drop`` was last ingested, or None (never ingested, or before fingerprints)."""
    return (ingest_record(drop, home) or {}).get("fingerprint")


def drop_changed(drop_dir: Location, home: Path | None = None) -> bool:
    """True when the landing drop's content differs from what was ingested under its name (or is not recorded)."""
    return ingested_fingerprint(entry_name(drop_dir), home) != drop_fingerprint(drop_dir)


@dataclass(frozen=True)
class Reland:
    """A drop ingested before whose landing folder now holds other content."""

    drop: str
    ingest_id: str  # of the ingest whose content is now out of date
    fingerprint: str  # of the landing folder now


def relanded(drop_dir: Location, home: Path | None = None) -> Reland | None:
    """A :class:`Reland` when ``drop_dir`` was ingested before under its name and its content changed since; None
    when it was never ingested (with a fingerprint) or is unchanged. The full fingerprint is computed only when
    the cheap :func:`~clip_assets.io.drops.drop_signature` differs from the recorded one."""
    name = entry_name(drop_dir)
    rec = ingest_record(name, home)
    if not rec or "fingerprint" not in rec or rec.get("signature") == drop_signature(drop_dir):
        return None
    fp = drop_fingerprint(drop_dir)
    return None if fp == rec["fingerprint"] else Reland(name, str(rec.get("ingest_id", "")), fp)


def _ingest_shard(drop_dir: Location, shard: str, st: _DropState, kept_w: StagedDir, rej_w: StagedDir
                  ) -> ShardCounts:
    tar_path = child(drop_dir, tar_name(shard))
    side = read_sidecar(drop_dir, shard)
    rows = _ShardRows(st, shard, tar_path)
    by_key = _match_sidecar(side, rows)
    tar_keys: set[str] = set()
    for item in iter_shard(tar_path):
        if isinstance(item, ShardEnd):
            rows.counts.tar_error = item.error
            break
        rows.counts.seen += 1
        if item.key in tar_keys:
            rows.reject(item.key, "duplicate_key", "the key's members are not adjacent: a second group of it",
                        member=item.image_member)
            continue
        tar_keys.add(item.key)
        _judge(item, by_key.get(item.key), st, rows)
    _sidecar_only(by_key, tar_keys, rows)
    if side.error is not None:
        _sidecar_unreadable(drop_dir, side, rows)
    elif rows.counts.tar_error is not None and rows.counts.seen == 0:
        # Nothing readable and no sidecar to say what was lost: record the shard itself as one rejected row.
        rows.counts.seen += 1
        rows.reject(None, "truncated_tar", rows.counts.tar_error)
    kept_w.write_table(f"part-{shard}.parquet", pa.table(rows.kept, schema=RAW_PAIRS_SCHEMA))
    rej_w.write_table(f"part-{shard}.parquet", pa.table(rows.rej, schema=REJECTED_SCHEMA))
    c = rows.counts
    st.result.seen += c.seen
    st.result.kept += c.kept
    st.result.rejected += c.rejected
    return c


def _match_sidecar(side: Sidecar, rows: _ShardRows) -> dict[str, dict]:
    """One sidecar row per key (its first success row, else its first row); other rows are rejected here."""
    by_key: dict[str, dict] = {}
    for r in side.rows:
        key = r.get("key")
        if key is None or str(key) == "":
            rows.counts.seen += 1
            rows.reject(None, "missing_key", f"sidecar row without a key (url={r.get('url')!r})",
                        caption=r.get("caption"))
            continue
        key = str(key)
        prev = by_key.get(key)
        if prev is None:
            by_key[key] = r
            continue
        if prev.get("status") != "success" and r.get("status") == "success":
            by_key[key], r = r, prev
        rows.counts.seen += 1
        rows.reject(key, "duplicate_sidecar_key", f"the sidecar lists key {key!r} again (status={r.get('status')!r})",
                    caption=r.get("caption"))
    return by_key


def _sidecar_only(by_key: dict[str, dict], tar_keys: set[str], rows: _ShardRows) -> None:
    """Rows the sidecar lists but the tar never delivered: failed downloads, or lost to a damaged tar."""
    for key in sorted(set(by_key) - tar_keys):
        srow = by_key[key]
        rows.counts.seen += 1
        status = srow.get("status") or "unknown"
        if status != "success":
            rows.reject(key, "status_not_success", f"status={status!r} error={srow.get('error_message')!r}",
                        caption=srow.get("caption"))
        elif rows.counts.tar_error is not None:
            rows.reject(key, "truncated_tar", f"listed as success but not reached: {rows.counts.tar_error}",
                        caption=srow.get("caption"))
        else:
            rows.reject(key, "missing_image", "listed as success in the sidecar but absent from the tar",
                        caption=srow.get("caption"))


def _sidecar_unreadable(drop_dir: Location, side: Sidecar, rows: _ShardRows) -> None:
    """Record an unreadable sidecar: a warning, and rows for what the stats say it may have hidden."""
    c = rows.counts
    c.sidecar_error = side.error
    msg = f"drop {rows.st.drop} shard {c.shard}: sidecar unreadable ({side.error})"
    log.warning(msg)
    rows.st.result.warnings.append(msg)
    count = (read_stats(drop_dir, c.shard) or {}).get("count")
    if not isinstance(count, int) or isinstance(count, bool):
        c.seen += 1
        rows.reject(None, "unreadable_sidecar", f"{msg}; the stats give no count: rows listed only there are lost")
        return
    missing = count - c.seen
    for i in range(missing):
        c.seen += 1
        rows.reject(None, "unreadable_sidecar",
                    f"{msg}; stats count {count} but the tar holds {count - missing}: missing row {i + 1}/{missing}")


def _judge(s: Sample, srow: dict | None, st: _DropState, rows: _ShardRows) -> None:
    """Keep the sample, or reject it with the first reason that applies (the order of the module table)."""
    side = srow or {}
    if s.problems:
        rows.reject(s.key, *s.problems[0], member=s.image_member)
        return
    meta, bad = parse_meta(s.meta_bytes)
    if bad is not None:
        rows.reject(s.key, "bad_json", bad, member=s.image_member)
        return
    status = side.get("status") or meta.get("status") or "success"
    if status != "success":
        err = side.get("error_message") or meta.get("error_message")
        rows.reject(s.key, "status_not_success", f"status={status!r} error={err!r}", member=s.image_member)
        return
    if s.image is None:
        rows.reject(s.key, "missing_image", "no .jpg/.png/.webp member for this key")
        return
    caption, problem = _caption_of(s, meta, srow, st.limits.max_caption_chars)
    if problem is None:
        uid, problem = carried_uid(meta.get("uid"), side.get("uid"))
    if problem is None:
        img = check_image(s.image, st.limits.max_pixels)
        if img.reason is not None:
            problem = (img.reason, img.detail)
    if problem is not None:
        rows.reject(s.key, *problem, caption=caption, member=s.image_member)
        return
    content_uid = compute_uid(s.image, caption)
    uid = uid or content_uid
    if content_uid in st.content_uids or uid in st.uids:
        what = "(image, caption)" if content_uid in st.content_uids else "carried uid"
        rows.reject(s.key, "duplicate_uid", f"{what} of uid {uid} already ingested in this drop", uid, caption,
                    s.image_member)
        return
    st.uids.add(uid)
    st.content_uids.add(content_uid)
    rows.keep((uid, st.drop, rows.shard, s.key, caption, side.get("url") or meta.get("url"), img.width, img.height,
               hashlib.sha256(s.image).hexdigest(), img.format, rows.tar_path, s.image_member, s.image_offset,
               s.image_size, content_uid))
    st.result.image_bytes += s.image_size or 0


def _caption_of(s: Sample, meta: dict, side: dict | None, max_chars: int
                ) -> tuple[str | None, tuple[str, str] | None]:
    raw = s.caption_bytes
    if raw is None:
        fallback = meta.get("caption") if meta else None
        if fallback is None and side is not None:
            fallback = side.get("caption")
        if fallback is None:
            return None, ("missing_caption", "no .txt member and no caption in json/sidecar")
        caption = str(fallback)
    else:
        if len(raw) > 4 * max_chars:  # more bytes than any max_chars-character UTF-8 text can have
            return None, ("caption_too_long", f"{len(raw)} bytes > {max_chars} characters")
        try:
            caption = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, ("caption_not_utf8", f"{e}")
    if not caption.strip():
        return None, ("empty_caption", f"caption is {caption!r}")
    caption = caption.strip()
    if len(caption) > max_chars:
        return None, ("caption_too_long", f"{len(caption)} characters > {max_chars}")
    return caption, None
