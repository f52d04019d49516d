"""Importance Weight Learning (PAPER section 4): train with and without importance weights, evaluate zero-shot.

* :func:`load_training_pool`: the materialized drops' pairs (raw_pairs pointer tables) joined by uid with the
  stored ``importance_weights`` of one prompt (same rows for both models; a pair without a weight is left out of
  both and counted).
* :func:`train_pair`: the same architecture from scratch, same seed, same batches, same steps, once with the
  weighted loss ``L_w`` (:func:`clip_assets.core.iwl.weighted_clip_loss`) and once with the plain CLIP loss, through
  :func:`clip_assets.models.train.train_contrastive`. The weights of the pool are divided once by their pool mean
  (``normalise="mean"``, a choice of b' that cancels in every ratio), so both runs see losses of the same magnitude
  under the same learning rate and gradient clipping; within a batch the weights are not normalised (as the
  authors do). ``normalise="none"`` uses exp(a' <u, v*> + b') as stored.
* :func:`load_eval_set` / :func:`evaluate_zero_shot`: a labelled evaluation set of the target domain and zero-shot
  classification with prompts ``template.format(class)`` -> accuracy, macro F1, per-class F1.

Evaluation sets (nothing here is specific to the synthetic world but the default):

* ``"synthetic"``: ``World.sample_labelled(n, rng, domain=target_domain)`` of the world the drops were drawn from
  (``<home>/landing/world.json``); classes ``world.class_names``.
* a Parquet file: a ``label`` column (class name string, or an integer index into ``class_names``) and either an
  ``image`` column of encoded image bytes or an ``image_path`` column (relative paths resolve next to the file).
* a folder in ImageFolder layout: ``<root>/<class name>/*.jpg|jpeg|png|webp``; classes are the sub-folder names
  (sorted) unless ``class_names`` gives them.

Training goes through ``train_contrastive``, which streams each batch from the drops' tar shards through the
pointers (peak memory flat in pool size), trains on ``TrainConfig.device`` with its precision (bf16 autocast on a
GPU) and is deterministic for a seed (same weights byte for byte on a machine).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from clip_assets.config import landing_dir, models_dir
from clip_assets.core.iwl import (
    classification_report,
    effective_sample_size,
    normalise_to_mean,
    zero_shot_predict,
)
from clip_assets.io import fs
from clip_assets.io.batches import normalize
from clip_assets.io.commit import resolve, write_json
from clip_assets.io.drops import MODEL_INPUT_COLUMNS
from clip_assets.io.images import decode_resize
from clip_assets.io.tables import drops_with, read_partition
from clip_assets.models.loading import CONFIG_FILE, LoadedModel, ModelSpec, fetch_checkpoint, load_model
from clip_assets.models.train import TrainConfig, TrainResult, train_contrastive
from clip_assets.world import World

IWL_DIR = "iwl"
MANIFEST = "manifest.json"
DEFAULT_TEMPLATE = "a photo of a {}"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def iwl_root(home: Path | None = None) -> Path:
    """``<home>/models/iwl``: checkpoints (``seed-<s>/{iwl_model,baseline_model}/``) and the manifest."""
    return models_dir(home) / IWL_DIR


# ----------------------------------------------------------------------------------------------------------------
# training pool


@dataclass
class TrainingPool:
    """Pointer rows of the training pairs and the log importance weight of each (aligned)."""

    pointers: pa.Table  # uid, caption, tar_path, offset, size (raw_pairs order, drops sorted)
    log_weight: np.ndarray  # (N,) float64, a' <u, v*> + b' as stored
    prompt: str
    drops: list[str]
    reference_model_id: str
    a_prime: float
    b_prime: float
    left_out: int = 0  # raw_pairs rows without a stored weight (not used by either model)

    @property
    def n(self) -> int:
        return self.pointers.num_rows

    def uid_fingerprint(self) -> str:
        h = hashlib.sha256()
        for u in self.pointers.column("uid").to_pylist():
            h.update(u.encode())
            h.update(b"\n")
        return h.hexdigest()


def _read_asset(asset: str, drop: str, home: Path | None, columns: list[str] | None = None) -> pa.Table:
    return read_partition(asset, drop, home, columns=columns)


def _choose_drops(home: Path | None, drops: Sequence[str] | None) -> list[str]:
    have_w = set(drops_with("importance_weights", home))
    have_raw = set(drops_with("raw_pairs", home))
    if drops:
        missing = [d for d in drops if d not in have_w or d not in have_raw]
        if missing:
            raise ValueError(
                f"drops {missing} have no raw_pairs or no importance_weights in the warehouse; materialize "
                f"importance_weights for them first (drops with weights: {sorted(have_w)})"
            )
        return list(drops)
    chosen = sorted(have_w & have_raw)
    if not chosen:
        raise ValueError(
            "no drop has both raw_pairs and importance_weights in the warehouse: materialize raw_pairs, "
            "embeddings and importance_weights for at least one drop first"
        )
    return chosen


@dataclass
class _PoolPart:
    """One drop's weighted pointer rows."""

    pointers: pa.Table
    log_weight: np.ndarray
    prompt: str
    model_ids: set[str]
    a_b: set[tuple[float, float]]
    left_out: int


def _pool_part(drop: str, home: Path | None, prompt: str | None) -> _PoolPart:
    """raw_pairs rows of ``drop`` that have a weight for ``prompt`` (None: the first stored), with those weights."""
    w = _read_asset("importance_weights", drop, home)
    prompts = list(dict.fromkeys(w.column("prompt").to_pylist()))  # stored (configured) order
    prompt = prompts[0] if prompt is None else prompt
    if prompt not in prompts:
        raise ValueError(f"drop {drop!r} has no importance weights for prompt {prompt!r}; stored prompts: {prompts}")
    w = w.filter(pc.equal(w.column("prompt"), prompt))
    raw = _read_asset("raw_pairs", drop, home, columns=list(MODEL_INPUT_COLUMNS))
    lw_by_uid = dict(zip(w.column("uid").to_pylist(), w.column("log_weight").to_numpy(zero_copy_only=False)))
    uids = raw.column("uid").to_pylist()
    keep = np.fromiter((u in lw_by_uid for u in uids), dtype=bool, count=len(uids))
    return _PoolPart(
        pointers=raw.filter(pa.array(keep)),
        log_weight=np.array([lw_by_uid[u] for u, k in zip(uids, keep) if k], dtype=np.float64),
        prompt=prompt,
        model_ids=set(w.column("model_id").unique().to_pylist()),
        a_b=set(zip(w.column("a_prime").unique().to_pylist(), w.column("b_prime").unique().to_pylist())),
        left_out=int((~keep).sum()),
    )


def load_training_pool(
    home: Path | None = None, prompt: str | None = None, drops: Sequence[str] | None = None
) -> TrainingPool:
    """Join raw_pairs pointers with the stored weights of ``prompt`` (None: the first stored prompt) by uid.

    ``drops``: which drops (default: every drop that has both raw_pairs and importance_weights).
    """
    chosen = _choose_drops(home, drops)
    parts: list[_PoolPart] = []
    for d in chosen:
        parts.append(_pool_part(d, home, prompt if prompt is not None or not parts else parts[0].prompt))
    model_ids = set().union(*(p.model_ids for p in parts))
    a_b = set().union(*(p.a_b for p in parts))
    if len(model_ids) > 1:
        raise ValueError(
            f"the importance weights of drops {chosen} come from different reference models {sorted(model_ids)}: "
            "re-materialize importance_weights for every drop with the current contrastive_model"
        )
    if len(a_b) > 1:
        raise ValueError(f"the importance weights of drops {chosen} use different (a', b'): {sorted(a_b)}; "
                         "re-materialize them with one configuration")
    pointers = pa.concat_tables([p.pointers for p in parts])
    if pointers.num_rows < 2:
        raise ValueError(f"the training pool of drops {chosen} has {pointers.num_rows} weighted pairs; need >= 2")
    a_prime, b_prime = next(iter(a_b))
    return TrainingPool(
        pointers=pointers,
        log_weight=np.concatenate([p.log_weight for p in parts]),
        prompt=parts[0].prompt,
        drops=chosen,
        reference_model_id=str(next(iter(model_ids))),
        a_prime=float(a_prime),
        b_prime=float(b_prime),
        left_out=sum(p.left_out for p in parts),
    )


def training_weights(log_weight: np.ndarray, normalise: str = "mean") -> tuple[np.ndarray, float]:
    """Per-pair training weights and the log constant divided out (``normalise``: "mean" or "none")."""
    if normalise == "mean":
        return normalise_to_mean(log_weight)
    if normalise == "none":
        with np.errstate(over="ignore"):
            w = np.exp(np.asarray(log_weight, dtype=np.float64))
        if not np.all(np.isfinite(w)):
            raise ValueError("exp(log_weight) overflows: use normalise='mean' or a smaller a'/b'")
        return w, 0.0
    raise ValueError(f"normalise must be 'mean' or 'none', got {normalise!r}")


# ----------------------------------------------------------------------------------------------------------------
# training


@dataclass
class PairResult:
    """One seed's two models."""

    seed: int
    iwl: TrainResult
    baseline: TrainResult
    weights: dict[str, Any]  # summary of the training weights


def train_pair(
    pool: TrainingPool,
    config: TrainConfig,
    out_root: Path,
    *,
    normalise: str = "mean",
    log: Callable[[str], None] | None = None,
    world: Any = None,
) -> PairResult:
    """Train ``config.model`` twice from the same seed on the same pool: weighted (IWL) and unweighted (baseline).

    Checkpoints: ``out_root/seed-<seed>/iwl_model/`` and ``.../baseline_model/`` (reload with
    ``load_model(ModelSpec(name=..., checkpoint=<folder>/open_clip_pytorch_model.bin))``).
    """
    say = log or (lambda s: None)
    w, log_c = training_weights(pool.log_weight, normalise)
    seed_dir = fs.location(out_root) / f"seed-{config.seed}"
    summary = {
        "normalise": normalise,
        "log_constant": log_c,
        "ess": effective_sample_size(w),
        "ess_fraction": effective_sample_size(w) / len(w),
        "min": float(w.min()),
        "max": float(w.max()),
        "mean": float(w.mean()),
    }
    say(f"seed {config.seed}: IWL model on {pool.n} pairs (weights ESS/M {summary['ess_fraction']:.3f})")
    iwl = train_contrastive([pool.pointers], config, name="iwl_model", out_dir=seed_dir, sample_weights=w,
                            world=world, log=say)
    say(f"seed {config.seed}: baseline model on the same {pool.n} pairs")
    base = train_contrastive([pool.pointers], config, name="baseline_model", out_dir=seed_dir, world=world, log=say)
    for res, kind in ((iwl, "iwl"), (base, "baseline")):
        _annotate(res, {"iwl": {"kind": kind, "prompt": pool.prompt, "drops": pool.drops,
                                "reference_model_id": pool.reference_model_id, "a_prime": pool.a_prime,
                                "b_prime": pool.b_prime, "weights": summary if kind == "iwl" else None}})
    return PairResult(seed=config.seed, iwl=iwl, baseline=base, weights=summary)


def _annotate(res: TrainResult, extra: dict[str, Any]) -> None:
    """Add IWL lineage to the checkpoint's open_clip_config.json (weights untouched, so the model id is too)."""
    path = resolve(res.checkpoint_dir) / CONFIG_FILE  # on a store: in the version the pointer names
    cfg = json.loads(path.read_text())
    cfg.setdefault("clip_assets", {}).update(extra)
    write_json(path, cfg)


def write_manifest(out_root: Path, payload: dict[str, Any]) -> Path:
    """Publish ``out_root/manifest.json`` atomically (commit layer: a private scratch name, then one rename)."""
    return write_json(fs.location(out_root) / MANIFEST, payload)


def read_manifest(out_root: Path) -> dict[str, Any]:
    path = fs.location(out_root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no IWL models yet ({path} is missing): materialize iwl_model/baseline_model first")
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------------------------------------------
# evaluation sets


@dataclass
class EvalSet:
    """A labelled image set: images as raw uint8 arrays (n, H, W, 3) or encoded bytes, labels into class_names."""

    class_names: list[str]
    labels: np.ndarray  # (n,) int64
    source: str
    arrays: np.ndarray | None = None  # (n, H, W, 3) uint8 (synthetic)
    encoded: list[bytes] | None = field(default=None, repr=False)  # encoded images (real sets)

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    def images_u8(self, size: int) -> torch.Tensor:
        """(n, 3, size, size) uint8 with the same geometry as training (shortest side, bicubic, centre crop)."""
        if self.arrays is not None and self.arrays.shape[1] == size and self.arrays.shape[2] == size:
            return torch.from_numpy(np.ascontiguousarray(self.arrays)).permute(0, 3, 1, 2).contiguous()
        blobs = self.encoded if self.encoded is not None else [_png(a) for a in self.arrays]
        out = torch.empty((self.n, 3, size, size), dtype=torch.uint8)
        for i, b in enumerate(blobs):
            out[i] = torch.from_numpy(decode_resize(b, size)).permute(2, 0, 1)
        return out


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def synthetic_world(home: Path | None = None):
    """The World the home's drops were drawn from (``<home>/landing/world.json``), or None when there is none."""
    wf = fs.join(landing_dir(home), "world.json")  # the landing: a folder or a store URL
    if fs.exists(wf):
        return World.from_dict(json.loads(fs.read_bytes(wf)))
    return None


def load_eval_set(
    source: str = "synthetic",
    *,
    home: Path | None = None,
    target_domain: str | None = "red",
    n: int = 1000,
    seed: int = 12345,
    class_names: Sequence[str] | None = None,
) -> EvalSet:
    """The labelled evaluation set named by ``source`` (see the module doc). Errors name what is missing."""
    if source in ("", "synthetic"):
        world = synthetic_world(home)
        if world is None:
            raise FileNotFoundError(
                f"the default IWL evaluation set is the synthetic world's target domain, but "
                f"{fs.join(landing_dir(home), 'world.json')} does not exist (this data home is not a synthetic one). Set "
                f"iwl_eval's config eval_set to a Parquet file (columns label + image bytes or image_path) or an "
                f"ImageFolder-layout folder (<root>/<class>/*.jpg) of the target domain's labelled images"
            )
        if target_domain and target_domain not in world.domains:
            raise ValueError(f"unknown target domain {target_domain!r}; the world's domains: {sorted(world.domains)}")
        lab = world.sample_labelled(int(n), np.random.default_rng(seed), domain=target_domain or None)
        return EvalSet(class_names=list(world.class_names), labels=np.asarray(lab.label, dtype=np.int64),
                       source=f"synthetic:{target_domain or 'all'}:n={n}:seed={seed}", arrays=lab.images)
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"IWL evaluation set {str(path)!r} does not exist; give a Parquet file (label + image/image_path) "
            f"or an ImageFolder-layout folder (<root>/<class>/*.jpg), or 'synthetic'"
        )
    if path.is_dir():
        return _eval_from_folder(path, class_names)
    return _eval_from_parquet(path, class_names)


def _eval_from_folder(root: Path, class_names: Sequence[str] | None) -> EvalSet:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = list(class_names) if class_names else [p.name for p in dirs]
    if not names:
        raise ValueError(f"evaluation folder {str(root)!r} has no class sub-folders (<root>/<class>/*.jpg)")
    blobs, labels = [], []
    for ci, name in enumerate(names):
        d = root / name
        if not d.is_dir():
            raise ValueError(f"evaluation folder {str(root)!r} has no sub-folder for class {name!r}")
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                blobs.append(f.read_bytes())
                labels.append(ci)
    if not blobs:
        raise ValueError(f"evaluation folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return EvalSet(class_names=names, labels=np.asarray(labels, dtype=np.int64), source=str(root), encoded=blobs)


def _eval_from_parquet(path: Path, class_names: Sequence[str] | None) -> EvalSet:
    t = fs.read_table(path)
    cols = set(t.column_names)
    if "label" not in cols or not ({"image", "image_path"} & cols):
        raise ValueError(
            f"evaluation Parquet {str(path)!r} needs a 'label' column and an 'image' (bytes) or 'image_path' "
            f"column; it has {sorted(cols)}"
        )
    raw_labels = t.column("label").to_pylist()
    if all(isinstance(v, str) for v in raw_labels):
        names = list(class_names) if class_names else sorted(set(raw_labels))
        index = {c: i for i, c in enumerate(names)}
        unknown = sorted(set(raw_labels) - set(index))
        if unknown:
            raise ValueError(f"evaluation labels {unknown[:5]} are not in class_names {names}")
        labels = [index[v] for v in raw_labels]
    else:
        if not class_names:
            raise ValueError(f"evaluation Parquet {str(path)!r} has integer labels: give class_names in the config")
        names = list(class_names)
        labels = [int(v) for v in raw_labels]
        if min(labels) < 0 or max(labels) >= len(names):
            raise ValueError(f"integer labels must be in [0, {len(names)}) for class_names {names}")
    if "image" in cols:
        blobs = [bytes(b) for b in t.column("image").to_pylist()]
    else:
        blobs = []
        for p in t.column("image_path").to_pylist():
            q = Path(p) if Path(p).is_absolute() else path.parent / p
            if not q.is_file():
                raise FileNotFoundError(f"evaluation image {str(q)!r} (from {str(path)!r}) does not exist")
            blobs.append(q.read_bytes())
    return EvalSet(class_names=names, labels=np.asarray(labels, dtype=np.int64), source=str(path), encoded=blobs)


# ----------------------------------------------------------------------------------------------------------------
# evaluation


def encode_eval_images(loaded: LoadedModel, images_u8: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """(n, 3, S, S) uint8 at the model's size -> (n, d) unit float32 embeddings."""
    mean, std = loaded.preprocess_cfg["mean"], loaded.preprocess_cfg["std"]
    outs = [
        loaded.encode_images(normalize(images_u8[i : i + batch_size].to(loaded.device), mean, std)).cpu()
        for i in range(0, images_u8.shape[0], batch_size)
    ]
    return torch.cat(outs).numpy() if outs else np.zeros((0, loaded.embed_dim), np.float32)


def evaluate_zero_shot(loaded: LoadedModel, eval_set: EvalSet, template: str = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """Zero-shot classification: argmax_c <u_x, v_{template(c)}>; accuracy, macro F1, per-class metrics."""
    u = encode_eval_images(loaded, eval_set.images_u8(loaded.image_size))  # (n, d)
    v = loaded.encode_texts([template.format(c) for c in eval_set.class_names]).cpu().numpy()  # (C, d)
    pred = zero_shot_predict(u, v)
    return classification_report(eval_set.labels, pred, eval_set.class_names)


def load_checkpoint(path: str | Path, device: str = "cpu") -> LoadedModel:
    """Reload a checkpoint this module saved (a local-dir folder or its weights file; its config names the
    architecture)."""
    p = fs.location(path)
    if isinstance(p, fs.StorePath):
        p = fetch_checkpoint(str(p))  # a local copy of the version its pointer names
    folder = p if p.is_dir() else p.parent
    return load_model(ModelSpec(name=f"local-dir:{folder}", checkpoint=str(p), device=device, workers=0))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "prompt"
