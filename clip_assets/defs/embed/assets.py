"""Embed domain: contrastive_model (global) -> embeddings (per drop)."""

import math
from typing import Literal

import dagster as dg
from pydantic import Field, model_validator

from clip_assets.config import cache_dir
from clip_assets.defs.keys import CONTRASTIVE_MODEL, EMBEDDINGS, RAW_PAIRS
from clip_assets.defs.partitions import DROP_GRAIN, GLOBAL_GRAIN, drops_partitions
from clip_assets.defs.plots import png_metadata
from clip_assets.defs.resources import HomeResource
from clip_assets.defs.specs import column_schema
from clip_assets.io.commit import resolve
from clip_assets.io.completeness import embedding_quality, partition_rows
from clip_assets.io.drops import validate_drop_name
from clip_assets.io.warehouse import partition_dir
from clip_assets.models.card import load_current_model, write_card
from clip_assets.models.embed import embed_drop, embedding_schema
from clip_assets.models.executors import executor
from clip_assets.models.loading import ModelSpec, load_model
from clip_assets.models.train import TrainConfig, train_contrastive
from clip_assets.world import write_drops


class ContrastiveModelConfig(dg.Config):
    """Which model every downstream asset uses.

    source: "train" (offline default: train the small CLIP-style model on a synthetic training drop),
            "pretrained" (open_clip `name` + `pretrained` tag, needs the hub or a filled cache),
            "checkpoint" (a local checkpoint file or folder, e.g. one this project trained).
    device/precision/batch_size/workers: how embeddings run the model (workers = DataLoader processes; 0 suits
            a small CPU machine, raise it on a GPU machine so decoding keeps up).
    """

    source: Literal["train", "pretrained", "checkpoint"] = "train"
    name: str = "ViT-B-32"
    pretrained: str = "laion2b_s34b_b79k"
    checkpoint: str = ""
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    batch_size: int = Field(256, ge=1)
    workers: int = Field(0, ge=0)
    train_pairs: int = Field(20_000, ge=1)
    train_seed: int = Field(1234, ge=0)
    train_steps: int = Field(600, ge=1)
    train_batch_size: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _checkpoint_given(self) -> "ContrastiveModelConfig":
        if self.source == "checkpoint" and not self.checkpoint:
            raise ValueError("source='checkpoint' needs config checkpoint=<local path>")
        return self


def _training_drop(home, pairs: int, seed: int):
    """The synthetic training drop (outside landing, so the sensor never ingests it); written once per seed/size.
    It is a pure function of the seed, so a store home keeps it in its local cache (training reads every image
    many times: from local disk, not through the store)."""
    out = cache_dir(home) / "training"
    name = f"train-s{seed}-n{pairs}-"
    drop = out / f"{name}000"
    if not drop.is_dir():
        write_drops(out, drops=1, pairs=pairs, seed=seed, prefix=name)
    return drop


def _model_spec(context, config: ContrastiveModelConfig, home) -> tuple[ModelSpec, dict]:
    """The spec the card records (training the model first when source = "train"), and training metadata."""
    run = dict(device=config.device, precision=config.precision, batch_size=config.batch_size,
               workers=config.workers)
    if config.source == "pretrained":
        return ModelSpec(name=config.name, pretrained=config.pretrained or None, **run), {}
    if config.source == "checkpoint":
        return ModelSpec(name=config.name, checkpoint=config.checkpoint, **run), {}
    drop = _training_drop(home, config.train_pairs, config.train_seed)
    tc = TrainConfig(steps=config.train_steps, batch_size=config.train_batch_size, seed=config.train_seed)
    res = train_contrastive(drop, tc, name="contrastive_model-train", home=home, log=context.log.info)
    meta = {"training_curves": png_metadata(res.plot_png), "train_pairs": config.train_pairs,
            "train_steps": config.train_steps,
            **{k: v for k, v in res.metrics.items() if isinstance(v, (int, float, str))}}
    return ModelSpec(name=res.model_id["name"], checkpoint=str(res.checkpoint_path), **run), meta


@dg.asset(
    key=CONTRASTIVE_MODEL,
    description=(
        "The CLIP-style model read as a density-ratio estimator. Offline default: a small open_clip model trained "
        "from scratch on a synthetic training drop (checkpoint + config saved under `<home>/models/`, reloaded "
        "through the same local-checkpoint path as any user checkpoint). Or any open_clip pretrained model / local "
        "checkpoint by config. Writes the model card that every downstream asset loads; its id (name, tag or "
        "checkpoint sha256, logit scale a, bias b) is recorded on everything computed from it. Grain: global."
    ),
    group_name="embed",
    kinds={"pytorch"},
    tags=GLOBAL_GRAIN,
    pool="gpu",
    automation_condition=dg.AutomationCondition.on_missing(),
    check_specs=[dg.AssetCheckSpec("model_loads", asset=CONTRASTIVE_MODEL, blocking=True,
                                   description="the card's model reloads and has a finite logit scale")],
)
def contrastive_model(context: dg.AssetExecutionContext, config: ContrastiveModelConfig, home: HomeResource):
    spec, meta = _model_spec(context, config, home.path())
    loaded = load_model(spec)
    write_card(spec.to_dict(), loaded.model_id, loaded.model_id_str, home=home.path())
    a = loaded.logit_scale
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(loaded.model_id_str),
        metadata={"model_id": loaded.model_id_str, "logit_scale_a": a, "logit_bias_b": loaded.logit_bias,
                  "embed_dim": loaded.embed_dim, "device": str(loaded.device), "precision": loaded.precision,
                  **meta},
    )
    yield dg.AssetCheckResult(check_name="model_loads", passed=bool(math.isfinite(a) and a > 0),
                              metadata={"logit_scale_a": a})


class EmbeddingsConfig(dg.Config):
    """Overrides of the model card's run settings for this run (empty / 0 / -1 = the card's).

    executor: "local" (in process) or "ray" (a Ray Data job on the cluster at RAY_ADDRESS, else a local one);
              empty = $CLIP_ASSETS_EXECUTOR, else "local".
    ray_actors: model actors in the Ray job's pool (one model load, and one GPU where the cluster has them, each).
    """

    device: str = ""
    batch_size: int = Field(0, ge=0)
    workers: int = Field(-1, ge=-1)
    executor: str = ""
    ray_actors: int = Field(1, ge=1)


@dg.asset(
    key=EMBEDDINGS,
    deps=[RAW_PAIRS, CONTRASTIVE_MODEL],
    partitions_def=drops_partitions,
    description=(
        "L2-normalised image and text embeddings of one drop's kept pairs from the current contrastive_model: "
        "uid, image_emb, text_emb (fixed-size float16 lists), model_id. One Parquet per shard, written "
        "atomically; resumable per shard (a re-run after a kill computes only missing shards). Runs in the "
        "'gpu' concurrency pool. Grain: (drop, uid)."
    ),
    group_name="embed",
    kinds={"pytorch", "parquet"},
    tags=DROP_GRAIN,
    pool="gpu",
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[dg.AssetCheckSpec("embeddings_valid", asset=EMBEDDINGS, blocking=True,
                                   description="one row per raw_pairs row (each shard's uids verified while "
                                               "embedding); the shards written by this run finite and unit-norm")],
)
def embeddings(context: dg.AssetExecutionContext, config: EmbeddingsConfig, home: HomeResource):
    drop = validate_drop_name(context.partition_key)
    h = home.path()
    run_on = executor(config.executor)
    loaded = load_current_model(h, device=config.device or None, batch_size=config.batch_size or None,
                                workers=config.workers if config.workers >= 0 else None)

    def progress(done, total, ips):
        context.log.info(f"embeddings {drop}: shard {done}/{total}, {ips:.0f} images/s")

    # the version raw_pairs' pointer names now: a re-ingest committing meanwhile cannot mix into this read
    src, out = resolve(partition_dir("raw_pairs", drop, h)), partition_dir("embeddings", drop, h)
    if run_on == "ray":
        from clip_assets.models.embed_ray import embed_drop_ray  # ray is an optional extra

        res = embed_drop_ray(src, loaded, out, progress=progress, concurrency=config.ray_actors, log=context.log.info)
    else:
        res = embed_drop(src, loaded, out, progress=progress)
    raw_rows = partition_rows("raw_pairs", drop, h)
    written = {f"part-{s}" for s in res.written}
    quality = embedding_quality([f for f in res.files if f.stem in written])
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": res.rows_total, "drop": drop, **res.to_metadata(),
        "device": str(loaded.device), "precision": loaded.precision, "executor": run_on,
        "dagster/column_schema": column_schema(embedding_schema(loaded.embed_dim)),
    })
    ok = bool(res.rows_total == raw_rows and quality["ok"])
    yield dg.AssetCheckResult(
        check_name="embeddings_valid", passed=ok,
        description=f"drop {drop}: {res.rows_total} embedding rows for {raw_rows} raw_pairs rows",
        metadata={"drop": drop, "rows": res.rows_total, "raw_pairs_rows": raw_rows,
                  "shards_checked_for_norms": len(written), **{k: v for k, v in quality.items() if k != "ok"},
                  "model_id": res.model_id})


defs_assets = [contrastive_model, embeddings]
