"""Quick checks of a model against the synthetic world: zero-shot accuracy and ranking of the true log ratio.

These are model-level sanity checks used by training and tests; the project's estimators proper live in
``clip_assets.core``. Self-normalised image-conditioned log ratio (PAPER section 1), references = the drop's own
captions t_1..t_N (a sample of p(y))::

    log r_img(x, y) = s(x, y) - logsumexp_j s(x, t_j) + log N,      s(x, y) = a <u_x, v_y>

computed by :func:`clip_assets.core.scores.log_ratio_image_conditioned` (each distinct caption is encoded once).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from clip_assets.core.calibration import spearman
from clip_assets.core.scores import log_ratio_image_conditioned
from clip_assets.io import fs
from clip_assets.io.batches import decode_all, normalize
from clip_assets.io.drops import MODEL_INPUT_COLUMNS, index_drop
from clip_assets.io.images import decode_resize
from clip_assets.models.loading import LoadedModel
from clip_assets.world import World


def _encode_uint8_images(loaded: LoadedModel, images_u8: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """(N, 3, S, S) uint8 at the model's size -> (N, d) unit float32 embeddings (on CPU)."""
    mean, std = loaded.preprocess_cfg["mean"], loaded.preprocess_cfg["std"]
    outs = []
    for i in range(0, images_u8.shape[0], batch_size):
        x = normalize(images_u8[i : i + batch_size].to(loaded.device), mean, std)
        outs.append(loaded.encode_images(x).cpu())
    return torch.cat(outs) if outs else torch.empty((0, loaded.embed_dim))


def _resize_u8(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) uint8 via the same geometry as io.images.decode_resize."""
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    if images.shape[1] == size and images.shape[2] == size:
        return t
    out = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="PNG")
        out.append(torch.from_numpy(decode_resize(buf.getvalue(), size)).permute(2, 0, 1))
    return torch.stack(out)


def zero_shot_accuracy(
    loaded: LoadedModel,
    world: Any = None,
    n: int = 1000,
    seed: int = 12345,
    template: str = "a photo of a {}",
    domain: str | None = None,
) -> float:
    """Accuracy of argmax_c <u_x, v_{template(c)}> over ``n`` fresh images of ``world.sample_labelled``."""
    if world is None:
        world = World.default()
    lab = world.sample_labelled(n, np.random.default_rng(seed), domain=domain)
    u = _encode_uint8_images(loaded, _resize_u8(lab.images, loaded.image_size))  # (n, d)
    v = loaded.encode_texts([template.format(c) for c in world.class_names]).cpu()  # (C, d)
    pred = (u @ v.T).argmax(dim=1).numpy()  # (n, d) @ (d, C) -> (n, C)
    return float((pred == np.asarray(lab.label)).mean())


def ratio_spearman(
    loaded: LoadedModel,
    drop: str | os.PathLike | list[pa.Table],
    truth_path: str | os.PathLike | None = None,
    max_pairs: int | None = None,
) -> dict[str, Any]:
    """Spearman between the model's self-normalised log r_img and the world's true log ratio on one drop.

    ``truth_path`` defaults to ``<drop>.truth.parquet`` beside the drop folder. Pairs are joined on uid.
    """
    if isinstance(drop, (str, os.PathLike)):
        drop_dir = Path(drop)
        tables = index_drop(drop_dir)
        truth_path = truth_path or drop_dir.parent / f"{drop_dir.name}.truth.parquet"
    else:
        tables = list(drop)
        if truth_path is None:
            raise ValueError("truth_path is required when the drop is given as tables")
    ptr = pa.concat_tables([t.select(list(MODEL_INPUT_COLUMNS)) for t in tables])
    if max_pairs is not None:
        ptr = ptr.slice(0, max_pairs)
    u = _encode_uint8_images(loaded, decode_all([ptr], loaded.image_size)).numpy()
    captions = ptr.column("caption").to_pylist()
    uniq, inv = np.unique(np.asarray(captions, dtype=object), return_inverse=True)
    v = loaded.encode_texts([str(c) for c in uniq]).cpu().numpy()[inv]  # (N, d): each distinct caption encoded once
    log_r = log_ratio_image_conditioned(u, v, v, loaded.logit_scale)  # the drop's captions are the references
    truth = fs.read_table(truth_path, columns=["uid", "true_log_ratio"]).to_pydict()
    true_by_uid = dict(zip(truth["uid"], truth["true_log_ratio"]))
    uids = ptr.column("uid").to_pylist()
    keep = np.array([uid in true_by_uid for uid in uids])
    true = np.array([true_by_uid[uid] for uid, k in zip(uids, keep) if k], dtype=np.float64)
    rho = spearman(log_r[keep], true)
    return {"spearman": rho, "pairs": int(keep.sum()), "references": int(len(captions)), "log_ratio": log_r}
