"""Embed image-text pairs through raw_pairs' byte pointers into per-shard Parquet (resumable, memory bounded).

Input: raw_pairs rows of one drop (a folder of ``part-<shard>.parquet`` files, or a list of per-shard tables):
``uid, shard, caption, tar_path, offset, size`` (image bytes = ``tar_path[offset:offset+size]``).

Output: ``<out_dir>/part-<shard>.parquet`` per input shard, rows in input order, written atomically::

    uid        string
    image_emb  fixed_size_list<float16>[d]   L2-normalised image embedding u_x
    text_emb   fixed_size_list<float16>[d]   L2-normalised text embedding v_y
    model_id   string                        LoadedModel.model_id_str (also in the file's key-value metadata)

Pipeline (one pass over the drop, shard by shard, batch by batch):

* DataLoader workers (``workers``; 0 = in process) take whole shards round-robin, read the image bytes through
  the pointers and tokenize the captions (each cut to ``CAPTION_CHARS_PER_TOKEN`` characters per context token
  first, so a 10 MB caption costs what a long sentence does), and either decode + preprocess with the model's own
  open_clip eval transform (``decode="pil"``) or ship the raw bytes (``decode="torch"``);
* the image format is read from the bytes (magic numbers, :func:`sniff_format`), never from the file extension;
* ``decode="torch"``: the main process decodes the batch's real JPEGs with ``torchvision.io.decode_jpeg`` *on the
  model's device* (nvJPEG on CUDA) and every other sample (PNG, GIF, BMP, TIFF, WebP -- animated ones by their
  first frame -- or a JPEG that decode_jpeg refuses) with Pillow, one sample at a time; then resizes (shortest
  side, bicubic, antialias), centre-crops and normalises there. ``decode="auto"`` picks "torch" on CUDA and "pil"
  on CPU. Both paths read 16-bit images at their full range (scaled to 8 bits, :func:`clip_assets.io.images.to_rgb8`);
* the model runs under ``torch.inference_mode`` (autocast on CUDA with the chosen precision); embeddings are
  L2-normalised in float32 and stored as float16;
* a shard's file is written as soon as its last batch is done. Memory holds at most ~``workers + 1`` shards'
  embeddings plus the DataLoader prefetch, whatever the drop size.

Resumable and self-healing: a shard whose output exists and is valid (same row count, same uids in the same
order, same model id, same dimension) is skipped, so a killed run re-run recomputes only the missing shards, and
a shard whose uids changed (a drop re-landed with other contents) is recomputed; output files of shards no longer
in the input are removed. Batches are formed per shard from its first row, so results do not depend on which
shards were skipped.

The ``ray`` executor (:mod:`clip_assets.models.embed_ray`) shares the shard planning, batching, Pillow
preprocess, forward pass and writer above, so it writes the same files.
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
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from clip_assets.io import fs
from clip_assets.io.commit import remove, write_table
from clip_assets.io.drops import MODEL_INPUT_COLUMNS, read_pointers
from clip_assets.io.images import decode_rgb, sniff_format
from clip_assets.models.loading import LoadedModel, torch_threads

_PART_RE = re.compile(r"^part-(.+)\.parquet$")
META_MODEL_ID = b"clip_assets.model_id"
META_MODEL = b"clip_assets.model"
DECODE_MODES = ("auto", "pil", "torch")
CAPTION_CHARS_PER_TOKEN = 64  # a caption is cut to 64 x context_length characters before tokenization

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
    removed: list[str] = field(default_factory=list)  # shard ids whose output was removed (not in the input)

    def to_metadata(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "shards_total": self.shards_total,
            "shards_written": self.shards_written,
            "shards_skipped": self.shards_skipped,
            "shards_removed": len(self.removed),
            "rows_total": self.rows_total,
            "rows_written": self.rows_written,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 1),
        }


# ----------------------------------------------------------------------------------------------------------------
# samples: image bytes and captions


def cut_captions(captions: Sequence[str], context_length: int) -> list[str]:
    """Each caption cut to ``CAPTION_CHARS_PER_TOKEN * context_length`` characters (the tokenizer's cost bound)."""
    limit = CAPTION_CHARS_PER_TOKEN * int(context_length)
    return [c if len(c) <= limit else c[:limit] for c in captions]


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


def _input_items(source: Any) -> list[Any]:
    if isinstance(source, fs.LOCATION_TYPES):
        folder = fs.location(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"raw_pairs folder {folder} does not exist")
        items = sorted(p for p in folder.iterdir() if p.is_file() and _PART_RE.match(p.name))
        if not items:
            raise FileNotFoundError(f"no part-<shard>.parquet files in {folder}")
        return items
    if isinstance(source, pa.Table) or hasattr(source, "to_arrow"):
        return [source]
    return list(source)


def _describe(i: int, item: Any, out_dir: Path) -> _Shard:
    if isinstance(item, fs.LOCATION_TYPES):
        path = fs.location(item)
        m = _PART_RE.match(path.name)
        cols = ["uid", "shard"] if "shard" in fs.read_schema(path).names else ["uid"]
        uids_tbl = fs.read_table(path, columns=cols)
        shard, src = _shard_of_table(uids_tbl, m.group(1) if m else None), path
    else:
        tbl = _as_arrow(item)
        missing = [c for c in MODEL_INPUT_COLUMNS if c not in tbl.column_names]
        if missing:
            raise ValueError(f"shard table {i} lacks raw_pairs columns {missing}")
        shard, src = _shard_of_table(tbl, f"{i:05d}"), tbl.select(list(MODEL_INPUT_COLUMNS))
        uids_tbl = tbl.select(["uid"])
    return _Shard(shard, src, out_dir / f"part-{shard}.parquet", uids_tbl.num_rows, _uid_digest(uids_tbl))


def _collect_shards(source: Any, out_dir: Path) -> list[_Shard]:
    """raw_pairs folder / list of Parquet paths / list of tables -> shard descriptors (no row data held)."""
    shards = [_describe(i, item, out_dir) for i, item in enumerate(_input_items(source))]
    seen: set[str] = set()
    for s in shards:
        if s.shard in seen:
            raise ValueError(f"shard {s.shard!r} appears twice in the input")
        seen.add(s.shard)
    return shards


def _uid_digest(t: pa.Table | Sequence[str]) -> str:
    uids = t.column("uid").to_pylist() if isinstance(t, pa.Table) else list(t)
    h = hashlib.sha256()
    for u in uids:
        h.update(str(u).encode())
        h.update(b"\n")
    return h.hexdigest()


def _output_valid(out_path: str | os.PathLike, n_rows: int, digest: str, model_id: str, dim: int | None) -> bool:
    out_path = fs.location(out_path)
    if not out_path.is_file():
        return False
    try:
        pf = fs.parquet_file(out_path)
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


def _remove_stale(out_dir: Path, shards: list[_Shard]) -> list[str]:
    """Remove (through the commit layer) output files of shards that are not in the input; their shard ids."""
    keep = {s.out_path.name for s in shards}
    removed = []
    for p in sorted(out_dir.iterdir()):
        m = _PART_RE.match(p.name)
        if m and p.name not in keep and remove(p):
            removed.append(m.group(1))
    return removed


# ----------------------------------------------------------------------------------------------------------------
# worker side


class _ShardBatches(torch.utils.data.IterableDataset):
    """Yields batches of whole shards; worker k takes shards k, k + n_workers, ..."""

    def __init__(self, shards: list[_Shard], batch_size: int, mode: str, preprocess: Callable, tokenizer: Callable,
                 context_length: int):
        self.shards = [(s.shard, s.source) for s in shards]
        self.batch_size = batch_size
        self.mode = mode
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        fh: dict[str, Any] = {}
        try:
            for k in range(wid, len(self.shards), nw):
                shard, source = self.shards[k]
                tbl = source if isinstance(source, pa.Table) else fs.read_table(source,
                                                                                columns=list(MODEL_INPUT_COLUMNS))
                cols = {c: tbl.column(c).to_pylist() for c in MODEL_INPUT_COLUMNS}
                bounds = batch_bounds(tbl.num_rows, self.batch_size)
                for b, (lo, hi) in enumerate(bounds):
                    yield self._batch(shard, b, len(bounds), cols, lo, hi, fh)
        finally:
            for f in fh.values():
                f.close()

    def _batch(self, shard: str, b: int, n_batches: int, cols: dict[str, list], lo: int, hi: int, fh: dict) -> dict:
        # one ranged read per image; on a store the batch's reads run concurrently
        datas = read_pointers(cols["tar_path"][lo:hi], cols["offset"][lo:hi], cols["size"][lo:hi], fh)
        out: dict[str, Any] = {
            "shard": shard,
            "batch": b,
            "n_batches": n_batches,
            "uids": cols["uid"][lo:hi],
            "tokens": self.tokenizer(cut_captions(cols["caption"][lo:hi], self.context_length)),
        }
        if self.mode == "pil":
            where = [pointer_where(cols["tar_path"][i], cols["offset"][i], cols["size"][i]) for i in range(lo, hi)]
            out["images"] = preprocess_pil(datas, self.preprocess, shard, out["uids"], where)
        else:
            # one contiguous blob per batch: a single shared-memory tensor crosses the worker queue, not B small ones
            out["blob"] = torch.frombuffer(bytearray(b"".join(datas)), dtype=torch.uint8) if datas else torch.empty(0, dtype=torch.uint8)
            out["lengths"] = [len(d) for d in datas]
        return out


def pointer_where(tar_path: str, offset: int, size: int) -> str:
    """Where a sample's bytes are, for error messages."""
    return f"{tar_path} at byte {offset}, {size} bytes"


def preprocess_pil(datas: Sequence[bytes], preprocess: Callable, shard: str, uids: Sequence[str],
                   where: Sequence[str]) -> torch.Tensor:
    """(B, 3, S, S): each encoded image decoded by Pillow and put through the model's eval transform; an image
    that cannot be decoded raises a RuntimeError naming its shard and uid (both executors go through here)."""
    return torch.stack([
        _decode_or_explain(lambda d=d: preprocess(decode_rgb(d)), shard, uid, w)
        for d, uid, w in zip(datas, uids, where)
    ])


@dataclass(frozen=True)
class PixelSplit:
    """A model's eval transform cut where its Pillow part ends (see :func:`split_preprocess`).

    ``pil`` (resize, crop, mode) runs where the images are decoded and yields 8-bit (S, S, 3) pixels, a quarter of
    the float32 bytes to carry between processes and to the device; :func:`finish_pixels` (ToTensor's scaling and
    Normalize) runs where the model is, on its device::

        x = (u8 / 255 - mean_c) / std_c        (per channel c; float32, the very operations ToTensor + Normalize do)
    """

    pil: Callable[[Any], Any] | None  # None where only finish_pixels runs (the Ray model actors)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int


def split_preprocess(preprocess: Callable, image_size: int) -> PixelSplit | None:
    """``preprocess`` as :class:`PixelSplit` when it is ``Compose([*pil_ops, ToTensor, Normalize])`` (open_clip's
    eval transforms are) and the split gives exactly its pixels on a probe image, else None (the caller then
    carries float32 pixels)."""
    from torchvision import transforms as T

    ts = getattr(preprocess, "transforms", None)
    if not isinstance(preprocess, T.Compose) or not isinstance(ts, list) or len(ts) < 2:
        return None
    *head, to_tensor, norm = ts
    if (not isinstance(to_tensor, T.ToTensor) or not isinstance(norm, T.Normalize)
            or any(isinstance(t, (T.ToTensor, T.Normalize)) for t in head)):
        return None
    split = PixelSplit(T.Compose(head), tuple(float(m) for m in norm.mean), tuple(float(v) for v in norm.std),
                       int(image_size))
    from PIL import Image

    probe = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8), "RGB")
    try:
        whole = preprocess(probe)
        parts = finish_pixels(torch.from_numpy(split_pixels(split, probe)[None].copy()), split)[0]
    except Exception:
        return None
    return split if whole.shape == parts.shape and torch.equal(whole, parts) else None


def split_pixels(split: PixelSplit, image: Any) -> np.ndarray:
    """One decoded image through ``split.pil``: (S, S, 3) uint8; anything else raises a ValueError naming it."""
    out = np.asarray(split.pil(image))
    if out.dtype != np.uint8 or out.shape != (split.size, split.size, 3):
        raise ValueError(f"the eval transform's Pillow part gave {out.dtype} {out.shape}, expected uint8 "
                         f"({split.size}, {split.size}, 3)")
    return out


def finish_pixels(u8: torch.Tensor, split: PixelSplit) -> torch.Tensor:
    """(B, S, S, 3) uint8 (on any device) -> (B, 3, S, S) float32 model input, as ToTensor + Normalize give it."""
    from torchvision.transforms import functional as TF

    x = u8.permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    return TF.normalize(x, list(split.mean), list(split.std))


def pixels_pil(datas: Sequence[bytes], split: PixelSplit, shard: str, uids: Sequence[str],
               where: Sequence[str]) -> np.ndarray:
    """(B, S, S, 3) uint8: :func:`preprocess_pil`'s images before ToTensor + Normalize (same decode, same
    errors); ``finish_pixels`` of it equals ``preprocess_pil`` exactly."""
    return np.stack([
        _decode_or_explain(lambda d=d: split_pixels(split, decode_rgb(d)), shard, uid, w)
        for d, uid, w in zip(datas, uids, where)
    ])


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Row ranges [lo, hi) of a shard's batches: formed from its first row, so they never depend on other shards."""
    return [(lo, min(n, lo + batch_size)) for lo in range(0, n, batch_size)]


def _decode_or_explain(decode: Callable[[], torch.Tensor], shard: str, uid: str, where: str) -> torch.Tensor:
    try:
        return decode()
    except Exception as e:
        raise RuntimeError(
            f"shard {shard}: cannot decode image of uid {uid} ({where}): {type(e).__name__}: {e}. raw_pairs should "
            f"only point at images that decoded at ingestion; re-ingest this drop"
        ) from e


def _collate(batch: dict[str, Any]) -> dict[str, Any]:
    return batch  # batches are built whole in the dataset


# ----------------------------------------------------------------------------------------------------------------
# device-side decode (torchvision.io), batched


class TensorPreprocess:
    """Decode + resize + crop + normalise a batch of encoded images with torch ops on ``device``.

    Mirrors open_clip's eval transform for ``resize_mode`` "shortest" (resize shortest side, bicubic, centre crop)
    and "squash" (resize to size x size). Real JPEGs (by magic number) are decoded by
    ``torchvision.io.decode_jpeg`` on the device in one batched call (nvJPEG on CUDA); when that call fails, each
    JPEG is retried alone, and whatever decode_jpeg refuses, like every other format, is decoded by Pillow
    (:func:`decode_rgb`). Pixel values can differ from Pillow's by a few levels (different JPEG IDCT and bicubic
    kernels); embeddings agree to ~1e-2 cosine.
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

    def _pil(self, data: torch.Tensor) -> torch.Tensor:
        arr = np.asarray(decode_rgb(data.numpy().tobytes()))  # (H, W, 3) uint8
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(self.device, non_blocking=True)

    def _jpegs(self, datas: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """decode_jpeg on the device, batched; on failure one by one; None where decode_jpeg refuses a sample."""
        try:
            return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device))
        except Exception:
            out: list[torch.Tensor | None] = []
            for d in datas:
                try:
                    out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=self.device))
                except Exception:
                    out.append(None)
            return out

    def decode(self, datas: list[torch.Tensor], uids: Sequence[str] | None = None, shard: str = "-"
               ) -> list[torch.Tensor]:
        """(3, H, W) uint8 images on the device, one per encoded sample, format read from the bytes."""
        out: list[torch.Tensor | None] = [None] * len(datas)
        jpg = [i for i, d in enumerate(datas) if sniff_format(d[:12].numpy().tobytes()) == "jpg"]
        for i, img in zip(jpg, self._jpegs([datas[i] for i in jpg]) if jpg else []):
            out[i] = img
        for i, img in enumerate(out):
            if img is None:
                uid = uids[i] if uids is not None else f"#{i}"
                out[i] = _decode_or_explain(lambda i=i: self._pil(datas[i]), shard, uid, f"{len(datas[i])} bytes")
        return out  # type: ignore[return-value]

    def __call__(self, datas: list[torch.Tensor], uids: Sequence[str] | None = None, shard: str = "-") -> torch.Tensor:
        imgs = self.decode(datas, uids, shard)
        batch = torch.empty((len(imgs), 3, self.size, self.size), dtype=torch.float32, device=self.device)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(imgs):
            groups.setdefault((int(im.shape[-2]), int(im.shape[-1])), []).append(i)
        for (h, w), idx in groups.items():
            x = torch.stack([imgs[i] for i in idx])  # (g, 3, h, w) uint8
            batch[idx] = self._resize_crop(x, h, w)
        return (batch / 255.0 - self.mean) / self.std

    def _resize_crop(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
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
# host side: collect batches per shard, write a shard when complete


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


@dataclass
class _Computed:
    """One batch's embeddings on the host (or being copied there: wait on ``event``)."""

    shard: str
    batch: int
    n_batches: int
    uids: list[str]
    img: torch.Tensor
    txt: torch.Tensor
    event: Any = None


class _ShardWriter:
    """Collects computed batches per shard and writes each shard's file when its last batch arrives."""

    def __init__(self, shards: list[_Shard], loaded: LoadedModel, total: int, done: int, progress: ProgressFn | None):
        self.by_shard = {s.shard: s for s in shards}
        self.loaded = loaded
        self.total, self.done = total, done
        self.progress = progress
        self.pending: dict[str, dict[int, _Computed]] = {}
        self.written: list[str] = []
        self.rows_written = 0
        self.t_start = time.perf_counter()

    def write_empty(self, shards: list[_Shard]) -> None:
        empty = np.zeros((0, self.loaded.embed_dim), dtype=np.float16)
        for s in shards:
            self._publish(s, [], empty, empty)

    def add(self, item: _Computed) -> None:
        if item.event is not None:
            item.event.synchronize()
        parts = self.pending.setdefault(item.shard, {})
        parts[item.batch] = item
        if len(parts) < item.n_batches:
            return
        order = [parts[i] for i in range(item.n_batches)]
        uids = [u for p in order for u in p.uids]
        s = self.by_shard[item.shard]
        if len(uids) != s.n_rows or _uid_digest(uids) != s.uid_digest:  # input changed under us
            raise RuntimeError(f"shard {s.shard}: rows read ({len(uids)}) do not match its uids ({s.n_rows})")
        del self.pending[item.shard]
        self._publish(s, uids, np.concatenate([p.img.numpy() for p in order]),
                      np.concatenate([p.txt.numpy() for p in order]))

    def _publish(self, s: _Shard, uids: list[str], img: np.ndarray, txt: np.ndarray) -> None:
        write_table(s.out_path, _shard_table(uids, img, txt, self.loaded))
        self.written.append(s.shard)
        self.rows_written += len(uids)
        self.done += 1
        if self.progress is not None:
            elapsed = time.perf_counter() - self.t_start
            self.progress(self.done, self.total, self.rows_written / elapsed if uids and elapsed > 0 else 0.0)

    def check_complete(self) -> None:
        if self.pending:  # pragma: no cover - a worker ended early
            raise RuntimeError(f"shards {sorted(self.pending)} did not receive all their batches")


# ----------------------------------------------------------------------------------------------------------------
# main entry points


def _resolve_mode(decode: str, loaded: LoadedModel) -> str:
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
    if decode == "auto":
        return "torch" if loaded.device.type == "cuda" else "pil"
    return decode


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
        out_dir: output folder (e.g. ``partition_dir("embeddings", drop, home)``); files of shards not in
            ``source`` are removed from it.
        progress: called after each shard as ``progress(shards_done, shards_total, images_per_s)``; skipped
            shards count as done. An exception raised there stops the run (files written so far stay valid).
        batch_size / workers: override ``loaded.spec.batch_size`` / ``loaded.spec.workers``.
        decode: "auto" (GPU decode on CUDA, Pillow on CPU), "pil" or "torch" (torchvision.io on the model's
            device; testable on CPU).
        force: recompute every shard even when its output is valid.
    """
    t0 = time.perf_counter()
    out_dir = fs.location(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bs = int(batch_size or loaded.spec.batch_size)
    nw = int(loaded.spec.workers if workers is None else workers)
    if bs < 1 or nw < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {bs}, {nw}")
    mode = _resolve_mode(decode, loaded)
    shards = _collect_shards(source, out_dir)
    removed = _remove_stale(out_dir, shards)
    with torch_threads(loaded.spec.threads):
        writer, skipped = _run(shards, loaded, progress, bs, nw, mode, force)
    return _result(loaded, shards, writer, skipped, removed, t0)


def _result(loaded: LoadedModel, shards: list[_Shard], writer: "_ShardWriter", skipped: list[str],
            removed: list[str], t0: float) -> EmbedResult:
    seconds = time.perf_counter() - t0
    return EmbedResult(
        model_id=loaded.model_id_str,
        shards_total=len(shards),
        shards_written=len(writer.written),
        shards_skipped=len(skipped),
        rows_total=sum(s.n_rows for s in shards),
        rows_written=writer.rows_written,
        seconds=seconds,
        images_per_s=writer.rows_written / seconds if seconds > 0 else 0.0,
        files=[s.out_path for s in shards],
        written=writer.written,
        skipped=skipped,
        removed=removed,
    )


def _run(shards: list[_Shard], loaded: LoadedModel, progress: ProgressFn | None, bs: int, nw: int, mode: str,
         force: bool) -> tuple[_ShardWriter, list[str]]:
    """Skip valid outputs, write empty shards, embed the rest; (the writer with what it wrote, skipped ids)."""
    todo, skipped, writer = _plan(shards, loaded, progress, force)
    if todo:
        _embed_batches(todo, loaded, bs, nw, mode, writer)
    return writer, skipped


def _plan(shards: list[_Shard], loaded: LoadedModel, progress: ProgressFn | None, force: bool
          ) -> tuple[list[_Shard], list[str], "_ShardWriter"]:
    """(non-empty shards to embed, ids of shards whose valid output is kept, the writer); empty shards written."""
    model_id = loaded.model_id_str
    todo = [s for s in shards if force or not _output_valid(s.out_path, s.n_rows, s.uid_digest, model_id, loaded.embed_dim)]
    todo_ids = {s.shard for s in todo}
    skipped = [s.shard for s in shards if s.shard not in todo_ids]
    writer = _ShardWriter(todo, loaded, len(shards), len(skipped), progress)
    writer.write_empty([s for s in todo if s.n_rows == 0])  # empty shards need no model
    return [s for s in todo if s.n_rows > 0], skipped, writer


def _forward(batch: dict[str, Any], loaded: LoadedModel, tensor_pp: TensorPreprocess | None) -> _Computed:
    """Embed one batch; on CUDA start the copy to pinned host memory and return without waiting for it."""
    if tensor_pp is not None:
        images = tensor_pp(list(torch.split(batch["blob"], batch["lengths"])), batch["uids"], batch["shard"])
    else:
        images = batch["images"]
    img = loaded.encode_images(images).to(torch.float16)  # (B, d) unit, on device
    txt = loaded.encode_texts(batch["tokens"]).to(torch.float16)  # (B, d)
    event = None
    if loaded.device.type == "cuda":
        img = torch.empty(img.shape, dtype=img.dtype, pin_memory=True).copy_(img, non_blocking=True)
        txt = torch.empty(txt.shape, dtype=txt.dtype, pin_memory=True).copy_(txt, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
    return _Computed(batch["shard"], batch["batch"], batch["n_batches"], batch["uids"], img, txt, event)


def _embed_batches(todo: list[_Shard], loaded: LoadedModel, bs: int, nw: int, mode: str, writer: _ShardWriter) -> None:
    """The loop: on CUDA batch k's host copy is collected after batch k+1 is queued; on CPU at once."""
    ds = _ShardBatches(todo, bs, mode, loaded.preprocess, loaded.tokenizer, loaded.context_length)
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
    loaded.model.eval()
    inflight: _Computed | None = None
    with torch.inference_mode():
        for batch in loader:
            item = _forward(batch, loaded, tensor_pp)
            if inflight is not None:
                writer.add(inflight)
            inflight = item
            if item.event is None:
                writer.add(item)
                inflight = None
    if inflight is not None:
        writer.add(inflight)
    writer.check_complete()
