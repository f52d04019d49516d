"""Contrastive models: open_clip loading, the small offline model and its training, embedding of drops.

No Dagster here; the assets in ``clip_assets.defs.embed`` call these functions.

* :mod:`.loading`  ``ModelSpec``, ``load_model(spec) -> LoadedModel`` (any open_clip name + tag, or a local
  checkpoint), ``ModelLoadError``.
* :mod:`.small`    the small CLIP-style open_clip configs (``clip-assets-tiny``), registered by name.
* :mod:`.train`    ``TrainConfig``, ``train_contrastive(drop, config) -> TrainResult`` (checkpoint, curves, PNG).
* :mod:`.embed`    ``embed_drop`` / ``embed_shard``: raw_pairs pointers -> per-shard embeddings Parquet.
* :mod:`.evaluate` zero-shot accuracy and Spearman of the self-normalised log ratio vs the synthetic truth.
"""
