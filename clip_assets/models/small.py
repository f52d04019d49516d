"""Small CLIP-style open_clip architectures that train on a CPU in minutes (the offline default model).

They are ordinary open_clip model configs, one JSON file each in ``clip_assets/models/model_configs/``, added to
open_clip's registry once through its public ``open_clip.add_model_config`` (:func:`register_small_configs`), so
``open_clip.create_model("clip-assets-tiny")`` and ``load_model(ModelSpec(name="clip-assets-tiny"))`` work like
for any built-in architecture. A trained checkpoint also carries its config in ``open_clip_config.json`` (open_clip's
local-dir layout), so it loads even where these names were never registered.

* ``clip-assets-tiny``: open_clip's ModifiedResNet (CLIP's RN: 3-conv stem, one bottleneck block per stage,
  attention pooling) at 32x32 px with base width 8, and a text transformer of width 64, 2 layers, 16-token context
  (the synthetic captions are <= 9 tokens); 64-d embeddings. ~0.35 M vision parameters plus the 49,408 x 64 token
  embedding of open_clip's BPE vocabulary (sparse in use). The convolutional prior matters: tiny ViTs (64 px,
  8 or 16 px patches) learned the shapes several times slower per CPU second in our trials.
  Default training (600 steps of 256 pairs) reaches zero-shot shape accuracy ~0.98 and Spearman ~0.98 against
  the true log ratio in ~2 CPU minutes (1 thread).
* ``clip-assets-small``: the same with base width 16 (~1.3 M vision parameters, ~1.8x the compute per step).
* ``clip-assets-tiny-sigmoid``: the tiny architecture with SigLIP's learnable bias (``init_logit_bias=-10``,
  ``init_logit_scale=log 10``, as open_clip's SigLIP configs), so a model carries a logit_bias ``b``. Its name
  avoids "siglip": open_clip's get_tokenizer picks the (downloaded) SigLIP tokenizer for any such name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import open_clip

TINY = "clip-assets-tiny"
SMALL = "clip-assets-small"
TINY_SIGMOID = "clip-assets-tiny-sigmoid"
CONFIG_DIR = Path(__file__).with_name("model_configs")

_registered = False


def config_names() -> list[str]:
    """Names of the project's configs (the JSON file stems), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def small_config(name: str = TINY) -> dict[str, Any]:
    """The named config as a fresh dict, read from its JSON file."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"unknown small config {name!r}; known: {config_names()}")
    return json.loads(path.read_text(encoding="utf-8"))


def register_small_configs() -> list[str]:
    """Add ``model_configs/`` to open_clip's registry (once per process). Returns the config names."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True
    return config_names()
