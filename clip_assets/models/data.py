"""Reading image-text pairs through byte pointers into webdataset tars (shared by training and embedding).

A *pointer table* has raw_pairs' columns (at least ``uid, caption, tar_path, offset, size``; ``shard``,
``image_format``, ``key`` when known): image bytes are ``open(tar_path).seek(offset).read(size)``. The warehouse's
``raw_pairs`` is such a table; :func:`index_drop` builds one straight from a drop folder (training reads a drop
before any warehouse exists, and tests use it as a fixture).

Images are decoded with Pillow and resized like open_clip's eval transform (shortest side to ``size`` with
bicubic, centre crop), kept as uint8 ``(3, S, S)``; :func:`normalize` turns a batch into the model's input.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from clip_assets.io.uid import compute_uid

IMAGE_EXTS = {"jpg": "jpg", "jpeg": "jpg", "png": "png", "webp": "webp"}
_SHARD_RE = re.compile(r"^(\d+)\.tar$")

POINTER_SCHEMA = pa.schema(
    [
        pa.field("uid", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("key", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("image_format", pa.string()),
        pa.field("tar_path", pa.string()),
        pa.field("member", pa.string()),
        pa.field("offset", pa.int64()),
        pa.field("size", pa.int64()),
    ]
)




def index_shard(tar_path: str | os.PathLike, shard: str | None = None) -> pa.Table:
    """Pointer table of one webdataset tar: one row per key that has an image and a caption (tar order)."""
    tar_path = Path(tar_path).resolve()
    shard = shard if shard is not None else tar_path.stem
    images: dict[str, tuple[str, str, int, int]] = {}
    captions: dict[str, str] = {}
    order: list[str] = []
    with tarfile.open(tar_path, "r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, _, ext = info.name.rpartition(".")
            ext = ext.lower()
            if key not in images and key not in captions:
                order.append(key)
            if ext in IMAGE_EXTS:
                images[key] = (IMAGE_EXTS[ext], info.name, info.offset_data, info.size)
            elif ext == "txt":
                f = tar.extractfile(info)
                captions[key] = f.read().decode("utf-8") if f is not None else ""
    rows: dict[str, list[Any]] = {f.name: [] for f in POINTER_SCHEMA}
    with open(tar_path, "rb") as fh:
        for key in order:
            if key not in images or key not in captions:
                continue
            fmt, member, offset, size = images[key]
            fh.seek(offset)
            data = fh.read(size)
            rows["uid"].append(compute_uid(data, captions[key]))
            rows["shard"].append(shard)
            rows["key"].append(key)
            rows["caption"].append(captions[key])
            rows["image_format"].append(fmt)
            rows["tar_path"].append(str(tar_path))
            rows["member"].append(member)
            rows["offset"].append(offset)
            rows["size"].append(size)
    return pa.Table.from_pydict(rows, schema=POINTER_SCHEMA)


def index_drop(drop_dir: str | os.PathLike) -> list[pa.Table]:
    """Pointer tables of every ``NNNNN.tar`` in a drop folder, one per shard, in shard order."""
    drop_dir = Path(drop_dir)
    tars = sorted(p for p in drop_dir.iterdir() if p.is_file() and _SHARD_RE.match(p.name))
    if not tars:
        raise FileNotFoundError(f"no NNNNN.tar shards in {drop_dir}")
    return [index_shard(p, _SHARD_RE.match(p.name).group(1)) for p in tars]


def read_bytes(fh_cache: dict[str, Any], tar_path: str, offset: int, size: int) -> bytes:
    """Read ``size`` bytes at ``offset`` of ``tar_path``, reusing an open handle from ``fh_cache``."""
    fh = fh_cache.get(tar_path)
    if fh is None:
        for old in list(fh_cache.values()):  # keep at most one file open per reader
            old.close()
        fh_cache.clear()
        fh = fh_cache[tar_path] = open(tar_path, "rb")
    fh.seek(offset)
    data = fh.read(size)
    if len(data) != size:
        raise OSError(f"short read: {len(data)} of {size} bytes at offset {offset} of {tar_path}")
    return data


def decode_resize(data: bytes, size: int) -> np.ndarray:
    """Image bytes -> (S, S, 3) uint8: RGB, shortest side resized to ``size`` (bicubic), centre crop.

    The same geometry as open_clip's eval transform (``resize_mode='shortest'``, bicubic)."""
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        w, h = im.size
        if (w, h) != (size, size):
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.Resampling.BICUBIC)
            left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
            im = im.crop((left, top, left + size, top + size))
        return np.array(im, dtype=np.uint8)  # a writable copy


def normalize(images_u8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 3, S, S) uint8 -> float32 normalised with the model's mean/std (on the tensor's device)."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=images_u8.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images_u8.device).view(1, -1, 1, 1)
    return (images_u8.float().div_(255.0) - m) / s


class DecodedImages(torch.utils.data.Dataset):
    """Map-style dataset over a pointer table's rows -> (index, (3, S, S) uint8 tensor)."""

    def __init__(self, tar_paths: Sequence[str], offsets: Sequence[int], sizes: Sequence[int], image_size: int):
        self.tar_paths = list(tar_paths)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.image_size = int(image_size)
        self._fh: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.tar_paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        data = read_bytes(self._fh, self.tar_paths[i], int(self.offsets[i]), int(self.sizes[i]))
        arr = decode_resize(data, self.image_size)
        return i, torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def decode_all(tables: Sequence[pa.Table], image_size: int, workers: int = 0, batch_size: int = 256) -> torch.Tensor:
    """Decode every image of the pointer tables into one (N, 3, S, S) uint8 tensor (rows in table order)."""
    cols = {k: [] for k in ("tar_path", "offset", "size")}
    for t in tables:
        for k in cols:
            cols[k].extend(t.column(k).to_pylist())
    ds = DecodedImages(cols["tar_path"], cols["offset"], cols["size"], image_size)
    out = torch.empty((len(ds), 3, image_size, image_size), dtype=torch.uint8)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, shuffle=False)
    for idx, imgs in loader:
        out[idx] = imgs
    return out
