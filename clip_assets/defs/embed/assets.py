"""Embed domain: contrastive_model (global) -> embeddings (per drop)."""

from typing import Literal

import dagster as dg

from clip_assets.defs.partitions import DROP_GRAIN, GLOBAL_GRAIN, drops_partitions
from clip_assets.defs.plots import png_metadata
from clip_assets.defs.resources import HomeResource
from clip_assets.io.drops import validate_drop_name
from clip_assets.models.card import load_current_model, write_card


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
    batch_size: int = 256
    workers: int = 0
    train_pairs: int = 20_000
    train_seed: int = 1234
    train_steps: int = 600
    train_batch_size: int = 256


def _training_drop(home, pairs: int, seed: int):
    """The synthetic training drop (outside landing, so the sensor never ingests it); written once per seed/size."""
    from clip_assets.world import write_drops

    out = home / "training"
    name = f"train-s{seed}-n{pairs}-"
    drop = out / f"{name}000"
    if not drop.is_dir():
        write_drops(out, drops=1, pairs=pairs, seed=seed, prefix=name)
    return drop


@dg.asset(
    description=(
        "The CLIP-style model read as a density-ratio estimator. Offline default: a small open_clip model trained "
        "from scratch on a synthetic training drop (checkpoint + config saved under `<home>/models/`, reloaded "
        "through the same local-checkpoint path as any user checkpoint). Or any open_clip pretrained model / local "
        "checkpoint by config. Writes the model card that every downstream asset loads; its id (name, tag or "
        "checkpoint sha256, logit scale a, bias b) is recorded on everything computed from it. Grain: global."
    ),
    group_name="embed",
    kinds={"pytorch"},
    owners=["team:curation"],
    tags=GLOBAL_GRAIN,
    pool="gpu",
    automation_condition=dg.AutomationCondition.on_missing(),
    check_specs=[dg.AssetCheckSpec("model_loads", asset="contrastive_model", blocking=True,
                                   description="the card's model reloads and has a finite logit scale")],
)
def contrastive_model(context: dg.AssetExecutionContext, config: ContrastiveModelConfig, home: HomeResource):
    from clip_assets.models.loading import ModelSpec, load_model

    h = home.path()
    run = dict(device=config.device, precision=config.precision, batch_size=config.batch_size,
               workers=config.workers)
    meta: dict = {}
    if config.source == "train":
        from clip_assets.models.train import TrainConfig, train_contrastive

        drop = _training_drop(h, config.train_pairs, config.train_seed)
        tc = TrainConfig(steps=config.train_steps, batch_size=config.train_batch_size, seed=config.train_seed)
        res = train_contrastive(drop, tc, name="contrastive_model-train", home=h, log=context.log.info)
        spec = ModelSpec(name=res.model_id["name"], checkpoint=str(res.checkpoint_path), **run)
        meta.update({
            "training_curves": png_metadata(res.plot_png),
            "train_pairs": config.train_pairs, "train_steps": config.train_steps,
            **{k: v for k, v in res.metrics.items() if isinstance(v, (int, float, str))},
        })
    elif config.source == "pretrained":
        spec = ModelSpec(name=config.name, pretrained=config.pretrained or None, **run)
    else:
        if not config.checkpoint:
            raise dg.Failure("contrastive_model: source='checkpoint' needs config checkpoint=<local path>")
        spec = ModelSpec(name=config.name, checkpoint=config.checkpoint, **run)
    loaded = load_model(spec)
    write_card(spec.to_dict(), loaded.model_id, loaded.model_id_str, home=h)
    a = loaded.logit_scale
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(loaded.model_id_str),
        metadata={"model_id": loaded.model_id_str, "logit_scale_a": a, "logit_bias_b": loaded.logit_bias,
                  "embed_dim": loaded.embed_dim, "device": str(loaded.device), "precision": loaded.precision,
                  **meta},
    )
    import math

    yield dg.AssetCheckResult(check_name="model_loads", passed=bool(math.isfinite(a) and a > 0),
                              metadata={"logit_scale_a": a})


class EmbeddingsConfig(dg.Config):
    """Overrides of the model card's run settings for this run (empty = the card's)."""

    device: str = ""
    batch_size: int = 0
    workers: int = -1


@dg.asset(
    deps=["raw_pairs", contrastive_model],
    partitions_def=drops_partitions,
    description=(
        "L2-normalised image and text embeddings of one drop's kept pairs from the current contrastive_model: "
        "uid, image_emb, text_emb (fixed-size float16 lists), model_id. One Parquet per shard, written "
        "atomically; resumable per shard (a re-run after a kill computes only missing shards). Runs in the "
        "'gpu' concurrency pool. Grain: (drop, uid)."
    ),
    group_name="embed",
    kinds={"pytorch", "parquet"},
    owners=["team:curation"],
    tags=DROP_GRAIN,
    pool="gpu",
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[dg.AssetCheckSpec("embeddings_valid", asset="embeddings", blocking=True,
                                   description="finite, unit-norm, one row per raw_pairs row (same uids)")],
)
def embeddings(context: dg.AssetExecutionContext, config: EmbeddingsConfig, home: HomeResource):
    from clip_assets.io.tables import check_embeddings
    from clip_assets.io.warehouse import partition_dir
    from clip_assets.models.embed import embed_drop

    drop = validate_drop_name(context.partition_key)
    h = home.path()
    loaded = load_current_model(h, device=config.device or None, batch_size=config.batch_size or None,
                                workers=config.workers if config.workers >= 0 else None)

    def progress(done, total, ips):
        context.log.info(f"embeddings {drop}: shard {done}/{total}, {ips:.0f} images/s")

    res = embed_drop(partition_dir("raw_pairs", drop, h), loaded, partition_dir("embeddings", drop, h),
                     progress=progress)
    check = check_embeddings(drop, h)
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": check["rows"], **res.to_metadata(),
        "device": str(loaded.device), "precision": loaded.precision,
    })
    yield dg.AssetCheckResult(check_name="embeddings_valid", passed=check["ok"],
                              metadata={k: (v if not isinstance(v, list) else ", ".join(v))
                                        for k, v in check.items() if k != "ok"})


defs_assets = [contrastive_model, embeddings]
