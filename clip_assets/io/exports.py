"""Curated subsets in the warehouse, and their exports: DataComp uid .npy, Parquet manifest, webdataset reshard.

Warehouse layout of the ``curated_subsets`` asset (swapped in as a whole, so decisions and summary always match)::

    <home>/warehouse/curated_subsets/subset_summary.parquet             one row per subset (pool, kept, threshold..)
    <home>/warehouse/curated_subsets/subset=<name>/part-00000.parquet   uid, drop, keep, reason (one row per pool row)

Exports of one subset (only its kept rows), each published through :mod:`clip_assets.io.commit`, so a reader
never sees a partial export and a failed export leaves the previous one intact:

* ``<out>/<subset>.npy``: DataComp's subset format: a structured array of dtype ``np.dtype("u8,u8")`` whose fields
  f0, f1 are the high and low unsigned 64-bit halves of each 128-bit uid (``int(uid[:16], 16)``,
  ``int(uid[16:], 16)``), sorted ascending (lexicographic on (f0, f1), i.e. by uid), one entry per uid;
* ``<out>/<subset>.parquet``: a manifest: uid, drop, shard, key, caption, url, every score of pair_scores and
  kl_stats, model_id, reference_id; sorted by uid;
* ``<out>/<subset>/``: a webdataset reshard in img2dataset's layout: ``NNNNN.tar`` with ``{key}.jpg|png|webp``,
  ``{key}.txt`` and ``{key}.json``, a sidecar ``NNNNN.parquet`` with img2dataset's columns (plus uid and the
  source drop/shard/key), and ``NNNNN_stats.json`` written last per shard. Image bytes are copied from the drops'
  tars through raw_pairs' pointers (tar_path, offset, size) and checked against raw_pairs' sha256, never
  re-encoded, so the uids of the reshard equal the subset's uids and the folder ingests as a drop.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets.config import exports_dir
from clip_assets.io import fs
from clip_assets.io.catalog import load_sql, partition_files, scratch
from clip_assets.io.commit import (
    PARQUET_COMPRESSION, StagedDir, clean_stale, publishing, resolve, stage_dir, write_npy,
)
from clip_assets.io.drops import SIDECAR_SCHEMA, SUCCESS_MARKER, ShardWriter, close_handles, read_pointer, success_row
from clip_assets.io.tables import drops_with
from clip_assets.io.warehouse import asset_dir

SUBSETS_ASSET = "curated_subsets"
SUMMARY_FILE = "subset_summary.parquet"
DECISIONS_FILE = "part-00000.parquet"
FORMATS = ("npy", "parquet", "webdataset")
UID_DTYPE = np.dtype("u8,u8")  # DataComp's subset dtype: fields f0 (high 64 bits), f1 (low 64 bits)

# img2dataset's sidecar columns, then ours (uid and where the sample came from).
EXPORT_SIDECAR_SCHEMA = pa.schema(
    list(SIDECAR_SCHEMA) + [pa.field(n, pa.string()) for n in ("uid", "source_drop", "source_shard", "source_key")])
STALE_AFTER_S = 6 * 3600  # export scratch younger than this may belong to a run in flight


class UnknownSubset(KeyError):
    """A subset name that curated_subsets has not materialized; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class ExportError(RuntimeError):
    """An export that cannot be completed (e.g. an image changed in the landing folder since ingestion)."""


# ------------------------------------------------------------------------------------------------ layout
def subsets_dir(home: Path | None = None) -> Path:
    return asset_dir(SUBSETS_ASSET, home)


def summary_path(home: Path | None = None) -> Path:
    return resolve(subsets_dir(home)) / SUMMARY_FILE  # on a store, in the version the pointer names


def decisions_path(subset: str, root: Path) -> Path:
    """Decisions file of ``subset`` below ``root`` (the curated_subsets folder, or a staging copy of it)."""
    return fs.location(root) / f"subset={subset}" / DECISIONS_FILE


def read_summary(home: Path | None = None) -> pa.Table | None:
    p = summary_path(home)
    return fs.read_table(p) if p.is_file() else None


def known_subsets(home: Path | None = None) -> list[str]:
    t = read_summary(home)
    return [] if t is None else list(t["subset"].to_pylist())


def resolve_subset(subset: str, home: Path | None = None) -> Path:
    """The decisions file of a materialized subset, or UnknownSubset naming it and listing the known ones."""
    known = known_subsets(home)
    if not known:
        raise UnknownSubset(
            f"unknown subset {subset!r}: no curated subsets yet in {subsets_dir(home)}; materialize "
            f"curated_subsets first (e.g. clip-assets materialize --select key:curated_subsets)")
    if subset not in known:
        raise UnknownSubset(f"unknown subset {subset!r}; known subsets: {', '.join(known)}")
    path = decisions_path(subset, resolve(subsets_dir(home)))
    if not path.is_file():
        raise UnknownSubset(f"subset {subset!r} is in the summary but {path} is missing: re-materialize "
                            "curated_subsets")
    return path


def _files(asset: str, home: Path | None) -> list[str]:
    return [f for d in drops_with(asset, home) for f in partition_files(asset, d, home)]


def _source_params(subset: str, home: Path | None) -> dict:
    files = {a: _files(a, home) for a in ("raw_pairs", "pair_scores", "kl_stats")}
    empty = [a for a, fs in files.items() if not fs]
    if empty:
        raise ExportError(f"cannot export {subset!r}: the warehouse has no {empty[0]} files")
    return {"decisions": str(resolve_subset(subset, home)), "raw_files": files["raw_pairs"],
            "pair_files": files["pair_scores"], "kl_files": files["kl_stats"]}


# ------------------------------------------------------------------------------------------------ uids
def uids_to_datacomp(uids) -> np.ndarray:
    """32-hex-char uids -> DataComp's sorted structured array (dtype "u8,u8": high, low 64-bit halves).

    Vectorised: the hex text of all uids is decoded at once and read as big-endian 64-bit words, which is exactly
    ``(int(uid[:16], 16), int(uid[16:], 16))`` per uid. Raises ValueError on a uid that is not 32 hex chars.
    """
    uids = list(uids)
    bad = next((u for u in uids if not isinstance(u, str) or len(u) != 32), None)
    if bad is not None:
        raise ValueError(f"uid must be 32 hex characters, got {bad!r}")
    try:
        raw = bytes.fromhex("".join(uids))
    except ValueError as e:
        raise ValueError(f"a uid is not hexadecimal: {e}") from None
    words = np.frombuffer(raw, dtype=">u8").reshape(-1, 2)
    out = np.empty(len(uids), dtype=UID_DTYPE)
    out["f0"], out["f1"] = words[:, 0], words[:, 1]
    out.sort()  # lexicographic on (f0, f1) = ascending 128-bit uid
    return out


def datacomp_to_uids(arr: np.ndarray) -> list[str]:
    """Inverse of :func:`uids_to_datacomp` (in the array's order)."""
    return [f"{int(hi):016x}{int(lo):016x}" for hi, lo in zip(arr["f0"], arr["f1"])]


# ------------------------------------------------------------------------------------------------ writers
@dataclass
class ExportResult:
    subset: str
    format: str
    path: Path
    rows: int
    shards: int = 0
    seconds: float = 0.0


def export_npy(subset: str, out_dir: Path, home: Path | None = None) -> ExportResult:
    """``<out_dir>/<subset>.npy`` in DataComp's format (see the module docstring)."""
    t0 = time.perf_counter()
    decisions = resolve_subset(subset, home)
    with scratch() as con:
        uids = con.execute(load_sql("queries/curate_export_uids"), {"decisions": str(decisions)}).fetchall()
    arr = uids_to_datacomp(u for (u,) in uids)
    out = fs.location(out_dir) / f"{subset}.npy"
    clean_stale(out.parent, older_than_s=STALE_AFTER_S)
    write_npy(out, arr)
    return ExportResult(subset, "npy", out, len(arr), seconds=time.perf_counter() - t0)


def export_parquet(subset: str, out_dir: Path, home: Path | None = None) -> ExportResult:
    """``<out_dir>/<subset>.parquet``: the manifest of the kept rows (see the module docstring)."""
    t0 = time.perf_counter()
    params = _source_params(subset, home)
    out = fs.location(out_dir) / f"{subset}.parquet"
    clean_stale(out.parent, older_than_s=STALE_AFTER_S)
    with scratch() as con, publishing(out) as tmp:
        con.sql(load_sql("queries/curate_export_manifest"), params=params).write_parquet(
            str(tmp), compression=PARQUET_COMPRESSION)
        rows = pq.ParquetFile(tmp).metadata.num_rows
    return ExportResult(subset, "parquet", out, rows, seconds=time.perf_counter() - t0)




def _read_image(handles: dict, row: dict) -> bytes:
    """A kept row's image bytes through its raw_pairs pointer, checked against the recorded sha256."""
    try:
        data = read_pointer(row["tar_path"], row["offset"], row["size"], handles)
    except OSError as e:
        raise ExportError(f"cannot read {row['tar_path']}: {e} (was the drop moved from the landing folder?)"
                          ) from None
    sha = hashlib.sha256(data).hexdigest()
    if row["image_sha256"] and sha != row["image_sha256"]:
        raise ExportError(
            f"image of uid {row['uid']} (drop {row['drop']}, key {row['key']}) changed since ingestion: "
            f"sha256 {sha} != {row['image_sha256']} in raw_pairs; re-ingest drop {row['drop']}")
    return data


def _iter_rows(reader: pa.RecordBatchReader) -> Iterator[dict]:
    for batch in reader:
        yield from batch.to_pylist()


def export_webdataset(subset: str, out_dir: Path, home: Path | None = None, samples_per_shard: int = 10_000
                      ) -> ExportResult:
    """``<out_dir>/<subset>/``: the kept samples resharded in img2dataset's webdataset layout.

    Keys are ``{shard:05d}{index:0Wd}`` (W = 4, or more for larger shards), unique in the export. The folder is
    built in a hidden staging folder beside it and swapped in on success.
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    t0 = time.perf_counter()
    params = _source_params(subset, home)
    width = max(4, len(str(samples_per_shard - 1)))
    final = fs.location(out_dir) / subset
    clean_stale(final.parent, older_than_s=STALE_AFTER_S)
    images: dict = {}
    state = {"shard": 0, "rows": 0}
    try:
        # plain: tools that read the export know nothing of pointers; on a store the shards go below the folder's
        # own name and _SUCCESS (img2dataset's "the drop is finished" marker) is uploaded last
        with scratch() as con, stage_dir(final, plain=True, marker=SUCCESS_MARKER) as writer:
            ((expected,),) = con.execute(load_sql("queries/curate_export_count"),
                                         {"decisions": params["decisions"]}).fetchall()
            rel = con.sql(load_sql("queries/curate_export_samples"),
                          params={"decisions": params["decisions"], "raw_files": params["raw_files"]})
            rows = _iter_rows(rel.to_arrow_reader(4096))
            while not _export_shard(writer, state, rows, images, samples_per_shard, width):
                pass
            if state["rows"] != expected:
                raise ExportError(f"subset {subset!r} keeps {expected} rows but only {state['rows']} have a "
                                  "raw_pairs row: re-ingest the drops whose raw_pairs are missing")
            writer.write_bytes(SUCCESS_MARKER, b"")
    finally:
        close_handles(images)
    return ExportResult(subset, "webdataset", final, state["rows"], shards=state["shard"],
                        seconds=time.perf_counter() - t0)


def _export_shard(writer: StagedDir, state: dict, rows: Iterator[dict], images: dict,
                 samples_per_shard: int, width: int) -> bool:
    """Write the next shard (tar, sidecar, stats last) from ``rows``; True when ``rows`` is exhausted."""
    first = next(rows, None)
    if first is None:
        return True
    shard = ShardWriter(writer, state["shard"], EXPORT_SIDECAR_SCHEMA)
    start = time.time()
    row, i = first, 0
    try:
        while row is not None:
            key = f"{shard.shard}{i:0{width}d}"
            data = _read_image(images, row)
            meta = success_row(key, row["caption"], row["url"], row["width"], row["height"], data,
                               row["image_sha256"], uid=row["uid"], source_drop=row["drop"],
                               source_shard=row["shard"], source_key=row["key"])
            shard.add(key, data, row["image_format"] or "jpg", row["caption"], meta)
            i += 1
            row = next(rows, None) if i < samples_per_shard else None
    except BaseException:
        shard.abort()
        raise
    n = shard.close(start, time.time())
    state["shard"] += 1
    state["rows"] += n
    return i < samples_per_shard


def export_subset(subset: str, fmt: str, out_dir: Path | None = None, home: Path | None = None,
                  samples_per_shard: int = 10_000) -> ExportResult:
    """Export one subset in ``fmt`` (npy | parquet | webdataset) to ``out_dir`` (default <home>/exports)."""
    out = fs.location(out_dir) if out_dir else exports_dir(home)
    if fmt == "npy":
        return export_npy(subset, out, home)
    if fmt == "parquet":
        return export_parquet(subset, out, home)
    if fmt == "webdataset":
        return export_webdataset(subset, out, home, samples_per_shard)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
