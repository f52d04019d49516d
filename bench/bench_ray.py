"""Embeddings throughput, Ray executor vs the local path, on this machine in one run; and Ray vs actors.

    python bench/bench_ray.py                        # 20k- and 80k-pair synthetic drops, clip-assets-tiny, 2-CPU cluster
    python bench/bench_ray.py --pairs 4000 --runs 3  # quicker, one size
    python bench/bench_ray.py --model ViT-B-32 --device auto --precision bf16 --image-size 224 \
        --pairs 50000 --batch-size 1024 --cpus 16 --actors 1 --workers 14   # one GPU actor, 15 CPUs decoding
    (needs the optional extra: pip install clip-assets[ray])

Both paths embed the same synthetic drop (clip_assets.world.write_drops, 64 px JPEGs; with ``--image-size`` the
rendered shapes of bench_embed.py at that side instead) with the same model, device, batch size and
``force=True`` (every shard recomputed and committed) into separate folders:

* local: :func:`clip_assets.models.embed.embed_drop` in this process (``--workers`` DataLoader processes decode);
  each timed run of either path includes the driver's model load, as an asset run does;
* ray:   :func:`clip_assets.models.embed_ray.embed_drop_ray` on a local cluster of ``--cpus`` CPUs started once
  (its start is reported, not timed). Each timed run is a whole job as an asset run pays it: actor pool start,
  one model load per actor, decode tasks, the pool, the commits. With N actors on C CPUs each actor reserves
  (C - 1) / N CPUs on CPU, so one CPU always stays for the decode tasks (Ray Data can hang when actors hold every
  CPU); on a GPU one CPU (and its GPU) each, the others decoding.

Printed, per drop size (``--pairs``, comma-separated): the median seconds and images/s of ``--runs`` runs per
configuration (local and Ray runs alternate, so drifting load on a shared machine affects both alike), ratio =
ray_seconds / local_seconds at 1 actor (the target is <= 1.15), and the Ray figures per number of actors
(``--actors``). With two or more sizes, each path's medians are also fitted as seconds = fixed + per_pair * pairs
(least squares): Ray's fixed cost over the local path's (what a job pays whatever its size: the pool's actor
process starting and importing torch/open_clip, Ray Data's start) and the per-pair ratio (what the ratio tends to
on large drops).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from clip_assets.io.drops import index_drop, scan_landing  # noqa: E402
from clip_assets.models.embed import embed_drop  # noqa: E402
from clip_assets.models.loading import ModelSpec, load_model  # noqa: E402
from clip_assets.world import write_drops  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="20000,80000", help="drop sizes, comma-separated")
    ap.add_argument("--shard-size", type=int, default=2000)
    ap.add_argument("--model", default="clip-assets-tiny")
    ap.add_argument("--device", default="cpu", help="cpu, or auto/cuda: the local path's device and the actors' "
                                                    "(one GPU each where the cluster has GPUs)")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"], help="autocast on CUDA only")
    ap.add_argument("--image-size", type=int, default=0,
                    help="side of the synthetic JPEGs (0: the synthetic world's 64 px drops)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=1, help="local path: DataLoader decode processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the model (local and each actor)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--cpus-per-actor", type=float, default=0,
                    help="CPUs each actor reserves (0: on CPU (cpus - 1) / actors, so one CPU stays for decoding; "
                         "on a GPU 1)")
    ap.add_argument("--actors", default="1,2", help="Ray pool sizes to time, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "clip_assets_bench_ray"))
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    a = ap.parse_args(argv)
    try:
        actors = [int(x) for x in a.actors.split(",") if x.strip()]
        sizes = [int(x) for x in a.pairs.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--pairs and --actors take comma-separated integers, got {a.pairs!r}, {a.actors!r}")
    if not sizes or min(sizes) < 1 or a.runs < 1 or a.cpus < 2 or not actors or min(actors) < 1:
        ap.error(f"need --pairs >= 1, --runs >= 1, --cpus >= 2 and actors >= 1, got {a.pairs!r}, {a.runs}, "
                 f"{a.cpus}, {a.actors!r}")
    if a.image_size < 0 or a.cpus_per_actor < 0 or a.cpus_per_actor * max(actors) > a.cpus - 1:
        ap.error(f"need --image-size >= 0 and --cpus-per-actor x actors <= cpus - 1 (a CPU for decoding), got "
                 f"{a.image_size}, {a.cpus_per_actor} x {max(actors)} on {a.cpus}")
    a.actor_counts, a.sizes = actors, sorted(set(sizes))
    return a


def _tables(work: Path, pairs: int, shard_size: int, image_size: int) -> tuple[Path, list]:
    """The drop's folder and pointer tables: the synthetic world's (``image_size`` 0) or bench_embed.py's
    rendered shapes at ``image_size`` px, written once under ``work`` and reused while complete."""
    if image_size:
        from bench_embed import pointer_tables, write_shards

        drop = write_shards(work, pairs, image_size, shard_size, "jpg")
        return drop, pointer_tables(drop)
    drop = _drop(work, pairs, shard_size)
    return drop, index_drop(drop)


def _drop(work: Path, pairs: int, shard_size: int) -> Path:
    """The synthetic drop of this size, written once under ``work`` and reused while it is complete."""
    landing = work / f"landing-{pairs}-{shard_size}"
    found = [d for d in scan_landing(landing) if d.complete] if landing.is_dir() else []
    if found:
        return Path(found[0].path)
    (drop,) = write_drops(landing, drops=1, pairs=pairs, seed=0, shard_size=shard_size)
    return Path(drop)


def _cpus_per_actor(a: argparse.Namespace, actors: int) -> float:
    """``--cpus-per-actor``, else: on CPU (cpus - 1) / actors (the model's compute shares the cores with decoding,
    one CPU stays for it); on a GPU one each (the model runs on the GPU; every other CPU decodes)."""
    if a.cpus_per_actor:
        return a.cpus_per_actor
    return (a.cpus - 1) / actors if a.device == "cpu" else 1.0


def _summary(name: str, seconds: list[float], pairs: int) -> dict:
    med = statistics.median(seconds)
    return {"config": name, "runs": len(seconds), "median_s": round(med, 3), "images_per_s": round(pairs / med, 1),
            "all_s": [round(s, 3) for s in seconds]}


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (fixed seconds, seconds per pair) of seconds = fixed + per_pair * pairs."""
    import numpy as np

    per, fixed = np.polyfit([p for p, _ in points], [t for _, t in points], 1)
    return float(fixed), float(per)


def _time_size(a: argparse.Namespace, work: Path, n_pairs: int, spec) -> dict:
    """The timed runs of every configuration on one drop size; its summary rows and ratio."""
    from clip_assets.models.embed_ray import embed_drop_ray

    t = time.perf_counter()
    drop, tables = _tables(work, n_pairs, a.shard_size, a.image_size)
    pairs = sum(x.num_rows for x in tables)
    print(f"# drop ready in {time.perf_counter() - t:.1f}s: {drop} ({len(tables)} shards, {pairs} pairs)", flush=True)

    # each timed run loads the model as the embeddings asset does (load_current_model per run), so both sides pay
    # what a run pays; Ray's actors load it once more each, which is part of its overhead
    def local_run() -> float:
        t0 = time.perf_counter()
        res = embed_drop(tables, load_model(spec), work / "out-local", force=True)
        assert res.rows_written == pairs, res
        return time.perf_counter() - t0

    def ray_run(n: int) -> float:
        t0 = time.perf_counter()
        # the spec itself: the driver loads it on CPU (its id, transforms, tokenizer), the actors on their device
        res = embed_drop_ray(tables, spec, work / f"out-ray-{n}", force=True, concurrency=n,
                             cpus_per_actor=_cpus_per_actor(a, n))
        assert res.rows_written == pairs, res
        return time.perf_counter() - t0

    local_run(), ray_run(a.actor_counts[0])  # warm-up: page cache, imports, worker processes
    times: dict[str, list[float]] = {"local": [], **{f"ray-{n}": [] for n in a.actor_counts}}
    for r in range(a.runs):
        times["local"].append(local_run())
        for n in a.actor_counts:
            times[f"ray-{n}"].append(ray_run(n))
        print(f"# {pairs} pairs, run {r + 1}/{a.runs}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
              flush=True)
    rows = [_summary(k, v, pairs) for k, v in times.items()]
    base = next(r for r in rows if r["config"] == f"ray-{a.actor_counts[0]}")
    return {"pairs": pairs, "rows": rows, "ratio": base["median_s"] / rows[0]["median_s"], "base": base["config"]}


def main(argv=None) -> int:
    import ray

    from clip_assets.models.executors import RAY_ADDRESS_ENV, init_ray

    a = parse_args(argv)
    work = Path(a.work)
    spec = ModelSpec(name=a.model, device=a.device, precision=a.precision, batch_size=a.batch_size,
                     workers=a.workers, threads=a.threads)
    os.environ.pop(RAY_ADDRESS_ENV, None)  # always the local cluster: the figure is about this machine
    t = time.perf_counter()
    print(f"# {init_ray(num_cpus=a.cpus)} in {time.perf_counter() - t:.1f}s", flush=True)
    ray.data.DataContext.get_current().enable_progress_bars = False
    results = [_time_size(a, work, n, spec) for n in a.sizes]

    import torch

    gpu = torch.cuda.get_device_name(0) if a.device != "cpu" and torch.cuda.is_available() else None
    print(f"\nmodel {a.model}, device {a.device}{f' ({gpu}, {a.precision})' if gpu else ''}, "
          f"{a.image_size or 64} px JPEGs, batch {a.batch_size}, local workers {a.workers}, Ray cluster {a.cpus} "
          f"CPUs (actors reserve {_cpus_per_actor(a, a.actor_counts[0]):g} CPUs each at {a.actor_counts[0]} actor(s)), "
          f"medians of {a.runs} runs")
    print(f"{'pairs':>8} {'config':>8} {'median_s':>9} {'images/s':>9}  all_s")
    for res in results:
        for row in res["rows"]:
            print(f"{res['pairs']:>8} {row['config']:>8} {row['median_s']:>9.2f} {row['images_per_s']:>9.0f}  "
                  f"{row['all_s']}")
    print()
    for res in results:
        print(f"{res['pairs']:>8} pairs: ratio ray_seconds / local_seconds ({res['base']}) = {res['ratio']:.3f} "
              f"(target <= 1.15)")
    fit = None
    if len(results) >= 2:
        def med(res: dict, config: str) -> float:
            return next(r["median_s"] for r in res["rows"] if r["config"] == config)

        base = results[0]["base"]
        fl, pl = _fit([(res["pairs"], med(res, "local")) for res in results])
        fr, pr = _fit([(res["pairs"], med(res, base)) for res in results])
        fit = {"local_fixed_s": fl, "local_per_pair_ms": pl * 1e3, "ray_fixed_s": fr, "ray_per_pair_ms": pr * 1e3,
               "per_pair_ratio": pr / pl}
        print(f"fit seconds = fixed + per_pair * pairs: local {fl:.2f} s + {pl * 1e3:.4f} ms/pair, {base} {fr:.2f} s "
              f"+ {pr * 1e3:.4f} ms/pair: Ray's extra fixed cost {fr - fl:.2f} s per job, per-pair ratio "
              f"{pr / pl:.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": {k: v for k, v in vars(a).items()}, "sizes": results,
                                            "fit": fit}, indent=2))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
