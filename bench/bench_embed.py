"""Embedding throughput: end to end (tar shards -> Parquet) next to model forward only, as a ratio.

    python bench/bench_embed.py                                   # ViT-B-32 random init, CPU, 224 px JPEGs
    python bench/bench_embed.py --model clip-assets-tiny --image-size 64 --pairs 2000
    python bench/bench_embed.py --device cuda --precision bf16 --pairs 50000 --workers 12 --batch-size 1024

* end to end: :func:`clip_assets.models.embed.embed_drop` over synthetic webdataset shards (read through byte
  pointers, decode, preprocess, tokenize, forward, L2-normalise, write Parquet), ``force=True`` each run;
* forward only: the same batches, already decoded and preprocessed into tensors on the device, through
  ``encode_images`` + ``encode_texts`` (the model's own cost; nothing else).

ratio = end-to-end images/s / forward-only images/s (1.0 = data loading fully hidden behind compute).
Each figure is the median of ``--runs`` timed runs after one warm-up batch; forward-only and end-to-end runs
alternate so that drifting load on a shared machine affects both alike. Shards are written once per
(pairs, image size, format) under ``--work`` and reused.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from clip_assets.io.commit import publishing, write_json, write_text  # noqa: E402
from clip_assets.io.drops import add_tar_member, index_shard  # noqa: E402
from clip_assets.io.images import decode_rgb  # noqa: E402
from clip_assets.models.embed import TensorPreprocess, embed_drop  # noqa: E402
from clip_assets.models.loading import ModelSpec, load_model  # noqa: E402
from clip_assets.world import World  # noqa: E402
from clip_assets.world.render import encode_image, render_shape  # noqa: E402


def write_shards(out: Path, pairs: int, image_size: int, shard_size: int, image_format: str, seed: int = 0) -> Path:
    """Synthetic webdataset shards of rendered shapes at ``image_size`` px (jpg quality 90), published atomically."""
    drop = out / f"bench-{pairs}-{image_size}-{image_format}"
    if (drop / "_SUCCESS").exists():
        return drop
    drop.mkdir(parents=True, exist_ok=True)
    world = World.default()
    rng = np.random.default_rng(seed)
    sample = world.sample_pairs(pairs, rng)
    vocab = world.vocabulary
    for s0 in range(0, pairs, shard_size):
        shard = s0 // shard_size
        with publishing(drop / f"{shard:05d}.tar") as tmp, tarfile.open(tmp, "w") as tar:
            for i in range(s0, min(pairs, s0 + shard_size)):
                z = int(sample.latent[i])
                names = world.latent_names(max(z, 0))
                px = render_shape(names["shape"], names["colour"], names["size"], rng, image_size=image_size)
                key = f"{shard:05d}{i - s0:04d}"
                add_tar_member(tar, f"{key}.{image_format}", encode_image(px, image_format))
                add_tar_member(tar, f"{key}.txt", vocab[sample.caption[i]].encode())
    write_text(drop / "_SUCCESS", "")
    return drop


def pointer_tables(drop: Path):
    return [index_shard(p) for p in sorted(drop.glob("*.tar"))]


def predecode(tables, lm, batch_size: int, mode: str):
    """The batches embed_drop would feed the model, as device tensors (images) + tokens."""
    tpp = TensorPreprocess(lm.preprocess_cfg, lm.device) if mode == "torch" else None
    dtype = torch.float16 if lm.device.type == "cuda" else torch.float32
    batches = []
    for t in tables:
        cols = t.to_pydict()
        n = t.num_rows
        with open(cols["tar_path"][0], "rb") as fh:
            for lo in range(0, n, batch_size):
                hi = min(n, lo + batch_size)
                datas = []
                for i in range(lo, hi):
                    fh.seek(cols["offset"][i])
                    datas.append(fh.read(cols["size"][i]))
                if tpp is not None:
                    x = tpp([torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas])
                else:
                    x = torch.stack([lm.preprocess(decode_rgb(d)) for d in datas])
                batches.append((x.to(lm.device, dtype=dtype), lm.tokenizer(cols["caption"][lo:hi]).to(lm.device)))
    return batches


def sync(lm) -> None:
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)


def time_forward(lm, batches) -> float:
    sync(lm)
    t = time.perf_counter()
    for x, tok in batches:
        lm.encode_images(x)
        lm.encode_texts(tok)
    sync(lm)
    return time.perf_counter() - t


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32", help="open_clip name (random init unless --pretrained/--checkpoint)")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"], help="autocast on CUDA only")
    ap.add_argument("--pairs", type=int, default=None, help="default: 256 on CPU, 50000 on CUDA")
    ap.add_argument("--image-size", type=int, default=224, help="side of the synthetic JPEGs")
    ap.add_argument("--image-format", default="jpg", choices=["jpg", "png", "webp"])
    ap.add_argument("--shard-size", type=int, default=None, help="default: pairs / 4 (>= 1)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 64 on CPU, 1024 on CUDA")
    ap.add_argument("--workers", type=int, default=None,
                    help="default: 0 on CPU (the model already uses every core), min(12, cpus - 2) on CUDA")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--decode", default="auto", choices=["auto", "pil", "torch"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "clip_assets_bench_embed"))
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    cuda = a.device.startswith("cuda") or (a.device == "auto" and torch.cuda.is_available())
    pairs = a.pairs or (50_000 if cuda else 256)
    batch_size = a.batch_size or (1024 if cuda else 64)
    workers = a.workers if a.workers is not None else (max(1, min(12, (os.cpu_count() or 4) - 2)) if cuda else 0)
    shard_size = a.shard_size or max(1, -(-pairs // 4))
    if a.threads:
        torch.set_num_threads(a.threads)

    work = Path(a.work)
    t = time.perf_counter()
    drop = write_shards(work, pairs, a.image_size, shard_size, a.image_format)
    tables = pointer_tables(drop)
    print(f"# shards ready in {time.perf_counter() - t:.1f}s: {drop} ({len(tables)} shards, {pairs} pairs)", flush=True)

    spec = ModelSpec(
        name=a.model, pretrained=a.pretrained, checkpoint=a.checkpoint, device=a.device, precision=a.precision,
        batch_size=batch_size, workers=workers, threads=a.threads,
    )
    lm = load_model(spec)
    mode = ("torch" if lm.device.type == "cuda" else "pil") if a.decode == "auto" else a.decode

    batches = predecode(tables, lm, batch_size, mode)
    with torch.inference_mode():  # warm-up (kernel selection, allocator)
        lm.encode_images(batches[0][0])
        lm.encode_texts(batches[0][1])
    out_dir = work / "out"
    fwd, e2e = [], []
    for _ in range(a.runs):  # interleaved, so that drifting load on a shared machine hits both alike
        fwd.append(pairs / time_forward(lm, batches))
        sync(lm)
        t = time.perf_counter()
        res = embed_drop(tables, lm, out_dir, decode=a.decode, force=True)
        sync(lm)
        e2e.append(res.rows_written / (time.perf_counter() - t))
    del batches

    report(lm, mode, workers, batch_size, pairs, a, fwd, e2e)
    return 0


def report(lm, mode: str, workers: int, batch_size: int, pairs: int, a: argparse.Namespace, fwd: list[float],
           e2e: list[float]) -> None:
    """Print the table row (and write it as JSON when asked)."""
    f_med, e_med = statistics.median(fwd), statistics.median(e2e)
    row = {
        "model": lm.model_id_str,
        "device": str(lm.device),
        "precision": lm.precision,
        "decode": mode,
        "workers": workers,
        "threads": torch.get_num_threads(),
        "batch": batch_size,
        "pairs": pairs,
        "px": a.image_size,
        "forward_img_s": round(f_med, 1),
        "end_to_end_img_s": round(e_med, 1),
        "ratio": round(e_med / f_med, 3),
        "forward_runs": [round(v, 1) for v in fwd],
        "end_to_end_runs": [round(v, 1) for v in e2e],
    }
    if lm.device.type == "cuda":
        row["gpu"] = torch.cuda.get_device_name(lm.device)
    cols = ["model", "device", "precision", "decode", "workers", "threads", "batch", "pairs", "px",
            "forward_img_s", "end_to_end_img_s", "ratio"]
    widths = [max(len(c), len(str(row[c]))) for c in cols]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    print("  ".join(str(row[c]).rjust(w) for c, w in zip(cols, widths)))
    print(f"# runs: forward {row['forward_runs']}  end-to-end {row['end_to_end_runs']} (images/s, median of {a.runs})")
    if a.json:
        write_json(a.json, row)


if __name__ == "__main__":
    raise SystemExit(main())
