"""Contrastive models: open_clip loading, the small offline model and its training, embedding of drops.

No Dagster here; the assets in ``clip_assets.defs.embed`` call these functions.

* :mod:`.loading`  ``ModelSpec``, ``load_model(spec) -> LoadedModel`` (any open_clip name + tag, hf-hub repo,
  local-dir folder, hub cache folder or weights file), ``ModelLoadError``.
* :mod:`.small`    the small CLIP-style configs (``model_configs/*.json``), added once with open_clip.add_model_config.
* :mod:`.train`    ``TrainConfig``, ``train_contrastive(drop, config) -> TrainResult`` (checkpoint, curves, PNG).
* :mod:`.embed`    ``embed_drop``: raw_pairs pointers -> per-shard embeddings Parquet (resumable, self-healing).
* :mod:`.evaluate` zero-shot accuracy and Spearman of the self-normalised log ratio vs the synthetic truth.
"""
