"""Train a small CLIP-style model on a synthetic drop with open_clip's contrastive loss (the offline default model).

InfoNCE (open_clip's ``ClipLoss``, symmetric, learnable temperature) makes ``s(x, y) = a <u_x, v_y>`` a log
density ratio up to a per-side normaliser (PAPER section 1), which is what every downstream estimator relies on.

Recipe (defaults in :class:`TrainConfig`, ~2 CPU minutes for the target model):

* data: streamed. Each step's batch is read through the pairs' tar byte pointers
  (:func:`clip_assets.io.drops.read_pointer`, one open-file cache per reader) and decoded with
  :func:`clip_assets.io.images.decode_resize` by :class:`PairBatches`, a torch ``IterableDataset`` behind a
  ``DataLoader``; only the pointer rows and the batches in flight are in memory, so peak memory does not grow with
  the pool (``bench/bench_iwl_memory.py``) beyond a fixed cache of decoded images (``decode_cache_mb``, default
  64 MiB: a pool that fits is decoded once, not once per epoch). Captions are tokenized once (a drop has a few
  dozen distinct ones);
* model: an open_clip custom config (:mod:`.small`), random init under ``seed``;
* optimiser: AdamW (no weight decay on gains, biases, embeddings and the logit scale), linear warmup then cosine
  decay, logit scale initialised at log(1/0.07) and clamped to [0, log 100] after each step like open_clip;
* seeded and deterministic: the batch order is :func:`batch_plan` (a seeded permutation of the rows per epoch,
  drawn before training), workers decode fixed steps (step ``k`` by worker ``k mod W``, returned in step order, so
  nothing depends on worker timing), the init is seeded, torch's deterministic algorithms are on and the thread
  count is fixed (``threads``, default 1) while training. The same seed, config and data give byte-identical
  weights on a machine; CPUs with other vector units may round differently in the kernels themselves;
* device and precision: ``device`` ("cpu", "auto", "cuda[:i]") and ``precision`` ("fp32", "bf16", "fp16" as CUDA
  autocast; the CPU runs fp32), as in :class:`clip_assets.models.loading.ModelSpec`.

The result is published (one staged folder, :func:`clip_assets.io.commit.stage_dir`) under
``models_dir(home)/<name>/`` in open_clip's local-dir layout: ``open_clip_pytorch_model.bin`` (a plain state_dict)
and ``open_clip_config.json`` (``model_cfg``/``preprocess_cfg`` in open_clip's hub format, plus the training
config, data ids and final metrics under ``clip_assets``), then reloaded through
:func:`clip_assets.models.loading.load_model` with ``checkpoint=`` like any user checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import open_clip
import pyarrow as pa
import torch
from matplotlib.figure import Figure

from clip_assets.config import models_dir
from clip_assets.core.iwl import weighted_clip_loss
from clip_assets.io import fs
from clip_assets.io.batches import normalize
from clip_assets.io.commit import resolve, stage_dir, write_json
from clip_assets.io.drops import MODEL_INPUT_COLUMNS, close_handles, index_drop, read_pointer
from clip_assets.io.images import decode_resize
from clip_assets.models import small
from clip_assets.models.evaluate import zero_shot_accuracy
from clip_assets.models.loading import (CONFIG_FILE, PRECISIONS, LoadedModel, ModelSpec, load_model, resolve_device,
                                        torch_threads)
from clip_assets.world import World

WEIGHTS_FILE = "open_clip_pytorch_model.bin"


@dataclass(frozen=True)
class TrainConfig:
    """Training knobs. Defaults (clip-assets-tiny, 600 x 256 pairs) reach zero-shot shape accuracy ~0.98 and
    Spearman ~0.98 vs the true log ratio in ~2 CPU minutes."""

    model: str = small.TINY  # a registered open_clip config name (see clip_assets.models.small)
    steps: int = 600
    batch_size: int = 256
    lr: float = 5e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = math.log(100.0)
    grad_clip: float | None = 1.0
    seed: int = 0
    max_pairs: int | None = None  # use at most this many pairs of the drop (first ones)
    workers: int = 0  # DataLoader worker processes decoding the batches (0: in the training process)
    decode_cache_mb: int = 64  # decoded images kept for later epochs (MiB in all, shared out among workers; 0: off)
    threads: int | None = 1  # torch CPU threads while training (1: no OpenMP spin contention; None: torch's)
    device: str = "cpu"  # "cpu", "auto" (CUDA when present) or "cuda[:i]"
    precision: str = "fp32"  # CUDA autocast dtype: "fp32", "bf16" or "fp16" (the CPU runs fp32)
    eval_images: int = 1000  # zero-shot evaluation set size (World.sample_labelled)
    eval_seed: int = 12345

    def __post_init__(self) -> None:
        for k in ("steps", "batch_size", "eval_images"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"TrainConfig.{k} must be >= 1, got {getattr(self, k)!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if self.warmup_steps < 0 or self.workers < 0 or self.decode_cache_mb < 0:
            raise ValueError(f"TrainConfig.warmup_steps, workers and decode_cache_mb must be >= 0, got "
                             f"{self.warmup_steps!r}, {self.workers!r}, {self.decode_cache_mb!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


@dataclass
class TrainResult:
    """What :func:`train_contrastive` produced."""

    name: str
    checkpoint_dir: Path
    checkpoint_path: Path  # the weights file; load with ModelSpec(name=..., checkpoint=str(checkpoint_path))
    model_id: dict[str, Any]
    model_id_str: str
    curves: dict[str, list[float]]  # step, loss, logit_scale (a = exp), lr
    metrics: dict[str, Any]  # zero_shot_accuracy, train_seconds, final_loss, final_logit_scale, ...
    plot_png: bytes
    loaded: LoadedModel | None = field(default=None, repr=False)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(name=self.model_id["name"], checkpoint=str(self.checkpoint_path), device="cpu", workers=0)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine decay to ``lr * min_lr_ratio``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    lo = cfg.lr * cfg.min_lr_ratio
    return lo + 0.5 * (cfg.lr - lo) * (1.0 + math.cos(math.pi * t))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # open_clip's rule: no decay for gains/biases (ndim < 2), embeddings and the logit scale
    def exclude(n: str, p: torch.nn.Parameter) -> bool:
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n or "embedding" in n

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": weight_decay},
    ]


def _adamw(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, config.weight_decay)
    kw = dict(lr=config.lr, betas=config.betas, eps=config.eps)
    try:  # the fused kernel is ~2x faster on CPU (one pass over the big token-embedding table)
        return torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # pragma: no cover - older torch
        return torch.optim.AdamW(groups, **kw)


def _fingerprint(values: list[str]) -> str:
    h = hashlib.sha256()
    for v in values:
        h.update(v.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()



def _world_for(drop_dir: Path) -> tuple[World, str | None]:
    wf = drop_dir.parent / "world.json"
    if wf.is_file():
        return World.from_dict(json.loads(wf.read_text())), hashlib.sha256(wf.read_bytes()).hexdigest()
    return World.default(), None


@dataclass
class _TrainData:
    """One drop's pairs for training: pointer rows (images stay on disk), caption indices into the distinct
    captions, optional per-pair weights."""

    pointers: pa.Table  # uid, caption, tar_path, offset, size
    image_size: int
    captions: list[str]  # distinct captions, sorted
    caption_idx: torch.Tensor  # (N,) long
    weights: torch.Tensor | None  # (N,) float32 per-pair weights, or None (plain ClipLoss)
    drop_dir: Path | None
    world: Any
    world_sha: str | None
    seconds: float

    @property
    def n(self) -> int:
        return self.pointers.num_rows


def _check_weights(sample_weights: Sequence[float] | np.ndarray | None, n: int) -> torch.Tensor | None:
    if sample_weights is None:
        return None
    w = np.asarray(sample_weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != n:
        raise ValueError(f"sample_weights has {w.shape[0]} entries for {n} pairs (one per row)")
    if not np.isfinite(w).all() or (w < 0).any() or not (w > 0).any():
        raise ValueError("sample_weights must be finite, >= 0 and not all zero")
    return torch.from_numpy(w.astype(np.float32))


def _prepare_data(drop: Any, config: TrainConfig, image_size: int, world: Any, sample_weights: Any) -> _TrainData:
    t0 = time.perf_counter()
    world_sha, drop_dir = None, None
    if isinstance(drop, (str, os.PathLike)):
        drop_dir = Path(drop)
        tables = index_drop(drop_dir)
        if world is None:
            world, world_sha = _world_for(drop_dir)
    else:
        tables = list(drop)
    ptr = pa.concat_tables([t.select(list(MODEL_INPUT_COLUMNS)) for t in tables])
    weights = _check_weights(sample_weights, ptr.num_rows)
    if config.max_pairs is not None:
        ptr = ptr.slice(0, config.max_pairs)
        weights = weights[: ptr.num_rows] if weights is not None else None
    if ptr.num_rows < 2:
        raise ValueError(f"need at least 2 pairs to train, got {ptr.num_rows}")
    captions = ptr.column("caption").to_pylist()
    uniq = sorted(set(captions))
    index = {c: i for i, c in enumerate(uniq)}
    caption_idx = torch.tensor([index[c] for c in captions], dtype=torch.long)
    return _TrainData(ptr, int(image_size), uniq, caption_idx, weights, drop_dir,
                      world if world is not None else World.default(), world_sha, time.perf_counter() - t0)


def batch_plan(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """(steps, min(batch_size, n)) row indices: batches without replacement from a seeded permutation of the
    ``n`` rows, a fresh permutation (same generator) whenever the current one cannot fill a batch."""
    gen = torch.Generator().manual_seed(seed)
    bs = min(batch_size, n)
    plan = np.empty((steps, bs), dtype=np.int64)
    perm, pos = torch.randperm(n, generator=gen), 0
    for step in range(steps):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        plan[step] = perm[pos : pos + bs].numpy()
        pos += bs
    return plan


class PairBatches(torch.utils.data.IterableDataset):
    """The images of :func:`batch_plan`'s batches, read through pointers and decoded on the fly.

    Yields ``(step, (B, 3, S, S) uint8)``. With DataLoader workers, worker ``i`` of ``W`` decodes the steps
    ``i, i + W, ...``; the DataLoader takes one batch from each worker in turn, so batches arrive in step order.

    ``cache_bytes``: decoded images are kept (by row) until this many bytes are held, shared out equally among the
    workers, and later epochs take them from there instead of reading and decoding again. Rows are admitted in the
    order they are first decoded and never evicted, so memory is bounded by the budget whatever the pool size; a
    pool that fits is decoded once per row, a larger one in part. Decoding is deterministic, so the batches are the
    same bytes with or without the cache. ``decodes`` counts the images this iterator decoded (in this process).
    """

    def __init__(self, pointers: pa.Table, plan: np.ndarray, image_size: int, cache_bytes: int = 0):
        self.tar_paths = pointers.column("tar_path").to_pylist()
        self.offsets = pointers.column("offset").to_numpy().astype(np.int64)
        self.sizes = pointers.column("size").to_numpy().astype(np.int64)
        self.plan = plan
        self.image_size = int(image_size)
        self.cache_bytes = max(0, int(cache_bytes))
        self.decodes = 0

    def _batch(self, rows: np.ndarray, handles: dict, cache: dict, room: int) -> tuple[torch.Tensor, int]:
        s = self.image_size
        out = torch.empty((len(rows), 3, s, s), dtype=torch.uint8)
        per_image = 3 * s * s
        for j, i in enumerate(rows):
            i = int(i)
            img = cache.get(i)
            if img is None:
                data = read_pointer(self.tar_paths[i], int(self.offsets[i]), int(self.sizes[i]), handles)
                img = torch.from_numpy(decode_resize(data, s)).permute(2, 0, 1)
                self.decodes += 1
                if room >= per_image:
                    cache[i] = img.contiguous()
                    room -= per_image
            out[j] = img
        return out, room

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        first, stride = (0, 1) if info is None else (info.id, info.num_workers)
        handles: dict = {}
        cache: dict[int, torch.Tensor] = {}
        room = self.cache_bytes // stride
        try:
            for step in range(first, len(self.plan), stride):
                images, room = self._batch(self.plan[step], handles, cache, room)
                yield step, images
        finally:
            close_handles(handles)
            cache.clear()


def _batches(data: _TrainData, config: TrainConfig, device: torch.device) -> torch.utils.data.DataLoader:
    ds = PairBatches(data.pointers, batch_plan(data.n, config.batch_size, config.steps, config.seed),
                     data.image_size, cache_bytes=config.decode_cache_mb * 2**20)
    return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=config.workers,
                                       pin_memory=device.type == "cuda", persistent_workers=False)


def _step_loss(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None,
               loss_fn: Callable) -> torch.Tensor:
    out = model(x, t)
    img_f, txt_f, scale = (
        (out["image_features"], out["text_features"], out["logit_scale"]) if isinstance(out, dict) else out[:3]
    )
    return loss_fn(img_f, txt_f, scale) if w is None else weighted_clip_loss(img_f, txt_f, scale, w)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if device.type == "cuda" and dtype is not None:
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


def _train_steps(model: torch.nn.Module, data: _TrainData, tokens: torch.Tensor, config: TrainConfig,
                 device: torch.device, say: Callable[[str], None]) -> dict[str, list[float]]:
    """The optimisation loop over :class:`PairBatches`: warmup + cosine lr, clipped grads, clamped logit scale."""
    mean, std = model.visual.preprocess_cfg["mean"], model.visual.preprocess_cfg["std"]
    loss_fn = open_clip.ClipLoss()
    opt = _adamw(model, config)
    curves: dict[str, list[float]] = {"step": [], "loss": [], "logit_scale": [], "lr": []}
    model.train()
    loader = _batches(data, config, device)
    plan = loader.dataset.plan
    for step, images in loader:
        idx = torch.from_numpy(plan[step])
        lr = lr_at(step, config)
        for g in opt.param_groups:
            g["lr"] = lr
        x = normalize(images.to(device, non_blocking=True), mean, std)
        w = data.weights[idx].to(device) if data.weights is not None else None
        with _autocast(device, config.precision):
            loss = _step_loss(model, x, tokens[data.caption_idx[idx]].to(device), w, loss_fn)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, config.max_logit_scale)
        for k, v in (("step", step), ("loss", float(loss.detach())),
                     ("logit_scale", float(model.logit_scale.detach().exp())), ("lr", lr)):
            curves[k].append(v)
        if step % 50 == 0 or step == config.steps - 1:
            say(f"step {step}/{config.steps} loss {curves['loss'][-1]:.4f} a {curves['logit_scale'][-1]:.2f}")
    model.eval()
    return curves


@contextlib.contextmanager
def deterministic_torch(device: torch.device):
    """Run the block with ``torch.use_deterministic_algorithms(True)`` (and cuBLAS's fixed workspace on CUDA),
    restoring the previous setting."""
    before, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic GEMMs
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn)


def _train_model(config: TrainConfig, data: _TrainData, say: Callable[[str], None]
                 ) -> tuple[torch.nn.Module, dict[str, list[float]], float, float]:
    """A seeded random init of ``config.model`` trained on ``data``: (model, curves, wall s, CPU s)."""
    device = resolve_device(config.device)
    with torch_threads(config.threads), deterministic_torch(device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = open_clip.create_model(config.model, device="cpu", precision="fp32")  # random init, as it says
        with torch.no_grad():
            model.logit_scale.fill_(config.init_logit_scale)
        model.to(device)
        tokens = open_clip.get_tokenizer(config.model)(data.captions)  # (U, L)
        t1, c1 = time.perf_counter(), time.process_time()
        curves = _train_steps(model, data, tokens, config, device, say)
        return model, curves, time.perf_counter() - t1, time.process_time() - c1


def _data_ids(data: _TrainData) -> dict[str, Any]:
    w = data.weights
    return {
        "drop": data.drop_dir.name if data.drop_dir is not None else None,
        "drop_path": str(data.drop_dir.resolve()) if data.drop_dir is not None else None,
        "pairs": data.n,
        "distinct_captions": len(data.captions),
        "uids_sha256": _fingerprint(data.pointers.column("uid").to_pylist()),
        "world_json_sha256": data.world_sha,
        "sample_weights": None if w is None else {
            "mean": float(w.double().mean()),
            "min": float(w.min()),
            "max": float(w.max()),
            "sha256": hashlib.sha256(w.numpy().tobytes()).hexdigest(),
        },
    }


def save_checkpoint(ckpt_dir: Path, state_dict: dict[str, torch.Tensor], config_json: dict[str, Any]) -> Path:
    """Publish an open_clip local-dir folder (weights + open_clip_config.json) through the commit layer."""
    with stage_dir(ckpt_dir) as st:
        torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, st.path(WEIGHTS_FILE))
        st.write_json(CONFIG_FILE, config_json)
    return ckpt_dir / WEIGHTS_FILE


def train_contrastive(
    drop: str | os.PathLike | list[pa.Table],
    config: TrainConfig = TrainConfig(),
    *,
    name: str = "synthetic-clip",
    home: Path | None = None,
    out_dir: str | os.PathLike | None = None,
    world: Any = None,
    log: Callable[[str], None] | None = None,
    sample_weights: Sequence[float] | np.ndarray | None = None,
) -> TrainResult:
    """Train ``config.model`` on every pair of a drop; save, reload through ``load_model`` and evaluate it.

    Args:
        drop: a drop folder (``NNNNN.tar`` shards) or its pointer tables (raw_pairs shard tables, or
            :func:`clip_assets.io.drops.index_drop`).
        config: the :class:`TrainConfig`.
        name: checkpoint folder name under ``models_dir(home)`` (or ``out_dir`` when given); replaced if present.
        world: the synthetic World for the zero-shot evaluation; read from ``<drop>/../world.json`` when the drop
            is a folder, else ``World.default()``.
        log: optional callable receiving progress lines.
        sample_weights: optional per-pair weights (one per row of the drop, in row order; >= 0, finite, not all 0)
            for importance-weighted training: the loss becomes
            :func:`clip_assets.core.iwl.weighted_clip_loss` ``(1/B) sum_j w_j 0.5 (CE_i->t + CE_t->i)`` with
            each batch's weights as given (no renormalisation); all ones is exactly the plain ClipLoss.
    Returns: a :class:`TrainResult` with curves, a PNG of them, metrics and the reloaded model.
    """
    say = log or (lambda s: None)
    small.register_small_configs()
    model_cfg = open_clip.get_model_config(config.model)
    if model_cfg is None:
        raise ValueError(f"TrainConfig.model {config.model!r} is not a registered open_clip config")
    data = _prepare_data(drop, config, int(model_cfg["vision_cfg"]["image_size"]), world, sample_weights)
    say(f"indexed {data.n} pairs ({len(data.captions)} distinct captions) in {data.seconds:.1f}s")
    model, curves, seconds, cpu_seconds = _train_model(config, data, say)
    config_json: dict[str, Any] = {
        "model_name": config.model,
        "model_cfg": model_cfg,
        "preprocess_cfg": dict(model.visual.preprocess_cfg),
        "clip_assets": {"name": name, "train_config": config.to_dict(), "data": _data_ids(data), "metrics": {}},
    }
    ckpt_dir = (fs.location(out_dir) if out_dir is not None else models_dir(home)) / name
    weights = save_checkpoint(ckpt_dir, model.state_dict(), config_json)
    loaded = load_model(ModelSpec(name=config.model, checkpoint=str(weights), device="cpu", workers=0))
    metrics = _metrics(loaded, data, config, curves, seconds, cpu_seconds)
    config_json["clip_assets"]["metrics"] = metrics
    # the weights (and so the model id) are unchanged; on a store the committed version's config is replaced
    write_json(resolve(ckpt_dir) / CONFIG_FILE, config_json)
    say(f"trained {config.model} in {seconds:.1f}s: zero-shot accuracy {metrics['zero_shot_accuracy']:.3f}, "
        f"id {loaded.model_id_str}")
    return TrainResult(name=name, checkpoint_dir=ckpt_dir, checkpoint_path=weights, model_id=loaded.model_id,
                       model_id_str=loaded.model_id_str, curves=curves, metrics=metrics,
                       plot_png=plot_curves(curves, title=f"{name} ({config.model})"), loaded=loaded)


def _metrics(loaded: LoadedModel, data: _TrainData, config: TrainConfig, curves: dict[str, list[float]],
             seconds: float, cpu_seconds: float) -> dict[str, Any]:
    acc = zero_shot_accuracy(loaded, data.world, n=config.eval_images, seed=config.eval_seed)
    return {
        "zero_shot_accuracy": acc,
        "zero_shot_chance": 1.0 / len(data.world.class_names),
        "final_loss": float(np.mean(curves["loss"][-20:])),
        "final_logit_scale": curves["logit_scale"][-1],
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "data_seconds": data.seconds,
        "steps": config.steps,
        "pairs": data.n,
        "steps_per_second": config.steps / max(seconds, 1e-9),
    }


def plot_curves(curves: dict[str, list[float]], title: str = "training") -> bytes:
    """PNG bytes: loss and logit scale a = exp(logit_scale) per step."""
    fig = Figure(figsize=(8, 3.2), dpi=100)  # no pyplot: no global backend state
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(curves["step"], curves["loss"], lw=1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("contrastive loss")
    ax1.set_title("loss")
    ax2.plot(curves["step"], curves["logit_scale"], lw=1, color="tab:orange")
    ax2.set_xlabel("step")
    ax2.set_ylabel("a = exp(logit_scale)")
    ax2.set_title("logit scale")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
