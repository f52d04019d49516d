"""The model card of the current ``contrastive_model``: which model every downstream asset loads.

``<home>/models/contrastive_model/card.json`` holds the :class:`~clip_assets.models.loading.ModelSpec` to load
(a pretrained name + tag, or a local checkpoint path) and the resulting model id. The ``contrastive_model`` asset
writes it (atomically, :func:`clip_assets.io.commit.write_json`); ``embeddings``, ``importance_weights`` and the
rest read it, so they always use the model that Dagster's lineage shows upstream of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clip_assets.config import models_dir
from clip_assets.io.commit import write_json
from clip_assets.models.loading import LoadedModel, ModelSpec, load_model

CARD_DIR = "contrastive_model"


def card_path(home: Path | None = None) -> Path:
    return models_dir(home) / CARD_DIR / "card.json"


def write_card(spec: dict[str, Any], model_id: dict[str, Any], model_id_str: str, extra: dict | None = None,
               home: Path | None = None) -> Path:
    """Publish the card (atomically, through the commit layer)."""
    card = {"spec": spec, "model_id": model_id, "model_id_str": model_id_str, **(extra or {})}
    return write_json(card_path(home), card)


def read_card(home: Path | None = None) -> dict[str, Any]:
    path = card_path(home)
    if not path.is_file():
        raise FileNotFoundError(
            f"no contrastive model yet ({path} is missing): materialize the 'contrastive_model' asset first"
        )
    return json.loads(path.read_text())


def load_current_model(home: Path | None = None, **overrides) -> LoadedModel:
    """Load the model the card names; ``overrides`` replace spec fields (device, precision, batch_size, workers)."""
    spec = dict(read_card(home)["spec"])
    spec.update({k: v for k, v in overrides.items() if v is not None})
    return load_model(ModelSpec(**spec))
