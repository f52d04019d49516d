"""Decoded image batches for models: pointer rows -> uint8 tensors, and the model's input normalisation.

Images are read through :func:`clip_assets.io.drops.read_pointer` and decoded with
:func:`clip_assets.io.images.decode_resize`, kept as uint8 ``(3, S, S)``; :func:`normalize` turns a batch into
the model's input. (torch lives here, not in io.images, so that ingestion never imports it.)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch

from clip_assets.io.drops import read_pointer
from clip_assets.io.images import decode_resize


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
        data = read_pointer(self.tar_paths[i], int(self.offsets[i]), int(self.sizes[i]), self._fh)
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
