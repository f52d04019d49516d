"""Load any open_clip model (name + pretrained tag, hub repo, or a local checkpoint) with a recorded, stable id.

Everything computed from a model carries its id (PAPER section 1: scores are ``s(x, y) = a <u_x, v_y>`` with
``a = exp(logit_scale)`` and, for SigLIP, a bias ``b``; both are read from the model, never hard-coded)::

    spec = ModelSpec(name="ViT-B-32", pretrained="laion2b_s34b_b79k", device="auto", precision="bf16")
    lm = load_model(spec)
    lm.model_id       # {"name", "pretrained" | "checkpoint_sha256", "logit_scale", "logit_bias", "embed_dim", ...}
    lm.model_id_str   # "ViT-B-32@laion2b_s34b_b79k" / "clip-assets-tiny@sha256:0123456789ab" / "RN50@random-init"

Sources (``open_clip.create_model`` builds the architecture and transforms in every case):

* ``checkpoint`` (or ``name="local-dir:<folder>"``): a weights file (``.safetensors``/``.bin``/``.pth``/``.pt``,
  read as a weights-only state_dict, never arbitrary pickle) or a folder in open_clip's local-dir layout
  (``open_clip_config.json`` with ``model_cfg`` + ``preprocess_cfg``, beside ``open_clip_model.safetensors`` or
  ``open_clip_pytorch_model.bin``). A Hugging Face hub cache folder of an open_clip repo (``models--org--repo``,
  resolved through ``refs/main``, or one of its ``snapshots/<rev>``) is such a folder. With a config beside the
  weights the architecture is ``create_model("local-dir:<folder>")``; without one, ``name`` must be an
  architecture open_clip knows. The model is created without weights and the checkpoint loaded right after
  (open_clip's "initialized randomly" warning is silenced for exactly that call). This is the path both user
  checkpoints and those :mod:`clip_assets.models.train` writes go through.
* ``pretrained``: an open_clip tag for ``name`` (``list_pretrained_tags_by_model``), or ``name="hf-hub:org/repo"``.
* neither: random initialisation (seeded, so the same name always gives the same weights).

Hub access: unless the user sets ``HF_HUB_OFFLINE`` themselves, huggingface_hub runs in offline mode during a
load, so weights come from the local hub cache (``HF_HUB_CACHE``) and a tag that is not cached fails at once
with a message saying what to do (set ``HF_HUB_OFFLINE=0`` to allow the download, pass a local checkpoint, or
pre-populate the cache), instead of retrying for a minute without network. ``HF_HUB_OFFLINE=0`` downloads.

Precision: weights stay fp32; "bf16"/"fp16" mean autocast on CUDA (:meth:`LoadedModel.autocast`). On CPU the
effective precision is always fp32.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import open_clip
import torch
from huggingface_hub import constants as hf_constants
from open_clip.pretrained import download_pretrained_from_hf
from open_clip.transform import PreprocessCfg, image_transform_v2
from safetensors.torch import load_file as load_safetensors

from clip_assets.config import cache_root
from clip_assets.io import commit, fs
from clip_assets.models import small

CONFIG_FILE = "open_clip_config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
# open_clip's own preference when a folder holds several weights files (factory._find_checkpoint_in_dir)
PREFERRED_WEIGHTS = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
)
LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
HUB_OFFLINE_ENV = "HF_HUB_OFFLINE"
_HUB_CACHE_RE = re.compile(r"^models--(.+?)--(.+)$")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
PRECISIONS = ("fp32", "bf16", "fp16")
RANDOM_INIT_SEED = 0


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names what was asked and what to do about it."""


@dataclass(frozen=True)
class ModelSpec:
    """What model to load and how to run it.

    name:       open_clip architecture (``open_clip.list_models()``, including the project's own configs such as
                ``clip-assets-tiny``), ``hf-hub:org/repo`` or ``local-dir:<folder>``.
    pretrained: open_clip pretrained tag for ``name`` (e.g. ``laion2b_s34b_b79k``) or None.
    checkpoint: local checkpoint file or folder (see module doc) or None. Exclusive with ``pretrained``.
    device:     "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:<i>".
    precision:  "fp32" | "bf16" | "fp16": autocast dtype on CUDA; CPU always runs fp32.
    batch_size: images per forward pass when embedding.
    workers:    DataLoader worker processes for reading/decoding (0 = in the main process).
    threads:    torch intra-op CPU threads while embedding (None: torch's default). On a shared or
                oversubscribed CPU, 1 avoids OpenMP spin contention (often several times faster).
    """

    name: str
    pretrained: str | None = None
    checkpoint: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 256
    workers: int = 2
    threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ModelLoadError(f"ModelSpec.name must be a non-empty model name, got {self.name!r}")
        if self.pretrained is not None and self.checkpoint is not None:
            raise ModelLoadError(
                f"ModelSpec for {self.name!r}: give either pretrained={self.pretrained!r} (a hub tag) or "
                f"checkpoint={self.checkpoint!r} (a local file), not both"
            )
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise ModelLoadError(f"ModelSpec.device must be 'auto', 'cpu', 'cuda' or 'cuda:<i>', got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ModelLoadError(f"ModelSpec.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ModelLoadError(f"ModelSpec.batch_size must be a positive int, got {self.batch_size!r}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ModelLoadError(f"ModelSpec.workers must be an int >= 0, got {self.workers!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ModelLoadError(f"ModelSpec.threads must be None or an int >= 1, got {self.threads!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pretrained": self.pretrained,
            "checkpoint": self.checkpoint,
            "device": self.device,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "workers": self.workers,
            "threads": self.threads,
        }


@dataclass
class LoadedModel:
    """A model ready for inference: eval mode, on ``device``, with its own transforms and tokenizer."""

    spec: ModelSpec
    model: torch.nn.Module
    preprocess: Callable  # PIL image -> (3, S, S) float tensor (open_clip's eval transform)
    tokenizer: Callable  # list[str] -> (B, context_length) long tensor
    device: torch.device
    precision: str  # effective: "fp32" on CPU whatever was asked
    model_id: dict[str, Any]
    model_id_str: str
    preprocess_cfg: dict[str, Any] = field(default_factory=dict)
    model_cfg: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        size = self.preprocess_cfg.get("size", 224)
        return int(size if isinstance(size, int) else size[0])

    @property
    def embed_dim(self) -> int:
        return int(self.model_id["embed_dim"])

    @property
    def context_length(self) -> int:
        return int(self.model_cfg.get("text_cfg", {}).get("context_length", 77))

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the chosen precision on CUDA; a no-op on CPU / fp32."""
        dtype = self.autocast_dtype
        if self.device.type == "cuda" and dtype is not None:
            return torch.autocast(device_type="cuda", dtype=dtype)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images -> (B, d) L2-normalised float32 embeddings."""
        images = images.to(self.device, non_blocking=True)
        with self.autocast():
            feats = self.model.encode_image(images)
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Captions (or already tokenized ids) -> (B, d) L2-normalised float32 embeddings."""
        tokens = texts if isinstance(texts, torch.Tensor) else self.tokenizer(list(texts))
        tokens = tokens.to(self.device, non_blocking=True)
        with self.autocast():
            feats = self.model.encode_text(tokens)
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    @property
    def logit_scale(self) -> float:
        """a = exp(logit_scale), read from the model."""
        return float(self.model_id["logit_scale"])

    @property
    def logit_bias(self) -> float | None:
        return self.model_id["logit_bias"]


# ----------------------------------------------------------------------------------------------------------------
# where the model comes from


@dataclass(frozen=True)
class _Source:
    """What to hand open_clip: ``arch`` (a name, ``local-dir:<folder>`` or ``hf-hub:org/repo``) and the weights."""

    arch: str
    id_name: str  # the name recorded in the model id
    pretrained: str | None = None  # an open_clip tag (open_clip loads it)
    weights: Path | None = None  # a local weights file, loaded right after creation


def _close_matches(name: str) -> list[str]:
    names = open_clip.list_models()
    lower = {n.lower(): n for n in names}
    hits = difflib.get_close_matches(name.lower(), list(lower), n=6, cutoff=0.5)
    return [lower[h] for h in hits]


def _check_name(name: str) -> None:
    if open_clip.get_model_config(name) is None:
        hint = _close_matches(name)
        raise ModelLoadError(
            f"unknown open_clip model name {name!r}"
            + (f"; close matches: {', '.join(hint)}" if hint else "")
            + f". See open_clip.list_models() for architectures, or pass checkpoint=<folder with {CONFIG_FILE}> "
            f"for a custom one"
        )


def _check_tag(name: str, tag: str) -> None:
    if not open_clip.is_pretrained_cfg(name, tag):
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ModelLoadError(
            f"{tag!r} is not a pretrained tag of {name!r} nor an existing file; "
            + (f"known tags: {', '.join(tags)}" if tags else f"open_clip has no pretrained weights for {name!r}")
            + "; or pass checkpoint=<local path>"
        )


def _resolve_source(spec: ModelSpec) -> _Source:
    name, pretrained, checkpoint = spec.name, spec.pretrained, spec.checkpoint
    if name.startswith(LOCAL_DIR):
        checkpoint = checkpoint or name[len(LOCAL_DIR):]
    if pretrained is not None and Path(pretrained).expanduser().is_file():
        checkpoint, pretrained = pretrained, None  # a path given as `pretrained`: treat it as a checkpoint
    if checkpoint is not None:
        return _checkpoint_source(checkpoint, name)
    if name.startswith(HF_HUB):
        return _hub_repo_source(name)
    _check_name(name)
    if pretrained is not None:
        _check_tag(name, pretrained)
    return _Source(arch=name, id_name=name, pretrained=pretrained)


def _checkpoint_source(checkpoint: str, name: str) -> _Source:
    weights, config_dir = resolve_checkpoint(checkpoint)
    if config_dir is None:
        _check_name(name)
        return _Source(arch=name, id_name=name, weights=weights)
    config = _read_config(config_dir / CONFIG_FILE)
    id_name = config.get("model_name") or _hub_repo_name(config_dir) or name
    return _Source(arch=f"{LOCAL_DIR}{config_dir}", id_name=str(id_name), weights=weights)


def _hub_repo_source(name: str) -> _Source:
    """``hf-hub:org/repo``: the weights file from the hub cache (or a download), loaded like a checkpoint."""
    repo = name[len(HF_HUB):]
    with hub_offline() as offline:
        try:
            weights = Path(download_pretrained_from_hf(repo))
        except Exception as e:
            raise _download_error(name, None, offline, e) from e
    return _Source(arch=name, id_name=name, weights=weights)


def _hub_repo_name(folder: Path) -> str | None:
    """``hf-hub:org/repo`` when ``folder`` is a hub cache snapshot ``models--org--repo/snapshots/<rev>``."""
    if folder.parent.name == "snapshots":
        m = _HUB_CACHE_RE.match(folder.parent.parent.name)
        if m:
            return f"{HF_HUB}{m.group(1)}/{m.group(2)}"
    return None


def _hub_snapshot(folder: Path) -> Path:
    """A hub cache repo folder (``models--org--repo``) -> its ``snapshots/<rev>`` for ``refs/main``."""
    ref = folder / "refs" / "main"
    if not (_HUB_CACHE_RE.match(folder.name) and ref.is_file()):
        return folder
    snap = folder / "snapshots" / ref.read_text(encoding="utf-8").strip()
    if not snap.is_dir():
        raise ModelLoadError(f"hub cache folder {str(folder)!r}: refs/main names {snap.name!r}, not in snapshots/")
    return snap


def _pick_weights(folder: Path) -> Path:
    weights = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not weights:
        raise ModelLoadError(f"checkpoint folder {str(folder)!r} holds no weights file ({', '.join(WEIGHT_SUFFIXES)})")
    if len(weights) == 1:
        return weights[0]
    preferred = [p for n in PREFERRED_WEIGHTS for p in weights if p.name == n]
    if not preferred:
        raise ModelLoadError(
            f"checkpoint folder {str(folder)!r} holds several weights files {[p.name for p in weights]}; "
            f"give the file path instead"
        )
    return preferred[0]


def fetch_checkpoint(url: str) -> Path:
    """A checkpoint on an object store (a folder, or a file in one) -> its local copy below
    ``<cache>/checkpoints/`` (open_clip loads from local disk).

    A folder the project committed is a version behind a pointer (:mod:`clip_assets.io.commit`): the version it
    names is downloaded once (versions are immutable, so the copy never goes stale; a newer commit is a new copy).
    A file in a plain folder is downloaded with its ``open_clip_config.json``, keyed by its size and time.
    """
    loc = fs.location(url)
    pointer = commit.is_pointer(loc)
    folder, name = (loc, None) if pointer or loc.is_dir() else (loc.parent, loc.name)
    version = commit.resolve(folder)
    if version == folder:  # not committed by the project: the file itself (and its config), or the whole folder
        names = [name, CONFIG_FILE] if name else [p.name for p in folder.iterdir() if p.is_file()]
        try:
            stamp = [(n, (folder / n).stat()) for n in names if (folder / n).is_file()]
        except FileNotFoundError:
            stamp = []
        if name and not (folder / name).is_file():
            stamp = []
    else:
        names, stamp = None, [version.url]
    if not stamp:
        raise ModelLoadError(f"checkpoint {url!r} does not exist on the store; give the URL of a folder the project "
                             f"wrote (models/...) or of a weights file ({'/'.join(WEIGHT_SUFFIXES)})")
    key = hashlib.sha256(repr((folder.url, stamp)).encode()).hexdigest()[:24]
    local = cache_root() / "checkpoints" / key
    if not local.is_dir():
        src = version if names is None else folder
        with commit.stage_dir(local) as st:  # a half-downloaded copy is never seen under its name
            for p in (src.rglob("*") if names is None else [folder / n for n in names]):
                if p.is_file():
                    st.write_bytes(p.relative_to(src).as_posix(), p.read_bytes())
    return local / name if name else local


def resolve_checkpoint(checkpoint: str | Path) -> tuple[Path, Path | None]:
    """A checkpoint file or folder -> (weights file, the folder of its open_clip_config.json or None). A store URL
    is fetched to the local cache first (:func:`fetch_checkpoint`)."""
    if isinstance(checkpoint, fs.StorePath) or (isinstance(checkpoint, str) and fs.is_remote(checkpoint)):
        checkpoint = fetch_checkpoint(str(checkpoint))
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"checkpoint {str(path)!r} does not exist; give the path of a state_dict file "
            f"({'/'.join(WEIGHT_SUFFIXES)}) or of a folder holding one (with {CONFIG_FILE} beside it for custom "
            f"architectures)"
        )
    weights = _pick_weights(_hub_snapshot(path)) if path.is_dir() else path
    folder = weights.parent.absolute()  # not resolved: a hub snapshot's files link into blobs/
    return weights, folder if (folder / CONFIG_FILE).is_file() else None


def _read_config(cfg_path: Path) -> dict[str, Any]:
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"checkpoint config {str(cfg_path)!r} is not valid JSON ({e}); restore it or remove it and pass "
            f"the architecture as ModelSpec.name"
        ) from e
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise ModelLoadError(f"checkpoint config {str(cfg_path)!r} has no 'model_cfg' object")
    return config


# ----------------------------------------------------------------------------------------------------------------
# hub


@contextlib.contextmanager
def hub_offline() -> Iterator[bool]:
    """huggingface_hub in offline mode for the block unless the user set ``HF_HUB_OFFLINE``; yields whether offline.

    huggingface_hub reads the variable once at import; its module constant is the switch it checks per request.
    """
    if HUB_OFFLINE_ENV in os.environ:
        yield bool(hf_constants.HF_HUB_OFFLINE)
        return
    before = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        hf_constants.HF_HUB_OFFLINE = before


def _download_error(what: str, pretrained: str | None, offline: bool, e: BaseException) -> ModelLoadError:
    asked = what + (f" / pretrained={pretrained}" if pretrained else "")
    why = (
        f"they are not in the local hub cache ({hf_constants.HF_HUB_CACHE}) and cannot be downloaded: hub access is "
        f"offline (set {HUB_OFFLINE_ENV}=0 to allow the download)"
        if offline
        else "the hub download or the local cache failed"
    )
    return ModelLoadError(
        f"cannot load the weights or tokenizer of {asked}: {why} [{type(e).__name__}: {_first_line(e)}]. Either "
        f"pass checkpoint=<local path of a state_dict or open_clip folder> (e.g. one trained with "
        f"clip_assets.models.train), or pre-populate the hub cache (HF_HOME) on a machine with internet, e.g. "
        f"open_clip.create_model({what!r}, pretrained={pretrained!r}), and copy it here"
    )


# ----------------------------------------------------------------------------------------------------------------
# creating the model


class _DropRandomInitWarning(logging.Filter):
    def __init__(self, arch: str):
        super().__init__()
        self.message = f"No pretrained weights loaded for model '{arch}'. Model initialized randomly."

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.message


@contextlib.contextmanager
def weights_loaded_after(arch: str) -> Iterator[None]:
    """Silence open_clip's "initialized randomly" warning for ``arch`` (its weights are loaded right after)."""
    root = logging.getLogger()  # open_clip warns through logging.warning, i.e. the root logger
    filt = _DropRandomInitWarning(arch)
    root.addFilter(filt)
    try:
        yield
    finally:
        root.removeFilter(filt)


def _create(source: _Source) -> tuple[torch.nn.Module, Callable]:
    """open_clip.create_model + get_tokenizer for ``source``, seeded; hub errors become ModelLoadError."""
    quiet = weights_loaded_after(source.arch) if source.weights is not None else contextlib.nullcontext()
    with hub_offline() as offline, torch.random.fork_rng(devices=[]), quiet:
        torch.manual_seed(RANDOM_INIT_SEED)  # random init is reproducible
        try:
            model = open_clip.create_model(source.arch, pretrained=source.pretrained, load_weights=source.weights is None,
                                           device="cpu", precision="fp32", weights_only=True)
            tokenizer = open_clip.get_tokenizer(source.arch)
        except Exception as e:
            if source.pretrained is not None or source.arch.startswith(HF_HUB) or _looks_like_download_error(e):
                raise _download_error(source.arch, source.pretrained, offline, e) from e
            raise ModelLoadError(f"open_clip could not create {source.arch}: {type(e).__name__}: {_first_line(e)}") from e
    return model, tokenizer


def _load_state_dict_safely(weights_file: Path) -> dict[str, torch.Tensor]:
    """weights_only torch.load (or safetensors); every failure becomes a ModelLoadError."""
    try:
        if weights_file.suffix == ".safetensors":
            sd = load_safetensors(str(weights_file), device="cpu")
        else:
            sd = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelLoadError(
            f"checkpoint {str(weights_file)!r} cannot be read as a weights-only state_dict "
            f"({type(e).__name__}: {_first_line(e)}); the file is corrupt, truncated, or "
            f"contains arbitrary pickled objects (refused for safety). Re-save it with "
            f"torch.save(model.state_dict(), path) or re-train/re-download it"
        ) from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelLoadError(
            f"checkpoint {str(weights_file)!r} does not hold a state_dict (a dict of tensors); "
            f"save it with torch.save(model.state_dict(), path)"
        )
    if next(iter(sd)).startswith("module."):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _load_weights(model: torch.nn.Module, weights_file: Path, arch: str) -> None:
    """Strict load; on a mismatch retry through open_clip's converting loader (third-party layouts)."""
    sd = _load_state_dict_safely(weights_file)
    for key in ("logit_scale", "logit_bias"):
        param = getattr(model, key, None)
        if key in sd and isinstance(param, torch.Tensor) and sd[key].shape != param.shape:
            sd[key] = sd[key].reshape(param.shape)
    try:
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError:
            open_clip.load_checkpoint(model, str(weights_file), strict=True, weights_only=True)
    except Exception as e:
        raise ModelLoadError(
            f"checkpoint {str(weights_file)!r} does not match architecture {arch!r} "
            f"({type(e).__name__}: {_first_line(e)}); pass the ModelSpec.name it was trained with, or keep its "
            f"{CONFIG_FILE} beside it"
        ) from e


# ----------------------------------------------------------------------------------------------------------------
# device


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (None: unchanged), restoring the previous count."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} was asked but CUDA is not available here; use device 'auto' or 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"device {device!r} was asked but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return dev


# ----------------------------------------------------------------------------------------------------------------
# main entry point


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load the model ``spec`` describes, in eval mode on its device, with transforms, tokenizer and id.

    Raises :class:`ModelLoadError` with an actionable message for an unknown name, an unknown tag, weights that
    cannot be downloaded (offline and not in the cache), a missing/corrupt checkpoint or one that does not
    match the architecture, and an unavailable device.
    """
    small.register_small_configs()
    device = resolve_device(spec.device)
    source = _resolve_source(spec)
    model, tokenizer = _create(source)
    sha = None
    if source.weights is not None:
        _load_weights(model, source.weights, source.arch)
        sha = file_sha256(source.weights)
    model = model.eval().requires_grad_(False).to(device)
    pp_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    model_cfg = _model_cfg(source)
    model_id = build_model_id(model, name=source.id_name, pretrained=source.pretrained, checkpoint_sha256=sha,
                              checkpoint_path=str(source.weights) if source.weights is not None else None,
                              model_cfg=model_cfg)
    return LoadedModel(
        spec=spec,
        model=model,
        preprocess=image_transform_v2(PreprocessCfg(**_pp_keys(pp_cfg)), is_train=False),
        tokenizer=tokenizer,
        device=device,
        precision=spec.precision if device.type == "cuda" else "fp32",
        model_id=model_id,
        model_id_str=model_id_string(model_id),
        preprocess_cfg=pp_cfg,
        model_cfg=model_cfg,
    )


def _model_cfg(source: _Source) -> dict[str, Any]:
    with hub_offline():  # an hf-hub config is in the cache by now
        return open_clip.get_model_config(source.arch) or {}


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _pp_keys(cfg: dict[str, Any]) -> dict[str, Any]:
    keys = ("size", "mode", "mean", "std", "interpolation", "resize_mode", "fill_color")
    out = {k: cfg[k] for k in keys if k in cfg}
    for k in ("mean", "std"):
        if k in out:
            out[k] = tuple(out[k])
    if isinstance(out.get("size"), list):
        out["size"] = tuple(out["size"])
    return out


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:400] if s else ""


def _looks_like_download_error(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return any(w in text for w in ("download", "connection", "offline", "hub", "resolve"))


def build_model_id(
    model: torch.nn.Module,
    *,
    name: str,
    pretrained: str | None = None,
    checkpoint_sha256: str | None = None,
    checkpoint_path: str | None = None,
    model_cfg: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The id recorded with everything computed from ``model``: a = exp(logit_scale), b = logit_bias or None."""
    scale = getattr(model, "logit_scale", None)
    a = float(torch.as_tensor(scale).detach().float().exp().reshape(-1)[0]) if scale is not None else 1.0
    bias = getattr(model, "logit_bias", None)
    b = float(torch.as_tensor(bias).detach().float().reshape(-1)[0]) if bias is not None else None
    cfg = model_cfg if model_cfg is not None else (open_clip.get_model_config(name) or {})
    embed_dim = cfg.get("embed_dim")
    if embed_dim is None:
        embed_dim = getattr(getattr(model, "text_projection", None), "shape", [None, None])[-1]
    return {
        "name": name,
        "pretrained": pretrained,
        "checkpoint_sha256": checkpoint_sha256,
        "checkpoint_path": checkpoint_path,
        "logit_scale": a,
        "logit_bias": b,
        "embed_dim": int(embed_dim) if embed_dim is not None else None,
        "open_clip_version": open_clip.__version__,
    }


def model_id_string(model_id: dict[str, Any]) -> str:
    """Short stable id: ``name@tag``, ``name@sha256:<12 hex>`` or ``name@random-init``."""
    if model_id.get("checkpoint_sha256"):
        return f"{model_id['name']}@sha256:{model_id['checkpoint_sha256'][:12]}"
    if model_id.get("pretrained"):
        return f"{model_id['name']}@{model_id['pretrained']}"
    return f"{model_id['name']}@random-init"
