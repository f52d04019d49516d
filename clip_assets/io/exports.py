"""Curated subsets in the warehouse, and their exports: DataComp uid .npy, Parquet manifest, webdataset reshard.

Warehouse layout of the ``curated_subsets`` asset (swapped in as a whole, so decisions and summary always match)::

    <home>/warehouse/curated_subsets/subset_summary.parquet             one row per subset (pool, kept, threshold..)
    <home>/warehouse/curated_subsets/subset=<name>/part-00000.parquet   uid, drop, keep, reason (one row per pool row)

Exports of one subset (only its kept rows), each written to a temporary name and renamed into place, so a reader
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
import json
import os
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets.config import exports_dir
from clip_assets.io.catalog import load_sql
from clip_assets.io.drops import add_tar_member
from clip_assets.io.tables import drops_with
from clip_assets.io.commit import PARQUET_COMPRESSION, StagedDir, stage_dir
from clip_assets.io.warehouse import asset_dir, partition_dir

SUBSETS_ASSET = "curated_subsets"
SUMMARY_FILE = "subset_summary.parquet"
DECISIONS_FILE = "part-00000.parquet"
FORMATS = ("npy", "parquet", "webdataset")
UID_DTYPE = np.dtype("u8,u8")  # DataComp's subset dtype: fields f0 (high 64 bits), f1 (low 64 bits)

# img2dataset's sidecar columns, then ours (uid and where the sample came from).
SIDECAR_SCHEMA = pa.schema([
    ("caption", pa.string()), ("url", pa.string()), ("key", pa.string()), ("status", pa.string()),
    ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("original_width", pa.int32()), ("original_height", pa.int32()), ("exif", pa.string()),
    ("sha256", pa.string()),
    ("uid", pa.string()), ("source_drop", pa.string()), ("source_shard", pa.string()), ("source_key", pa.string()),
])


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
    return subsets_dir(home) / SUMMARY_FILE


def decisions_path(subset: str, root: Path) -> Path:
    """Decisions file of ``subset`` below ``root`` (the curated_subsets folder, or a staging copy of it)."""
    return Path(root) / f"subset={subset}" / DECISIONS_FILE


def read_summary(home: Path | None = None) -> pa.Table | None:
    p = summary_path(home)
    return pq.read_table(p) if p.is_file() else None


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
    path = decisions_path(subset, subsets_dir(home))
    if not path.is_file():
        raise UnknownSubset(f"subset {subset!r} is in the summary but {path} is missing: re-materialize "
                            "curated_subsets")
    return path


def _files(asset: str, home: Path | None) -> list[str]:
    return [str(f) for d in drops_with(asset, home) for f in sorted(partition_dir(asset, d, home).glob("*.parquet"))]


def _source_params(subset: str, home: Path | None) -> dict:
    files = {a: _files(a, home) for a in ("raw_pairs", "pair_scores", "kl_stats")}
    empty = [a for a, fs in files.items() if not fs]
    if empty:
        raise ExportError(f"cannot export {subset!r}: the warehouse has no {empty[0]} files")
    return {"decisions": str(resolve_subset(subset, home)), "raw_files": files["raw_pairs"],
            "pair_files": files["pair_scores"], "kl_files": files["kl_stats"]}


def _con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"preserve_insertion_order": False})
    con.execute("SET enable_progress_bar = false")
    return con


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
def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


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
    con = _con()
    try:
        uids = con.execute(load_sql("queries/curate_export_uids"), {"decisions": str(decisions)}).fetchall()
    finally:
        con.close()
    arr = uids_to_datacomp(u for (u,) in uids)
    out = Path(out_dir) / f"{subset}.npy"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(out)
    try:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(subset, "npy", out, len(arr), seconds=time.perf_counter() - t0)


def export_parquet(subset: str, out_dir: Path, home: Path | None = None) -> ExportResult:
    """``<out_dir>/<subset>.parquet``: the manifest of the kept rows (see the module docstring)."""
    t0 = time.perf_counter()
    params = _source_params(subset, home)
    out = Path(out_dir) / f"{subset}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(out)
    con = _con()
    try:
        con.sql(load_sql("queries/curate_export_manifest"), params=params).write_parquet(
            str(tmp), compression=PARQUET_COMPRESSION)
        rows = pq.ParquetFile(tmp).metadata.num_rows
        os.replace(tmp, out)
    finally:
        con.close()
        tmp.unlink(missing_ok=True)
    return ExportResult(subset, "parquet", out, rows, seconds=time.perf_counter() - t0)




class _ImageReader:
    """Reads image bytes through raw_pairs' pointers, keeping the current tar open (rows come in tar order)."""

    def __init__(self):
        self.path: str | None = None
        self.f = None

    def read(self, tar_path: str, offset: int, size: int) -> bytes:
        if tar_path != self.path:
            self.close()
            try:
                self.f = open(tar_path, "rb")
            except OSError as e:
                raise ExportError(f"cannot open {tar_path}: {e} (was the drop moved from the landing folder?)"
                                  ) from None
            self.path = tar_path
        self.f.seek(offset)
        data = self.f.read(size)
        if len(data) != size:
            raise ExportError(f"{tar_path}: expected {size} bytes at offset {offset}, got {len(data)}")
        return data

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
        self.f, self.path = None, None


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
    final = Path(out_dir) / subset
    writer = stage_dir(final)
    images = _ImageReader()
    con = _con()
    state = {"shard": 0, "rows": 0}
    try:
        ((expected,),) = con.execute(load_sql("queries/curate_export_count"),
                                     {"decisions": params["decisions"]}).fetchall()
        rel = con.sql(load_sql("queries/curate_export_samples"),
                      params={"decisions": params["decisions"], "raw_files": params["raw_files"]})
        rows = _iter_rows(rel.to_arrow_reader(4096))
        done = False
        while not done:
            done = _write_shard(writer, state, rows, images, samples_per_shard, width)
        if state["rows"] != expected:
            raise ExportError(f"subset {subset!r} keeps {expected} rows but only {state['rows']} have a raw_pairs "
                              "row: re-ingest the drops whose raw_pairs are missing")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        images.close()
        con.close()
    return ExportResult(subset, "webdataset", final, state["rows"], shards=state["shard"],
                        seconds=time.perf_counter() - t0)


def _write_shard(writer: StagedDir, state: dict, rows: Iterator[dict], images: _ImageReader,
                 samples_per_shard: int, width: int) -> bool:
    """Write the next shard (tar, sidecar, stats last) from ``rows``; True when ``rows`` is exhausted."""
    first = next(rows, None)
    if first is None:
        return True
    sid = f"{state['shard']:05d}"
    start = time.time()
    sidecar: list[dict] = []
    tar_path = writer.staging / f"{sid}.tar"
    exhausted = False
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        row = first
        for i in range(samples_per_shard):
            if i > 0:
                row = next(rows, None)
                if row is None:
                    exhausted = True
                    break
            key = f"{sid}{i:0{width}d}"
            data = images.read(row["tar_path"], row["offset"], row["size"])
            sha = hashlib.sha256(data).hexdigest()
            if row["image_sha256"] and sha != row["image_sha256"]:
                raise ExportError(
                    f"image of uid {row['uid']} (drop {row['drop']}, key {row['key']}) changed since ingestion: "
                    f"sha256 {sha} != {row['image_sha256']} in raw_pairs; re-ingest drop {row['drop']}")
            meta = {
                "caption": row["caption"], "url": row["url"], "key": key, "status": "success",
                "error_message": None, "width": row["width"], "height": row["height"],
                "original_width": row["width"], "original_height": row["height"], "exif": None, "sha256": sha,
                "uid": row["uid"], "source_drop": row["drop"], "source_shard": row["shard"],
                "source_key": row["key"],
            }
            ext = row["image_format"] or "jpg"
            add_tar_member(tar, f"{key}.{ext}", data)
            add_tar_member(tar, f"{key}.txt", row["caption"].encode("utf-8"))
            add_tar_member(tar, f"{key}.json", json.dumps(meta, indent=4).encode("utf-8"))
            sidecar.append(meta)
    writer.write_table(f"{sid}.parquet", pa.Table.from_pylist(sidecar, schema=SIDECAR_SCHEMA))
    end = time.time()
    n = len(sidecar)
    stats = {"count": n, "successes": n, "failed_to_download": 0, "failed_to_resize": 0,
             "duration": end - start, "start_time": start, "end_time": end, "status_dict": {"success": n}}
    (writer.staging / f"{sid}_stats.json").write_text(json.dumps(stats, indent=4))
    state["shard"] += 1
    state["rows"] += n
    return exhausted


def export_subset(subset: str, fmt: str, out_dir: Path | None = None, home: Path | None = None,
                  samples_per_shard: int = 10_000) -> ExportResult:
    """Export one subset in ``fmt`` (npy | parquet | webdataset) to ``out_dir`` (default <home>/exports)."""
    out = Path(out_dir) if out_dir else exports_dir(home)
    if fmt == "npy":
        return export_npy(subset, out, home)
    if fmt == "parquet":
        return export_parquet(subset, out, home)
    if fmt == "webdataset":
        return export_webdataset(subset, out, home, samples_per_shard)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
