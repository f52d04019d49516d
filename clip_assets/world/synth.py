"""Write synthetic drops in img2dataset's webdataset output layout, with the exact truth beside them.

Layout written by :func:`write_drops` under ``out_dir``::

    world.json                      the World's parameters (World.from_dict reads them back)
    <drop>/NNNNN.tar                {key}.jpg|png|webp, {key}.txt (caption), {key}.json (img2dataset metadata)
    <drop>/NNNNN.parquet            one row per sample, img2dataset's columns (io.drops.SIDECAR_SCHEMA)
    <drop>/NNNNN_stats.json         img2dataset's per-shard counts, written last for each shard
    <drop>.truth.parquet            one row per sample: latent, flags, exact log-ratio and KLs (TRUTH_SCHEMA)

Keys are ``f"{shard:05d}{idx:04d}"`` like img2dataset. Every byte is a function of (world, seed, drop number,
pairs, shard_size, image_format): shard ``s`` of drop number ``n`` draws from
``np.random.default_rng(SeedSequence([seed, n, s]))``, tar members carry mtime 0, uid/gid 0 and mode 0o444, and
the stats use a synthetic clock (shard ``s`` runs from ``s`` to ``s + 1`` seconds after the epoch) instead of
the wall clock. Shards are written by :class:`clip_assets.io.drops.ShardWriter` (tar, sidecar, then stats) into
a folder staged by :mod:`clip_assets.io.commit`; the truth file is published first and the drop folder swapped in
after it, so a landing-folder sensor never sees a partial drop nor a drop without its truth.

``out_dir`` may be an object-store URL (``s3://bucket/prefix``, see :mod:`clip_assets.io.fs`): the drops are
written exactly as above into a local temporary folder, then each file is uploaded with
:func:`clip_assets.io.fs.write_bytes_atomic` (an object is visible only once complete) in an order that keeps a
listing honest: ``world.json``, then each drop's truth file, its tars and sidecars, and its stats files last (a
drop counts as complete only when every tar has its stats, so a sensor never takes a half-uploaded drop for a
finished one). The bytes on the store are those of a local run.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets.io import fs
from clip_assets.io.commit import PARQUET_COMPRESSION, StagedDir, clean_stale, publishing, stage_dir, write_text
from clip_assets.io.drops import ShardWriter, success_row
from clip_assets.io.uid import compute_uid
from clip_assets.world.render import IMAGE_FORMATS, encode_image
from clip_assets.world.world import PairSample, World

WORLD_FILE = "world.json"
TRUTH_SUFFIX = ".truth.parquet"
URL_ROOT = "https://synthetic.invalid"
MAX_SHARD_SIZE = 10_000  # keys hold 4 digits of sample index
MAX_SHARDS = 100_000  # and 5 digits of shard index

STALE_AFTER_S = 6 * 3600  # staging younger than this may belong to a run in flight


def truth_schema(world: World) -> pa.Schema:
    """Columns of ``<drop>.truth.parquet``; one ``in_<domain>`` flag per target domain of ``world``."""
    return pa.schema(
        [
            pa.field("drop", pa.string()),
            pa.field("shard", pa.int32()),
            pa.field("key", pa.string()),
            pa.field("uid", pa.string()),
            pa.field("caption", pa.string()),
            pa.field("caption_index", pa.int32()),  # index into world.vocabulary
            pa.field("template", pa.string()),  # the caption is caption_of(latent or a noise latent, template)
            pa.field("latent", pa.int32()),  # -1 for placeholders
            pa.field("shape", pa.string()),  # null for placeholders, as colour and size
            pa.field("colour", pa.string()),
            pa.field("size", pa.string()),
            pa.field("label", pa.int32()),  # index into world.class_names, -1 for placeholders
            *[pa.field(f"in_{name}", pa.bool_()) for name in world.domains],
            pa.field("is_misaligned", pa.bool_()),
            pa.field("is_placeholder", pa.bool_()),
            # exact values under the world (noise captions of misaligned pairs and placeholders from b(y))
            pa.field("true_log_ratio", pa.float64()),
            pa.field("true_kl_image", pa.float64()),
            pa.field("true_klr_image", pa.float64()),
            pa.field("true_kl_text", pa.float64()),
            pa.field("true_klr_text", pa.float64()),
        ]
    )


def drop_name(seed: int, number: int, prefix: str | None = None) -> str:
    """``synth-s{seed}-{number:03d}``, or ``{prefix}{number:03d}`` when a prefix is given."""
    name = f"synth-s{seed}-{number:03d}" if prefix is None else f"{prefix}{number:03d}"
    if "/" in name or "\\" in name or ".." in name or name.startswith("."):
        raise ValueError(f"invalid drop name {name!r} (from prefix {prefix!r})")
    return name


def write_drops(
    out_dir: str | os.PathLike,
    drops: int,
    pairs: int,
    seed: int,
    shard_size: int = 1000,
    image_format: str = "jpg",
    prefix: str | None = None,
    start: int = 0,
    world: World | None = None,
) -> list[Path] | list[str]:
    """Write ``drops`` synthetic drops of ``pairs`` image-text pairs each into ``out_dir``; return their folders
    (their URLs, as ``str``, when ``out_dir`` is an object-store URL).

    Args:
        out_dir: parent folder (e.g. ``<home>/landing``), created if missing; or an object-store URL (``str``). ``world.json`` is written here; an
            existing one describing a different world is an error (its drops' truth would not match).
        drops: number of drops; drop ``i`` is number ``start + i``.
        pairs: pairs per drop (>= 1), split into shards of ``shard_size`` (<= 10,000) in order.
        seed: non-negative integer; the same arguments give byte-identical files.
        image_format: "jpg" (default, quality 90), "png" or "webp"; also the image member's extension.
        prefix: drop names are ``f"{prefix}{number:03d}"``, else ``f"synth-s{seed}-{number:03d}"``.
        start: number of the first drop, so that later calls continue a series with new, independent drops.
        world: the World to sample from; ``World.default()`` when None.

    Raises FileExistsError when a drop folder or its truth file already exists (drops are never overwritten).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if drops < 0 or start < 0:
        raise ValueError(f"drops and start must be >= 0, got drops={drops}, start={start}")
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    if not 1 <= shard_size <= MAX_SHARD_SIZE:
        raise ValueError(f"shard_size must be in [1, {MAX_SHARD_SIZE}], got {shard_size}")
    if -(-pairs // shard_size) > MAX_SHARDS:
        raise ValueError(f"{pairs} pairs in shards of {shard_size} exceed {MAX_SHARDS} shards")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}")
    world = World.default() if world is None else world
    names = [drop_name(int(seed), start + i, prefix) for i in range(drops)]
    if isinstance(out_dir, str) and fs.is_remote(out_dir):
        return _write_drops_to_store(out_dir.rstrip("/"), names, drops=drops, pairs=pairs, seed=seed,
                                     shard_size=shard_size, image_format=image_format, prefix=prefix, start=start,
                                     world=world)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale(out, older_than_s=STALE_AFTER_S)
    for name in names:
        for path in (out / name, out / f"{name}{TRUTH_SUFFIX}"):
            if path.exists():
                raise FileExistsError(f"{path} already exists; drops are never overwritten")
    _write_world(out / WORLD_FILE, world)
    return [
        _write_drop(out, name, world, int(seed), start + i, pairs, shard_size, image_format)
        for i, name in enumerate(names)
    ]


def _write_drops_to_store(url: str, names: list[str], world: World, **args) -> list[str]:
    """:func:`write_drops` to a store URL: write locally into a temporary folder, then upload file by file."""
    for name in names:
        for target in (fs.join(url, name), fs.join(url, f"{name}{TRUTH_SUFFIX}")):
            if fs.exists(target):
                raise FileExistsError(f"{target} already exists; drops are never overwritten")
    world_url = fs.join(url, WORLD_FILE)
    if fs.exists(world_url) and World.from_dict(json.loads(fs.read_bytes(world_url))) != world:
        raise ValueError(f"{world_url} describes a different world; write these drops to another prefix")
    with tempfile.TemporaryDirectory(prefix="clip-assets-synth-") as tmp:
        local = write_drops(tmp, world=world, **args)
        if not fs.exists(world_url):
            fs.write_bytes_atomic(world_url, (Path(tmp) / WORLD_FILE).read_bytes())
        out = []
        for drop in local:
            fs.write_bytes_atomic(fs.join(url, f"{drop.name}{TRUTH_SUFFIX}"),
                                  (Path(tmp) / f"{drop.name}{TRUTH_SUFFIX}").read_bytes())
            files = sorted(p.name for p in drop.iterdir())
            stats = [f for f in files if f.endswith("_stats.json")]
            for name in [*(f for f in files if f not in stats), *stats]:
                fs.write_bytes_atomic(fs.join(url, drop.name, name), (drop / name).read_bytes())
            out.append(fs.join(url, drop.name))
        return out


def _write_world(path: Path, world: World) -> None:
    text = json.dumps(world.to_dict(), indent=2) + "\n"
    if path.exists():
        if World.from_dict(json.loads(path.read_text())) != world:
            raise ValueError(f"{path} describes a different world; write these drops to another folder")
        return
    write_text(path, text)


def _write_drop(
    out: Path, name: str, world: World, seed: int, number: int, pairs: int, shard_size: int, image_format: str
) -> Path:
    schema = truth_schema(world)
    with stage_dir(out / name) as stage, publishing(out / f"{name}{TRUTH_SUFFIX}") as truth_tmp:
        with pq.ParquetWriter(truth_tmp, schema, compression=PARQUET_COMPRESSION) as truth:
            for shard, lo in enumerate(range(0, pairs, shard_size)):
                rng = np.random.default_rng(np.random.SeedSequence([seed, number, shard]))
                rows = _synth_shard(stage, name, shard, min(shard_size, pairs - lo), world, rng, image_format)
                truth.write_table(pa.Table.from_pydict(rows, schema=schema))
    return out / name


def _synth_shard(
    stage: StagedDir, drop: str, shard: int, n: int, world: World, rng: np.random.Generator, image_format: str
) -> dict[str, list | np.ndarray]:
    """Write ``NNNNN.tar``, ``NNNNN.parquet`` then ``NNNNN_stats.json`` into ``stage``; return the truth rows."""
    stem = f"{shard:05d}"
    sample = world.sample_pairs(n, rng)
    keys = [f"{stem}{i:04d}" for i in range(n)]
    captions = [world.vocabulary[y] for y in sample.caption]
    uids: list[str] = []
    writer = ShardWriter(stage, shard)
    for key, caption, latent in zip(keys, captions, sample.latent):
        image = encode_image(world.render(int(latent), rng), image_format)
        meta = success_row(key, caption, f"{URL_ROOT}/{drop}/{key}.{image_format}", world.image_size,
                           world.image_size, image)
        writer.add(key, image, image_format, caption, meta)
        uids.append(compute_uid(image, caption))
    writer.close(start_time=float(shard), end_time=float(shard + 1))  # a synthetic clock: same bytes every run
    return _truth_rows(world, sample, drop, shard, keys, uids, captions)


def _truth_rows(world: World, sample: PairSample, drop: str, shard: int, keys: list[str], uids: list[str],
                captions: list[str]) -> dict[str, list | np.ndarray]:
    """The exact ground truth of one shard's samples (columns of :func:`truth_schema`)."""
    n = len(keys)
    latent = sample.latent
    real = latent >= 0
    attrs = world.latent_attributes[np.maximum(latent, 0)]  # (n, 3); rows of placeholders masked below
    rows: dict[str, list | np.ndarray] = {
        "drop": [drop] * n,
        "shard": np.full(n, shard, dtype=np.int32),
        "key": keys,
        "uid": uids,
        "caption": captions,
        "caption_index": sample.caption.astype(np.int32),
        "template": [world.templates[t].name for t in sample.template],
        "latent": latent.astype(np.int32),
        "shape": [world.shapes[a] if r else None for a, r in zip(attrs[:, 0], real)],
        "colour": [world.colours[a] if r else None for a, r in zip(attrs[:, 1], real)],
        "size": [world.sizes[a] if r else None for a, r in zip(attrs[:, 2], real)],
        "label": world.class_label(latent).astype(np.int32),
    }
    for name in world.domains:
        rows[f"in_{name}"] = world.in_domain(latent, name)
    rows |= {
        "is_misaligned": sample.is_misaligned,
        "is_placeholder": sample.is_placeholder,
        "true_log_ratio": world.true_log_ratio(latent, sample.caption),
        "true_kl_image": world.kl_image(latent),
        "true_klr_image": world.klr_image(latent),
        "true_kl_text": world.kl_text(sample.caption),
        "true_klr_text": world.klr_text(sample.caption),
    }
    return rows
