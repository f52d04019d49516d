"""The ``ray`` executor of the embeddings stage: :func:`embed_drop_ray`, same inputs and outputs as
:func:`clip_assets.models.embed.embed_drop`.

Pipeline (Ray Data, one job over the shards that lack a valid output)::

    one item per model batch (shard, batch index, its rows' uid/caption/pointers; batches formed per shard from
    its first row, exactly as the local path forms them)
      -> map_batches(_prepare): CPU tasks (several small model batches each, see DECODE_TASK_SAMPLES) read the
         image bytes through the pointers, decode them, run the eval transform's Pillow part (resize, crop) and
         tokenize the captions (the local path's own functions). They pass on uint8 pixels, a quarter of
         float32's bytes through the object store and to the device; the actor finishes them on its device
         (ToTensor's scaling and Normalize: ``embed.split_preprocess``, which checks on a probe image that the
         two halves give the whole transform's pixels exactly). A transform that does not split that way
         travels as float32 pixels, fully preprocessed in the task.
      -> map_batches(_EmbedActor): a fixed-size actor pool (``concurrency``), one model load per actor, one model
         batch per call (``batch_size`` samples), ``num_gpus=1`` per actor when the cluster has GPUs (bf16/fp16
         autocast there as the spec says), fp32 on CPU
      -> the driver collects the embedded batches in whatever order they finish, orders each shard's by batch
         index and writes ``part-<shard>.parquet`` through the commit layer when its last batch is in (the local
         path's writer: same table builder, schema, metadata and uid check).

So the rows, their order and the batch composition do not depend on Ray's scheduling; a shard is visible only
once complete; skip/resume, stale-output removal and empty shards are the local path's (shared code). Arrays
travel between stages as raw little-endian bytes plus a shape (exact, and no tensor extension types needed).

A sample that cannot be decoded fails its task with the local path's RuntimeError ("cannot decode image of uid
..."), re-raised as such at the driver; shards completed before it stay written, its own shard is not (an error
raised by the code is not retried). A worker killed mid-job is recovered within explicit bounds, not Ray Data's
defaults (which restart a pool actor and resubmit its calls without limit: max_restarts = max_task_retries = -1):
a decode task is retried up to ``TASK_MAX_RETRIES`` (3) times, a model actor restarted up to
``ACTOR_MAX_RESTARTS`` (3) times with each lost call resubmitted up to ``ACTOR_MAX_TASK_RETRIES`` (3) times. Past
those the call raises; shards completed before stay written (each committed whole), nothing partial is visible,
and a re-run resumes per shard (tests/models/test_ray_faults.py kills a model actor's process mid-job).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import logging
import os
import time
import traceback
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch

from clip_assets.io import fs
from clip_assets.io.drops import MODEL_INPUT_COLUMNS, close_handles, read_pointers
from clip_assets.models.embed import (
    EmbedResult, PixelSplit, ProgressFn, _Computed, _Shard, _collect_shards, _forward, _plan, _remove_stale,
    _result, batch_bounds, cut_captions, finish_pixels, pixels_pil, pointer_where, preprocess_pil, split_preprocess,
)
from clip_assets.models.executors import RAY_ADDRESS_ENV, TASK_MAX_RETRIES, cluster_gpus, init_ray
from clip_assets.models.loading import LoadedModel, ModelSpec, load_model

_log = logging.getLogger(__name__)
DECODE_ERROR = "cannot decode image of uid"
ACTOR_MAX_RESTARTS = 3  # a model actor whose process dies is restarted (one model load each) at most this often
ACTOR_MAX_TASK_RETRIES = 3  # a model call lost with its actor is resubmitted at most this often


#: A decode task prepares whole model batches, several when they are small: on a 2-CPU local cluster a decode
#: worker sits 0.2-0.3 s idle between two tasks. One task per 256-sample batch of 32 px images spent about a third
#: of a 20k-pair job between tasks (the job timed alone: 21.2-21.5 s with 80 one-batch tasks, 14.6-14.8 s with 10
#: eight-batch ones); with uint8 pixels an 80k-pair job still spent 5.8 s of its 20.5 s between 2048-sample
#: tasks, 3 s with 8192-sample ones (18.4-18.9 s). At most this many samples per task ...
DECODE_TASK_SAMPLES = 8192
#: ... and at most this many bytes of pixels (a 256-sample batch at 224 px: 38.5 MB as uint8, six per task; 154 MB
#: as float32, one per task)
DECODE_TASK_BYTES = 256 * 2**20
#: Memory of a decode worker besides its batches (torch, torchvision and open_clip imported: Ray Data measured
#: up to 591 MiB per decode worker on a 2-CPU cluster and asks for 1.25x its peak)
DECODE_WORKER_MEMORY = 768 * 2**20


def _batch_bytes(bs: int, image_size: int, itemsize: int = 4) -> int:
    """Bytes of one model batch of pixels (``itemsize`` 4: float32; 1: the uint8 pixels of a split transform)."""
    return int(bs * 3 * image_size * image_size * itemsize)


def _batches_per_task(bs: int, image_size: int, itemsize: int = 4) -> int:
    """Model batches one decode task prepares: as many as fit both task limits, at least one."""
    return max(1, min(DECODE_TASK_SAMPLES // bs, DECODE_TASK_BYTES // _batch_bytes(bs, image_size, itemsize)))


def _decode_blocks(n_items: int, bs: int, image_size: int, cpus: float = 1, itemsize: int = 4) -> int:
    """Input blocks (= decode tasks) for ``n_items`` model batches: :func:`_batches_per_task` per block, but at
    least one per CPU of the cluster while there are batches for it (a small drop still keeps every CPU busy).

    No cap on the count: a cap would put more batches in a task than the per-task limits allow on a large drop
    (at 224 px, 100k batches under a cap of 256 blocks: 390 batches, 60 GB, per task), and the memory each task
    reserves (:func:`_decode_task_memory`) would no longer be what it holds. A block costs the driver one small
    object of pointers (its samples' uids, captions and pointers)."""
    per = _batches_per_task(bs, image_size, itemsize)
    return max(1, max(-(-n_items // per), min(n_items, int(cpus))))


def _decode_task_memory(bs: int, image_size: int, itemsize: int = 4) -> int:
    """Memory a decode task reserves: the worker itself plus its batches' pixels twice over (decoded and
    packed; Ray Data holds a task's outputs until the block is complete). Besides scheduling, this keeps the
    decode tasks' remote arguments different from the actors', so Ray Data does not fuse the decode stage into the
    model actors (it fuses map stages with equal ones)."""
    per = _batches_per_task(bs, image_size, itemsize)
    return int(DECODE_WORKER_MEMORY + 2 * per * _batch_bytes(bs, image_size, itemsize))


# ----------------------------------------------------------------------------------------------------------------
# the decode stage's transforms, unpickled once per worker process

_TRANSFORMS: dict[str, tuple[Callable, Callable, PixelSplit | None]] = {}


def _pickled_transforms(loaded: LoadedModel, split: PixelSplit | None) -> tuple[str, bytes]:
    """(content key, pickle) of the model's eval transform, tokenizer and pixel split (None: float32 pixels), as
    the decode tasks receive them."""
    import ray.cloudpickle

    blob = ray.cloudpickle.dumps((loaded.preprocess, loaded.tokenizer, split))
    return hashlib.sha256(blob).hexdigest(), blob


def _transforms(key: str, blob: bytes) -> tuple[Callable, Callable, PixelSplit | None]:
    """(preprocess, tokenizer, split) from :func:`_pickled_transforms`, unpickled on a worker's first task only.

    Ray Data hands every task its arguments afresh; unpickling open_clip's tokenizer (its 2 MB of BPE tables)
    costs about 40 ms, paid once per task otherwise. A worker keeps up to four models' transforms (a fifth clears
    the cache).
    """
    import ray.cloudpickle

    got = _TRANSFORMS.get(key)
    if got is None:
        if len(_TRANSFORMS) >= 4:
            _TRANSFORMS.clear()
        got = _TRANSFORMS[key] = ray.cloudpickle.loads(blob)
    return got


# ----------------------------------------------------------------------------------------------------------------
# arrays as bytes + shape between stages


def _pack(x: np.ndarray) -> tuple[bytes, list[int]]:
    return np.ascontiguousarray(x).tobytes(), list(x.shape)


def _unpack(data: bytes, shape: Sequence[int], dtype: Any) -> np.ndarray:
    return np.frombuffer(data, dtype=dtype).reshape([int(s) for s in shape])


# ----------------------------------------------------------------------------------------------------------------
# stage 1: CPU tasks, read + decode + preprocess + tokenize


def _prepare(batch: pa.Table, transforms: tuple[str, bytes], context_length: int) -> pa.Table:
    preprocess, tokenizer, split = _transforms(*transforms)
    rows = []
    fh: dict[str, Any] = {}
    try:
        for r in batch.to_pylist():
            datas = read_pointers(r["tar_paths"], r["offsets"], r["sizes"], fh)
            where = [pointer_where(p, o, s) for p, o, s in zip(r["tar_paths"], r["offsets"], r["sizes"])]
            if split is not None:  # uint8 (B, S, S, 3): the actor finishes them (finish_pixels)
                images = pixels_pil(datas, split, r["shard"], r["uids"], where)
            else:
                images = preprocess_pil(datas, preprocess, r["shard"], r["uids"], where).numpy().astype(np.float32)
            tokens = tokenizer(cut_captions(r["captions"], context_length)).numpy()
            img_b, img_s = _pack(images)
            tok_b, tok_s = _pack(tokens.astype(np.int64, copy=False))
            rows.append({"shard": r["shard"], "batch": r["batch"], "n_batches": r["n_batches"], "uids": r["uids"],
                         "images": img_b, "images_shape": img_s, "tokens": tok_b, "tokens_shape": tok_s})
    finally:
        close_handles(fh)
    return pa.Table.from_pylist(rows)


# ----------------------------------------------------------------------------------------------------------------
# stage 2: the actor pool, one model per actor


class _EmbedActor:
    def __init__(self, spec: ModelSpec, threads: int, split: PixelSplit | None = None):
        torch.set_num_threads(max(1, int(threads)))
        self.loaded = load_model(spec)
        self.loaded.model.eval()
        self.split = split

    def _images(self, r: dict[str, Any]) -> torch.Tensor:
        """The batch's model input: uint8 pixels copied to the model's device and finished there, or float32."""
        if self.split is None:
            return torch.from_numpy(_unpack(r["images"], r["images_shape"], np.float32).copy())
        u8 = torch.from_numpy(_unpack(r["images"], r["images_shape"], np.uint8).copy())
        return finish_pixels(u8.to(self.loaded.device), self.split)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        with torch.inference_mode():
            for r in batch.to_pylist():
                b = {"shard": r["shard"], "batch": r["batch"], "n_batches": r["n_batches"], "uids": r["uids"],
                     "images": self._images(r),
                     "tokens": torch.from_numpy(_unpack(r["tokens"], r["tokens_shape"], np.int64).copy())}
                item = _forward(b, self.loaded, None)
                if item.event is not None:
                    item.event.synchronize()
                img_b, img_s = _pack(item.img.cpu().numpy())
                txt_b, _ = _pack(item.txt.cpu().numpy())
                rows.append({"shard": r["shard"], "batch": r["batch"], "n_batches": r["n_batches"],
                             "uids": r["uids"], "img": img_b, "txt": txt_b, "shape": img_s,
                             "model_id": self.loaded.model_id_str})
        return pa.Table.from_pylist(rows)


# ----------------------------------------------------------------------------------------------------------------
# driver


def _batch_items(todo: list[_Shard], bs: int) -> list[dict[str, Any]]:
    """One item per model batch, shard by shard (each shard's pointer columns read once here)."""
    items = []
    for s in todo:
        tbl = s.source if isinstance(s.source, pa.Table) else fs.read_table(s.source, columns=list(MODEL_INPUT_COLUMNS))
        cols = {c: tbl.column(c).to_pylist() for c in MODEL_INPUT_COLUMNS}
        bounds = batch_bounds(tbl.num_rows, bs)
        for b, (lo, hi) in enumerate(bounds):
            items.append({"shard": s.shard, "batch": b, "n_batches": len(bounds), "uids": cols["uid"][lo:hi],
                          "captions": cols["caption"][lo:hi], "tar_paths": [str(p) for p in cols["tar_path"][lo:hi]],
                          "offsets": cols["offset"][lo:hi], "sizes": cols["size"][lo:hi]})
    return items


def _check_pool_fits(actors: int, cpus_per_actor: float, gpus: bool, log: Callable[[str], Any] | None) -> None:
    """Refuse, before any work, an actor pool that cannot run beside the decode tasks on this cluster.

    Actors that hold every CPU leave none for the decode tasks that feed them, and Ray Data then waits for ever;
    actors asking for more GPUs than there are never start. On the local cluster started here (no RAY_ADDRESS)
    nothing can grow, so that is a ValueError naming the figures; on a cluster at RAY_ADDRESS an autoscaler may
    still add nodes, so it is a warning in the run's log."""
    import ray

    total = ray.cluster_resources()
    cpus, n_gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    problems = []
    if actors * cpus_per_actor > cpus - 1:
        problems.append(f"{actors} actor(s) x {cpus_per_actor:g} CPU = {actors * cpus_per_actor:g} of the cluster's "
                        f"{cpus:g} CPUs, leaving less than one for the decode tasks")
    if gpus and actors > n_gpus:
        problems.append(f"{actors} actor(s) need one GPU each and the cluster has {n_gpus:g}")
    if not problems:
        return
    msg = ("the Ray actor pool does not fit the cluster: " + "; ".join(problems) + ". Lower ray_actors (or "
           "cpus_per_actor), or give the cluster more (CLIP_ASSETS_RAY_NUM_CPUS for the local one)")
    if os.environ.get(RAY_ADDRESS_ENV, "").strip():
        (log or _log.warning)(msg + " -- waiting for the cluster to grow")
        return
    raise ValueError(msg)


def _actor_spec(spec: ModelSpec, gpus: bool) -> ModelSpec:
    """The spec a model actor loads: on a cluster with GPUs, "auto" / "cuda" / "cuda:N" become the actor's own GPU
    (Ray gives each actor one as cuda:0 through CUDA_VISIBLE_DEVICES), "cpu" stays; without GPUs, "cpu" (a CUDA
    device asked for is an error naming it)."""
    if gpus:
        cuda = spec.device in ("auto", "cuda") or spec.device.startswith("cuda:")
        return dataclasses.replace(spec, device="cuda" if cuda else spec.device)
    if spec.device.startswith("cuda"):
        raise ValueError(f"the model spec asks for device {spec.device!r} but the Ray cluster has no GPU; "
                         f"use device 'auto' or 'cpu'")
    return dataclasses.replace(spec, device="cpu")


def _chain(e: BaseException) -> Iterator[BaseException]:
    """``e`` and every exception it chains (``__cause__``, ``__context__``, a Ray error's ``cause``), once each."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        x = stack.pop()
        if x is None or id(x) in seen or not isinstance(x, BaseException):
            continue
        seen.add(id(x))
        yield x
        stack += [x.__cause__, x.__context__, getattr(x, "cause", None)]


def _decode_error(e: BaseException) -> str | None:
    """The local path's decode error message inside a Ray error (its chain or its text), else None."""
    for x in _chain(e):
        for line in str(x).splitlines():
            if DECODE_ERROR in line:
                return line[line.index("shard "):] if "shard " in line else line.strip()
    return None


def _release_pool(rows: Iterator[Any], e: BaseException) -> None:
    """Free the actor pool of a job that stopped on an error, now.

    Ray Data shuts its executor down on the error by dropping its references to the pool's actors, which then
    die with their last reference. But the error's traceback frames still hold the handles, so the actors (and
    the CPUs/GPUs they reserve) would live as long as the caller keeps the error, or until a garbage
    collection: the next job's actors then wait for those resources behind its own decode tasks, for ever on a
    small cluster. So: close the row iterator, clear the locals of the error chain's finished frames (the
    tracebacks stay printable: files, lines, code), and collect the cycles.
    """
    close = getattr(rows, "close", None)
    if close is not None:
        close()
    for x in _chain(e):
        if x.__traceback__ is not None:
            traceback.clear_frames(x.__traceback__)
    gc.collect()


def embed_drop_ray(
    source: str | os.PathLike | Sequence[Any],
    model: ModelSpec | LoadedModel,
    out_dir: str | os.PathLike,
    progress: ProgressFn | None = None,
    *,
    batch_size: int | None = None,
    concurrency: int = 1,
    cpus_per_actor: float = 1.0,
    decode: str = "auto",
    force: bool = False,
    num_cpus: int | None = None,
    log: Callable[[str], Any] | None = None,
) -> EmbedResult:
    """:func:`clip_assets.models.embed.embed_drop` as a Ray Data job (see the module doc); same arguments where
    they overlap, same files, same :class:`EmbedResult`.

    Args:
        model: a :class:`ModelSpec` (the driver then loads it on CPU once, for its id, transforms and tokenizer;
            the actors load the spec as given, so device "auto" means a GPU each where the cluster has GPUs) or
            an already loaded model (its spec is what the actors load).
        concurrency: actors in the pool (each loads the model once; one GPU each when the cluster has GPUs).
        cpus_per_actor: CPUs each actor reserves (also its torch thread count unless the spec sets threads);
            leave at least one CPU of the cluster to the decode tasks.
        decode: "auto" or "pil" (Pillow in the CPU tasks; device decoding is the local path's).
        num_cpus: CPUs of a local cluster started here (see :func:`clip_assets.models.executors.init_ray`).
        log: where to say which cluster was used (default: this module's logger).
    """
    import ray

    t0 = time.perf_counter()
    if decode not in ("auto", "pil"):
        raise ValueError(f"the ray executor decodes with Pillow in CPU tasks: decode must be 'auto' or 'pil', "
                         f"got {decode!r}")
    if int(concurrency) < 1 or float(cpus_per_actor) <= 0:
        raise ValueError(f"concurrency must be >= 1 and cpus_per_actor > 0, got {concurrency}, {cpus_per_actor}")
    loaded = model if isinstance(model, LoadedModel) else load_model(dataclasses.replace(model, device="cpu"))
    bs = int(batch_size or loaded.spec.batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {bs}")
    out_dir = fs.location(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = _collect_shards(source, out_dir)
    removed = _remove_stale(out_dir, shards)
    todo, skipped, writer = _plan(shards, loaded, progress, force)
    if todo:
        init_ray(num_cpus=num_cpus, log_fn=log)
        gpus = cluster_gpus() >= 1
        _check_pool_fits(int(concurrency), float(cpus_per_actor), gpus, log)
        # the caller's spec, not the driver's CPU copy: device "auto" must mean the actors' GPUs
        actor_spec = _actor_spec(model if isinstance(model, ModelSpec) else loaded.spec, gpus)
        items = _batch_items(todo, bs)
        # the decode tasks carry uint8 pixels (a quarter of float32's bytes) when the transform splits
        split = split_preprocess(loaded.preprocess, loaded.image_size)
        itemsize = 1 if split is not None else 4
        blocks = _decode_blocks(len(items), bs, loaded.image_size, ray.cluster_resources().get("CPU", 1), itemsize)
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        ds = ds.map_batches(
            _prepare, batch_size=1, batch_format="pyarrow", num_cpus=1, max_retries=TASK_MAX_RETRIES,
            memory=_decode_task_memory(bs, loaded.image_size, itemsize),
            fn_kwargs={"transforms": _pickled_transforms(loaded, split), "context_length": loaded.context_length},
        )
        ds = ds.map_batches(
            _EmbedActor, batch_size=1, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=int(concurrency)),
            num_cpus=float(cpus_per_actor), num_gpus=1 if gpus else 0,
            max_restarts=ACTOR_MAX_RESTARTS, max_task_retries=ACTOR_MAX_TASK_RETRIES,
            fn_constructor_kwargs={"spec": actor_spec,
                                   "threads": loaded.spec.threads or max(1, int(cpus_per_actor)),
                                   "split": None if split is None else dataclasses.replace(split, pil=None)},
        )
        rows = iter(ds.iter_rows())
        try:
            for r in rows:
                if r["model_id"] != loaded.model_id_str:
                    raise RuntimeError(f"the Ray actors loaded model {r['model_id']}, the driver "
                                       f"{loaded.model_id_str}: do all nodes see the same checkpoint?")
                img = _unpack(r["img"], r["shape"], np.float16)
                txt = _unpack(r["txt"], r["shape"], np.float16)
                writer.add(_Computed(r["shard"], int(r["batch"]), int(r["n_batches"]), list(r["uids"]),
                                     torch.from_numpy(img.copy()), torch.from_numpy(txt.copy())))
        except Exception as e:
            _release_pool(rows, e)
            msg = _decode_error(e)
            if msg is not None:
                raise RuntimeError(msg) from e
            raise
        writer.check_complete()
        writer.written.sort()  # completion order is Ray's; the result lists shards in order
    return _result(loaded, shards, writer, skipped, removed, t0)
