"""Embed image-text pairs through raw_pairs' byte pointers into per-shard Parquet (resumable, memory bounded).

Input: raw_pairs rows of one drop (a folder of ``part-<shard>.parquet`` files, or a list of per-shard tables):
``uid, shard, caption, image_format, tar_path, offset, size`` (image bytes = ``tar_path[offset:offset+size]``).

Output: ``<out_dir>/part-<shard>.parquet`` per input shard, rows in input order, written atomically::

    uid        string
    image_emb  fixed_size_list<float16>[d]   L2-normalised image embedding u_x
    text_emb   fixed_size_list<float16>[d]   L2-normalised text embedding v_y
    model_id   string                        LoadedModel.model_id_str (also in the file's key-value metadata)

Pipeline (one pass over the drop, shard by shard, batch by batch):

* DataLoader workers (``workers``; 0 = in process) take whole shards round-robin, read the image bytes through
  the pointers and tokenize the captions, and either decode + preprocess with the model's own open_clip eval
  transform (``decode="pil"``) or ship the raw bytes (``decode="torch"``);
* ``decode="torch"``: the main process decodes a batch with ``torchvision.io.decode_jpeg`` *on the model's device*
  (nvJPEG on CUDA; PNG/WebP go through ``decode_image`` on CPU), then resizes (shortest side, bicubic, antialias),
  centre-crops and normalises there. ``decode="auto"`` picks "torch" on CUDA and "pil" on CPU;
* the model runs under ``torch.inference_mode`` (autocast on CUDA with the chosen precision); embeddings are
  L2-normalised in float32 and stored as float16;
* a shard's file is written as soon as its last batch is done. Memory holds at most ~``workers + 1`` shards'
  embeddings plus the DataLoader prefetch, whatever the drop size.

Resumable: a shard whose output exists and is valid (same row count, same uids in the same order, same model id,
same dimension) is skipped, so a killed run re-run recomputes only the missing shards; batches are formed per
shard from its first row, so results do not depend on which shards were skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from clip_assets.io.commit import write_table
from clip_assets.io.drops import read_pointer
from clip_assets.models.loading import LoadedModel, torch_threads

POINTER_COLUMNS = ("uid", "caption", "image_format", "tar_path", "offset", "size")
_PART_RE = re.compile(r"^part-(.+)\.parquet$")
META_MODEL_ID = b"clip_assets.model_id"
META_MODEL = b"clip_assets.model"
DECODE_MODES = ("auto", "pil", "torch")

ProgressFn = Callable[[int, int, float], Any]  # (shards_done, shards_total, images_per_s)


def embedding_schema(dim: int) -> pa.Schema:
    """Schema of an embeddings Parquet file for embedding dimension ``dim``."""
    return pa.schema(
        [
            pa.field("uid", pa.string(), nullable=False),
            pa.field("image_emb", pa.list_(pa.float16(), dim)),
            pa.field("text_emb", pa.list_(pa.float16(), dim)),
            pa.field("model_id", pa.string()),
        ]
    )


@dataclass
class EmbedResult:
    """Summary of an :func:`embed_drop` run (also what an asset would put in its metadata)."""

    model_id: str
    shards_total: int
    shards_written: int
    shards_skipped: int
    rows_total: int  # rows across all shards (written + skipped)
    rows_written: int
    seconds: float
    images_per_s: float  # rows_written / seconds
    files: list[Path] = field(default_factory=list)  # every shard's output, in shard order
    written: list[str] = field(default_factory=list)  # shard ids computed this run
    skipped: list[str] = field(default_factory=list)  # shard ids whose valid output was kept

    def to_metadata(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "shards_total": self.shards_total,
            "shards_written": self.shards_written,
            "shards_skipped": self.shards_skipped,
            "rows_total": self.rows_total,
            "rows_written": self.rows_written,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 1),
        }


# ----------------------------------------------------------------------------------------------------------------
# input shards


@dataclass
class _Shard:
    shard: str
    source: Any  # a Path to a Parquet file, or an in-memory pa.Table
    out_path: Path
    n_rows: int = 0
    uid_digest: str = ""  # sha256 over the shard's uids in order (the rows themselves are not held)


def _as_arrow(t: Any) -> pa.Table:
    if isinstance(t, pa.Table):
        return t
    if hasattr(t, "to_arrow"):  # polars DataFrame
        return t.to_arrow()
    raise TypeError(f"expected a pyarrow Table or polars DataFrame of raw_pairs rows, got {type(t).__name__}")


def _shard_of_table(t: pa.Table, fallback: str | None) -> str:
    if "shard" in t.column_names and t.num_rows:
        vals = pc.unique(t.column("shard")).to_pylist()
        if len(vals) != 1:
            raise ValueError(f"a shard table must hold exactly one shard, got shards {vals[:5]}")
        return str(vals[0])
    if fallback is None:
        raise ValueError("cannot tell the shard id of a table without a 'shard' column (or rows)")
    return fallback


def _collect_shards(source: Any, out_dir: Path) -> list[_Shard]:
    """raw_pairs folder / list of Parquet paths / list of tables -> shard descriptors (no row data held)."""
    items: list[Any]
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"raw_pairs folder {folder} does not exist")
        items = sorted(p for p in folder.iterdir() if p.is_file() and _PART_RE.match(p.name))
        if not items:
            raise FileNotFoundError(f"no part-<shard>.parquet files in {folder}")
    elif isinstance(source, (pa.Table,)) or hasattr(source, "to_arrow"):
        items = [source]
    else:
        items = list(source)
    shards: list[_Shard] = []
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            m = _PART_RE.match(path.name)
            uids_tbl = pq.read_table(path, columns=["uid", "shard"] if _has_col(path, "shard") else ["uid"])
            shard = _shard_of_table(uids_tbl, m.group(1) if m else None)
            src: Any = path
        else:
            tbl = _as_arrow(item)
            missing = [c for c in POINTER_COLUMNS if c not in tbl.column_names]
            if missing:
                raise ValueError(f"shard table {i} lacks raw_pairs columns {missing}")
            shard = _shard_of_table(tbl, f"{i:05d}")
            uids_tbl = tbl.select(["uid"])
            src = tbl.select(list(POINTER_COLUMNS))
        shards.append(_Shard(shard, src, out_dir / f"part-{shard}.parquet", uids_tbl.num_rows, _uid_digest(uids_tbl)))
        del uids_tbl
    seen: set[str] = set()
    for s in shards:
        if s.shard in seen:
            raise ValueError(f"shard {s.shard!r} appears twice in the input")
        seen.add(s.shard)
    return shards


def _has_col(path: Path, col: str) -> bool:
    return col in pq.read_schema(path).names


def _uid_digest(t: pa.Table | Sequence[str]) -> str:
    uids = t.column("uid").to_pylist() if isinstance(t, pa.Table) else list(t)
    h = hashlib.sha256()
    for u in uids:
        h.update(str(u).encode())
        h.update(b"\n")
    return h.hexdigest()


def shard_output_valid(out_path: str | os.PathLike, uids: Sequence[str], model_id: str, dim: int | None = None) -> bool:
    """True if ``out_path`` is a complete embeddings file for exactly these uids (in order) and this model."""
    return _output_valid(out_path, len(uids), _uid_digest(uids), model_id, dim)


def _output_valid(out_path: str | os.PathLike, n_rows: int, digest: str, model_id: str, dim: int | None) -> bool:
    out_path = Path(out_path)
    if not out_path.is_file():
        return False
    try:
        pf = pq.ParquetFile(out_path)
        if pf.metadata.num_rows != n_rows:
            return False
        meta = pf.schema_arrow.metadata or {}
        if meta.get(META_MODEL_ID, b"").decode() != model_id:
            return False
        if dim is not None and pf.schema_arrow.field("image_emb").type.list_size != dim:
            return False
        return _uid_digest(pf.read(columns=["uid"])) == digest
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------------------------
# worker side


class _ShardBatches(torch.utils.data.IterableDataset):
    """Yields batches of whole shards; worker k takes shards k, k + n_workers, ..."""

    def __init__(self, shards: list[_Shard], batch_size: int, mode: str, preprocess: Callable, tokenizer: Callable):
        self.shards = [(s.shard, s.source) for s in shards]
        self.batch_size = batch_size
        self.mode = mode
        self.preprocess = preprocess
        self.tokenizer = tokenizer

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        fh: dict[str, Any] = {}
        try:
            for k in range(wid, len(self.shards), nw):
                shard, source = self.shards[k]
                tbl = source if isinstance(source, pa.Table) else pq.read_table(source, columns=list(POINTER_COLUMNS))
                cols = {c: tbl.column(c).to_pylist() for c in POINTER_COLUMNS}
                n = tbl.num_rows
                n_batches = -(-n // self.batch_size)
                for b in range(n_batches):
                    lo, hi = b * self.batch_size, min(n, (b + 1) * self.batch_size)
                    yield self._batch(shard, b, n_batches, cols, lo, hi, fh)
        finally:
            for f in fh.values():
                f.close()

    def _batch(self, shard: str, b: int, n_batches: int, cols: dict[str, list], lo: int, hi: int, fh: dict) -> dict:
        datas = [read_pointer(cols["tar_path"][i], cols["offset"][i], cols["size"][i], fh) for i in range(lo, hi)]
        out: dict[str, Any] = {
            "shard": shard,
            "batch": b,
            "n_batches": n_batches,
            "uids": cols["uid"][lo:hi],
            "tokens": self.tokenizer(cols["caption"][lo:hi]),
        }
        if self.mode == "pil":
            imgs = []
            for j, d in enumerate(datas):
                try:
                    imgs.append(_pil_preprocess(self.preprocess, d))
                except Exception as e:
                    i = lo + j
                    raise RuntimeError(
                        f"shard {shard}: cannot decode image of uid {cols['uid'][i]} ({cols['tar_path'][i]} at byte "
                        f"{cols['offset'][i]}, {cols['size'][i]} bytes): {type(e).__name__}: {e}. raw_pairs should "
                        f"only point at images that decoded at ingestion; re-ingest this drop"
                    ) from e
            out["images"] = torch.stack(imgs)
        else:
            # one contiguous blob per batch: a single shared-memory tensor crosses the worker queue, not B small ones
            out["blob"] = torch.frombuffer(bytearray(b"".join(datas)), dtype=torch.uint8) if datas else torch.empty(0, dtype=torch.uint8)
            out["lengths"] = [len(d) for d in datas]
            out["formats"] = cols["image_format"][lo:hi]
        return out


def _pil_preprocess(preprocess: Callable, data: bytes) -> torch.Tensor:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return preprocess(im.convert("RGB"))


def _collate(batch: dict[str, Any]) -> dict[str, Any]:
    return batch  # batches are built whole in the dataset


# ----------------------------------------------------------------------------------------------------------------
# device-side decode (torchvision.io), batched


class TensorPreprocess:
    """Decode + resize + crop + normalise a batch of encoded images with torch ops on ``device``.

    Mirrors open_clip's eval transform for ``resize_mode`` "shortest" (resize shortest side, bicubic, centre crop)
    and "squash" (resize to size x size); JPEGs are decoded by ``torchvision.io.decode_jpeg`` on the device in one
    batched call (nvJPEG on CUDA), other formats by ``decode_image`` on CPU. Pixel values can differ from Pillow's
    by a few levels (different JPEG IDCT and bicubic kernels); embeddings agree to ~1e-2 cosine.
    """

    def __init__(self, preprocess_cfg: dict[str, Any], device: torch.device):
        size = preprocess_cfg.get("size", 224)
        self.size = int(size if isinstance(size, int) else size[0])
        self.resize_mode = preprocess_cfg.get("resize_mode", "shortest")
        if self.resize_mode not in ("shortest", "squash"):
            raise ValueError(f"decode='torch' supports resize_mode shortest/squash, not {self.resize_mode!r}")
        self.interpolation = preprocess_cfg.get("interpolation", "bicubic")
        self.device = torch.device(device)
        self.mean = torch.tensor(preprocess_cfg["mean"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocess_cfg["std"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def decode(self, datas: list[torch.Tensor], formats: Sequence[str]) -> list[torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg

        out: list[torch.Tensor | None] = [None] * len(datas)
        jpg = [i for i, f in enumerate(formats) if f in ("jpg", "jpeg")]
        if jpg:
            dec = decode_jpeg([datas[i] for i in jpg], mode=ImageReadMode.RGB, device=self.device)
            for i, img in zip(jpg, dec):
                out[i] = img
        for i, f in enumerate(formats):
            if out[i] is None:
                out[i] = decode_image(datas[i], mode=ImageReadMode.RGB).to(self.device, non_blocking=True)
        return out  # type: ignore[return-value]

    def __call__(self, datas: list[torch.Tensor], formats: Sequence[str]) -> torch.Tensor:
        imgs = self.decode(datas, formats)
        batch = torch.empty((len(imgs), 3, self.size, self.size), dtype=torch.float32, device=self.device)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(imgs):
            groups.setdefault((int(im.shape[-2]), int(im.shape[-1])), []).append(i)
        for (h, w), idx in groups.items():
            x = torch.stack([imgs[i] for i in idx])  # (g, 3, h, w) uint8
            batch[idx] = self._resize_crop(x, h, w)
        return (batch / 255.0 - self.mean) / self.std

    def _resize_crop(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        import torch.nn.functional as F

        s = self.size
        if self.resize_mode == "squash":
            nh, nw = s, s
        elif h <= w:  # torchvision Resize(int): short side -> s, long side -> int(s * long / short)
            nh, nw = s, int(s * w / h)
        else:
            nh, nw = int(s * h / w), s
        xf = x.float()
        if (nh, nw) != (h, w):
            mode = "bilinear" if self.interpolation == "bilinear" else "bicubic"
            xf = F.interpolate(xf, size=(nh, nw), mode=mode, antialias=True, align_corners=False)
            xf = xf.clamp_(0, 255).round_()
        top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
        return xf[:, :, top : top + s, left : left + s]


# ----------------------------------------------------------------------------------------------------------------
# main entry points


def _resolve_mode(decode: str, loaded: LoadedModel) -> str:
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
    if decode == "auto":
        return "torch" if loaded.device.type == "cuda" else "pil"
    return decode


def _to_fixed_list(x: np.ndarray) -> pa.Array:
    n, d = x.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(x, dtype=np.float16).reshape(-1)), d)


def _shard_table(uids: list[str], img: np.ndarray, txt: np.ndarray, loaded: LoadedModel) -> pa.Table:
    dim = img.shape[1] if img.ndim == 2 and img.shape[0] else loaded.embed_dim
    schema = embedding_schema(dim).with_metadata(
        {META_MODEL_ID: loaded.model_id_str.encode(), META_MODEL: json.dumps(loaded.model_id, default=str).encode()}
    )
    img = img.reshape(-1, dim)
    txt = txt.reshape(-1, dim)
    return pa.Table.from_arrays(
        [
            pa.array(uids, pa.string()),
            _to_fixed_list(img),
            _to_fixed_list(txt),
            pa.array([loaded.model_id_str] * len(uids), pa.string()),
        ],
        schema=schema,
    )


def embed_drop(
    source: str | os.PathLike | Sequence[Any],
    loaded: LoadedModel,
    out_dir: str | os.PathLike,
    progress: ProgressFn | None = None,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    decode: str = "auto",
    force: bool = False,
) -> EmbedResult:
    """Embed every shard of one drop into ``<out_dir>/part-<shard>.parquet``; skip shards already done.

    Args:
        source: the drop's raw_pairs folder (``part-*.parquet``), or a sequence of per-shard tables (pyarrow or
            polars) / Parquet paths. Each table holds ONE shard (its ``shard`` column, else its position).
        loaded: the model (:func:`clip_assets.models.loading.load_model`).
        out_dir: output folder (e.g. ``partition_dir("embeddings", drop, home)``).
        progress: called after each shard as ``progress(shards_done, shards_total, images_per_s)``; skipped
            shards count as done. An exception raised there stops the run (files written so far stay valid).
        batch_size / workers: override ``loaded.spec.batch_size`` / ``loaded.spec.workers``.
        decode: "auto" (GPU decode on CUDA, Pillow on CPU), "pil" or "torch" (torchvision.io on the model's
            device; testable on CPU).
        force: recompute every shard even when its output is valid.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = _collect_shards(source, out_dir)
    return _run(shards, loaded, progress, batch_size=batch_size, workers=workers, decode=decode, force=force)


def _run(
    shards: list[_Shard],
    loaded: LoadedModel,
    progress: ProgressFn | None,
    *,
    batch_size: int | None,
    workers: int | None,
    decode: str,
    force: bool,
) -> EmbedResult:
    with torch_threads(loaded.spec.threads):
        return _run_threads_set(shards, loaded, progress, batch_size, workers, decode, force)


def _run_threads_set(shards, loaded, progress, batch_size, workers, decode, force) -> EmbedResult:
    t0 = time.perf_counter()
    bs = int(batch_size or loaded.spec.batch_size)
    nw = int(loaded.spec.workers if workers is None else workers)
    if bs < 1 or nw < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {bs}, {nw}")
    mode = _resolve_mode(decode, loaded)
    total = len(shards)
    model_id = loaded.model_id_str
    todo: list[_Shard] = []
    skipped: list[str] = []
    for s in shards:
        if not force and _output_valid(s.out_path, s.n_rows, s.uid_digest, model_id, loaded.embed_dim):
            skipped.append(s.shard)
        else:
            todo.append(s)
    done = len(skipped)
    written: list[str] = []
    rows_written = 0

    # empty shards need no model
    for s in [s for s in todo if s.n_rows == 0]:
        empty = np.zeros((0, loaded.embed_dim), dtype=np.float16)
        write_table(s.out_path, _shard_table([], empty, empty, loaded))
        written.append(s.shard)
        done += 1
        if progress is not None:
            progress(done, total, 0.0)
    todo = [s for s in todo if s.n_rows > 0]

    if todo:
        t_start = time.perf_counter()
        ds = _ShardBatches(todo, bs, mode, loaded.preprocess, loaded.tokenizer)
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=None,
            collate_fn=_collate,
            num_workers=min(nw, len(todo)),
            pin_memory=loaded.device.type == "cuda",
            prefetch_factor=4 if nw > 0 else None,
            persistent_workers=False,
        )
        tensor_pp = TensorPreprocess(loaded.preprocess_cfg, loaded.device) if mode == "torch" else None
        by_shard = {s.shard: s for s in todo}
        pending: dict[str, dict[int, tuple[np.ndarray, np.ndarray, list[str]]]] = {}
        loaded.model.eval()
        on_cuda = loaded.device.type == "cuda"

        def finish(item: tuple) -> None:
            """Host side of one computed batch: collect it; write its shard when complete."""
            nonlocal done, rows_written
            shard, b_idx, n_batches, uids_b, img_h, txt_h, event = item
            if event is not None:
                event.synchronize()
            parts = pending.setdefault(shard, {})
            parts[b_idx] = (img_h.numpy(), txt_h.numpy(), uids_b)
            if len(parts) < n_batches:
                return
            order = [parts[i] for i in range(n_batches)]
            uids = [u for p in order for u in p[2]]
            s = by_shard[shard]
            if len(uids) != s.n_rows or _uid_digest(uids) != s.uid_digest:  # input changed under us
                raise RuntimeError(f"shard {shard}: rows read ({len(uids)}) do not match its uids ({s.n_rows})")
            img = np.concatenate([p[0] for p in order])
            txt = np.concatenate([p[1] for p in order])
            write_table(s.out_path, _shard_table(uids, img, txt, loaded))
            del pending[shard]
            written.append(shard)
            rows_written += len(uids)
            done += 1
            if progress is not None:
                elapsed = time.perf_counter() - t_start
                progress(done, total, rows_written / elapsed if elapsed > 0 else 0.0)

        with torch.inference_mode():
            inflight = None
            for batch in loader:
                if tensor_pp is not None:
                    images = tensor_pp(list(torch.split(batch["blob"], batch["lengths"])), batch["formats"])
                else:
                    images = batch["images"]
                img = loaded.encode_images(images).to(torch.float16)  # (B, d) unit, on device
                txt = loaded.encode_texts(batch["tokens"]).to(torch.float16)  # (B, d)
                event = None
                if on_cuda:  # async copy to pinned host memory; collected after the next batch is queued
                    img_h = torch.empty(img.shape, dtype=img.dtype, pin_memory=True).copy_(img, non_blocking=True)
                    txt_h = torch.empty(txt.shape, dtype=txt.dtype, pin_memory=True).copy_(txt, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record()
                else:
                    img_h, txt_h = img, txt
                item = (batch["shard"], batch["batch"], batch["n_batches"], batch["uids"], img_h, txt_h, event)
                if inflight is not None:
                    finish(inflight)
                inflight = item
                if not on_cuda:
                    finish(inflight)
                    inflight = None
        if inflight is not None:
            finish(inflight)
        if pending:  # pragma: no cover - a worker ended early
            raise RuntimeError(f"shards {sorted(pending)} did not receive all their batches")

    seconds = time.perf_counter() - t0
    return EmbedResult(
        model_id=model_id,
        shards_total=total,
        shards_written=len(written),
        shards_skipped=len(skipped),
        rows_total=sum(s.n_rows for s in shards),
        rows_written=rows_written,
        seconds=seconds,
        images_per_s=rows_written / seconds if seconds > 0 else 0.0,
        files=[s.out_path for s in shards],
        written=written,
        skipped=skipped,
    )


def embed_shard(
    rows: Any,
    loaded: LoadedModel,
    out_path: str | os.PathLike,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    decode: str = "auto",
    force: bool = False,
) -> EmbedResult:
    """Embed ONE shard's raw_pairs rows (pyarrow/polars table) into ``out_path`` (skipped if already valid)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tbl = _as_arrow(rows)
    missing = [c for c in POINTER_COLUMNS if c not in tbl.column_names]
    if missing:
        raise ValueError(f"shard table lacks raw_pairs columns {missing}")
    m = _PART_RE.match(out_path.name)
    shard = _shard_of_table(tbl, m.group(1) if m else out_path.stem)
    one = _Shard(shard, tbl.select(list(POINTER_COLUMNS)), out_path, tbl.num_rows, _uid_digest(tbl))
    return _run([one], loaded, None, batch_size=batch_size, workers=workers, decode=decode, force=force)


def read_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray, str]:
    """(uids, image_emb (n, d) float32, text_emb (n, d) float32, model_id) of one embeddings file or folder."""
    tbl = pq.read_table(path)
    n = tbl.num_rows
    uids = tbl.column("uid").to_pylist()

    def mat(col: str) -> np.ndarray:
        arr = tbl.column(col).combine_chunks()
        d = arr.type.list_size
        return np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(n, d)

    mids = pc.unique(tbl.column("model_id")).to_pylist() if n else []
    return uids, mat("image_emb"), mat("text_emb"), (mids[0] if len(mids) == 1 else ",".join(map(str, mids)))
