"""Load any open_clip model (name + pretrained tag, or a local checkpoint) with a recorded, stable id.

Everything computed from a model carries its id (PAPER section 1: scores are ``s(x, y) = a <u_x, v_y>`` with
``a = exp(logit_scale)`` and, for SigLIP, a bias ``b``; both are read from the model, never hard-coded)::

    spec = ModelSpec(name="ViT-B-32", pretrained="laion2b_s34b_b79k", device="auto", precision="bf16")
    lm = load_model(spec)
    lm.model_id       # {"name", "pretrained" | "checkpoint_sha256", "logit_scale", "logit_bias", "embed_dim", ...}
    lm.model_id_str   # "ViT-B-32@laion2b_s34b_b79k" / "clip-assets-tiny@sha256:0123456789ab" / "RN50@random-init"

Sources, in order:

* ``checkpoint``: a local file (``.pt``/``.pth``/``.bin``/``.safetensors``, a state_dict, loaded with
  ``torch.load(weights_only=True)`` -- never arbitrary pickle) or a folder holding one. When an
  ``open_clip_config.json`` (``{"model_cfg": ..., "preprocess_cfg": ...}``, open_clip's hub/local-dir format) lies
  beside it, its architecture is used (and registered with open_clip under ``model_name``); otherwise ``name``
  must be an architecture open_clip knows. This is the path both user checkpoints and the checkpoints that
  :mod:`clip_assets.models.train` writes go through.
* ``pretrained``: an open_clip tag for ``name`` (``list_pretrained_tags_by_model``). Downloads from the hub, or
  reads the local hub cache. When the hub is unreachable (quick socket probe) the call runs in huggingface_hub
  offline mode so it fails at once (or succeeds from a pre-populated cache) instead of retrying for a minute.
* neither: random initialisation (seeded, so the same name always gives the same weights).

Precision: weights stay fp32; "bf16"/"fp16" mean autocast on CUDA (:meth:`LoadedModel.autocast`). On CPU the
effective precision is always fp32.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import json
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

CONFIG_FILE = "open_clip_config.json"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
PRECISIONS = ("fp32", "bf16", "fp16")
RANDOM_INIT_SEED = 0


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names what was asked and what to do about it."""


@dataclass(frozen=True)
class ModelSpec:
    """What model to load and how to run it.

    name:       open_clip architecture (``open_clip.list_models()``), a custom config registered with
                :func:`register_model_config` (e.g. ``clip-assets-tiny``), or ``hf-hub:org/repo``.
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
# open_clip registry helpers


def register_model_config(name: str, model_cfg: dict[str, Any], *, overwrite: bool = False) -> str:
    """Make ``model_cfg`` (``{"embed_dim", "vision_cfg", "text_cfg", ...}``) creatable as ``name`` by open_clip.

    Returns the name it was registered under. Registering the same config twice is a no-op; a *different*
    config under an existing name raises unless ``overwrite`` (built-in architectures are never overwritten).
    """
    import open_clip
    from open_clip import factory

    if not all(k in model_cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ModelLoadError(
            f"model config for {name!r} needs keys embed_dim, vision_cfg, text_cfg; got {sorted(model_cfg)}"
        )
    existing = open_clip.get_model_config(name)
    if existing is not None:
        if _canon(existing) == _canon(model_cfg):
            return name
        if not overwrite or name in _builtin_names():
            raise ModelLoadError(
                f"a different model config is already registered as {name!r}; choose another name"
            )
    registry = getattr(factory, "_MODEL_CONFIGS", None)
    if not isinstance(registry, dict):  # pragma: no cover - open_clip internals moved
        raise ModelLoadError("this open_clip version has no model-config registry; cannot register custom configs")
    registry[name] = copy.deepcopy(model_cfg)
    return name


_BUILTINS: frozenset[str] | None = None


def _builtin_names() -> frozenset[str]:
    global _BUILTINS
    if _BUILTINS is None:
        import open_clip

        cfg_dir = Path(open_clip.__file__).parent / "model_configs"
        _BUILTINS = frozenset(p.stem for p in cfg_dir.glob("*.json"))
    return _BUILTINS


def _canon(cfg: dict[str, Any]) -> str:
    return json.dumps(cfg, sort_keys=True, default=str)


def _ensure_custom_configs() -> None:
    # The project's own small architectures (clip-assets-tiny, ...) are always available by name.
    from clip_assets.models import small

    small.register_small_configs()


def _close_matches(name: str) -> list[str]:
    import open_clip

    names = open_clip.list_models()
    lower = {n.lower(): n for n in names}
    hits = difflib.get_close_matches(name.lower(), list(lower), n=6, cutoff=0.5)
    return [lower[h] for h in hits]


# ----------------------------------------------------------------------------------------------------------------
# network / hub


_HUB_REACHABLE: dict[str, bool] = {}


def hub_reachable(timeout: float = 2.0) -> bool:
    """Quick TCP probe of the Hugging Face endpoint (cached per process)."""
    try:
        from huggingface_hub import constants

        endpoint = getattr(constants, "ENDPOINT", "https://huggingface.co")
    except Exception:  # pragma: no cover
        endpoint = "https://huggingface.co"
    m = re.match(r"^(?:https?://)?([^/:]+)(?::(\d+))?", endpoint)
    host, port = (m.group(1), int(m.group(2) or 443)) if m else ("huggingface.co", 443)
    key = f"{host}:{port}"
    if key not in _HUB_REACHABLE:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                _HUB_REACHABLE[key] = True
        except OSError:
            _HUB_REACHABLE[key] = False
    return _HUB_REACHABLE[key]


@contextlib.contextmanager
def _hub_offline_if_unreachable(may_use_hub: bool = True) -> Iterator[bool]:
    """Run huggingface_hub in offline mode (cache only, no retries) while the hub is unreachable.

    The probe only happens when the load may touch the hub (a pretrained tag, an hf-hub: name, an HF tokenizer)."""
    offline = may_use_hub and not hub_reachable()
    if not offline:
        yield False
        return
    try:
        from huggingface_hub import constants
    except Exception:  # pragma: no cover
        yield True
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        constants.HF_HUB_OFFLINE = before


# ----------------------------------------------------------------------------------------------------------------
# checkpoints


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_checkpoint(checkpoint: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """A checkpoint file or folder -> (weights file, its open_clip_config.json content or None)."""
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"checkpoint {str(path)!r} does not exist; give the path of a state_dict file "
            f"({'/'.join(WEIGHT_SUFFIXES)}) or of a folder holding one (with {CONFIG_FILE} beside it for custom "
            f"architectures)"
        )
    if path.is_dir():
        weights = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        if not weights:
            raise ModelLoadError(
                f"checkpoint folder {str(path)!r} holds no weights file ({', '.join(WEIGHT_SUFFIXES)})"
            )
        if len(weights) > 1:
            raise ModelLoadError(
                f"checkpoint folder {str(path)!r} holds several weights files {[p.name for p in weights]}; "
                f"give the file path instead"
            )
        weights_file = weights[0]
    else:
        weights_file = path
    cfg_path = weights_file.parent / CONFIG_FILE
    config = None
    if cfg_path.is_file():
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelLoadError(
                f"checkpoint config {str(cfg_path)!r} is not valid JSON ({e}); restore it or remove it and pass "
                f"the architecture as ModelSpec.name"
            ) from e
        if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
            raise ModelLoadError(f"checkpoint config {str(cfg_path)!r} has no 'model_cfg' object")
    return weights_file, config


def _load_state_dict_safely(weights_file: Path) -> dict[str, torch.Tensor]:
    """weights_only torch.load (or safetensors); every failure becomes a ModelLoadError."""
    try:
        if weights_file.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(weights_file), device="cpu")
        else:
            sd = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelLoadError(
            f"checkpoint {str(weights_file)!r} cannot be read as a weights-only state_dict "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); the file is corrupt, truncated, or "
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
    cannot be downloaded (no network and not in the cache), a missing/corrupt checkpoint or one that does not
    match the architecture, and an unavailable device.
    """
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    _ensure_custom_configs()
    device = resolve_device(spec.device)
    precision = spec.precision if device.type == "cuda" else "fp32"
    name = spec.name
    pretrained = spec.pretrained
    checkpoint = spec.checkpoint
    if pretrained is not None and Path(pretrained).expanduser().is_file():
        checkpoint, pretrained = pretrained, None  # a path given as `pretrained`: treat it as a checkpoint

    is_hub_name = name.startswith("hf-hub:")
    ckpt_file: Path | None = None
    ckpt_config: dict[str, Any] | None = None
    state_dict: dict[str, torch.Tensor] | None = None
    force_pp: dict[str, Any] | None = None
    ckpt_sha: str | None = None
    if checkpoint is not None:
        ckpt_file, ckpt_config = resolve_checkpoint(checkpoint)
        state_dict = _load_state_dict_safely(ckpt_file)
        ckpt_sha = file_sha256(ckpt_file)
        if ckpt_config is not None:
            cfg_name = str(ckpt_config.get("model_name") or name)
            if not _config_name_free(cfg_name, ckpt_config["model_cfg"]):
                cfg_name = f"{cfg_name}-{ckpt_sha[:12]}"  # same name, different architecture: keep both
            name = register_model_config(cfg_name, ckpt_config["model_cfg"])
            force_pp = ckpt_config.get("preprocess_cfg") or None

    if not is_hub_name and open_clip.get_model_config(name) is None:
        hint = _close_matches(name)
        raise ModelLoadError(
            f"unknown open_clip model name {name!r}"
            + (f"; close matches: {', '.join(hint)}" if hint else "")
            + ". See open_clip.list_models() for architectures, or pass checkpoint=<folder with "
            f"{CONFIG_FILE}> for a custom one"
        )
    if pretrained is not None and not is_hub_name:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if not open_clip.is_pretrained_cfg(name, pretrained):
            raise ModelLoadError(
                f"{pretrained!r} is not a pretrained tag of {name!r} nor an existing file; "
                + (f"known tags: {', '.join(tags)}" if tags else f"open_clip has no pretrained weights for {name!r}")
                + "; or pass checkpoint=<local path>"
            )

    what = f"{name}" + (f" / pretrained={pretrained}" if pretrained else "")
    text_cfg = (open_clip.get_model_config(name) or {}).get("text_cfg", {}) if not is_hub_name else {}
    may_use_hub = bool(pretrained or is_hub_name or "siglip" in name.lower() or text_cfg.get("hf_tokenizer_name")
                       or text_cfg.get("hf_model_name"))
    try:
        with _hub_offline_if_unreachable(may_use_hub) as offline, torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)  # random init is reproducible
            try:
                model = open_clip.create_model(
                    name,
                    pretrained=pretrained,
                    device="cpu",
                    precision="fp32",
                    force_preprocess_cfg=force_pp,
                    weights_only=True,
                )
                tokenizer = open_clip.get_tokenizer(name)
            except Exception as e:
                if pretrained is not None or is_hub_name or _looks_like_download_error(e):
                    raise ModelLoadError(
                        (
                            f"cannot load the weights or tokenizer of {what}: they are not in the local hub cache and cannot be "
                            f"downloaded (no network: the Hugging Face hub is unreachable from here)"
                            if offline
                            else f"cannot load the weights or tokenizer of {what}: the hub download or the local cache failed"
                        )
                        + f" [{type(e).__name__}: {_first_line(e)}]. Either pass checkpoint=<local path of a "
                        f"state_dict> (e.g. one trained with clip_assets.models.train), or pre-populate the hub "
                        f"cache (HF_HOME) on a machine with internet, e.g. open_clip.create_model({name!r}, "
                        f"pretrained={pretrained!r}), and copy it here"
                    ) from e
                raise
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"open_clip could not create {what}: {type(e).__name__}: {_first_line(e)}") from e

    if state_dict is not None:
        try:
            _load_into(model, state_dict, ckpt_file)
        except Exception as e:
            raise ModelLoadError(
                f"checkpoint {str(ckpt_file)!r} does not match architecture {name!r} "
                f"({type(e).__name__}: {_first_line(e)}); pass the ModelSpec.name it was trained with, or keep its "
                f"{CONFIG_FILE} beside it"
            ) from e

    model.eval().requires_grad_(False)
    model = model.to(device)
    pp_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    preprocess = image_transform_v2(PreprocessCfg(**_pp_keys(pp_cfg)), is_train=False)
    model_cfg = open_clip.get_model_config(name) or {}

    model_id = build_model_id(
        model,
        name=name,
        pretrained=pretrained,
        checkpoint_sha256=ckpt_sha,
        checkpoint_path=str(ckpt_file) if ckpt_file is not None else None,
    )
    return LoadedModel(
        spec=spec,
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        device=device,
        precision=precision,
        model_id=model_id,
        model_id_str=model_id_string(model_id),
        preprocess_cfg=pp_cfg,
        model_cfg=model_cfg,
    )


def _load_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], ckpt_file: Path) -> None:
    """Strict load; on a mismatch retry through open_clip's converting loader (third-party layouts)."""
    import open_clip

    sd = dict(state_dict)
    for key in ("logit_scale", "logit_bias"):
        param = getattr(model, key, None)
        if key in sd and isinstance(param, torch.Tensor) and sd[key].shape != param.shape:
            sd[key] = sd[key].reshape(param.shape)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError:
        open_clip.load_checkpoint(model, str(ckpt_file), strict=True, weights_only=True)


def _config_name_free(name: str, model_cfg: dict[str, Any]) -> bool:
    import open_clip

    existing = open_clip.get_model_config(name)
    return existing is None or _canon(existing) == _canon(model_cfg)


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
) -> dict[str, Any]:
    """The id recorded with everything computed from ``model``: a = exp(logit_scale), b = logit_bias or None."""
    import open_clip

    scale = getattr(model, "logit_scale", None)
    a = float(torch.as_tensor(scale).detach().float().exp().reshape(-1)[0]) if scale is not None else 1.0
    bias = getattr(model, "logit_bias", None)
    b = float(torch.as_tensor(bias).detach().float().reshape(-1)[0]) if bias is not None else None
    cfg = open_clip.get_model_config(name) or {}
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
