"""Peak memory of the streaming trainer (clip_assets.models.train) for a small and a 10x larger pool.

    python bench/bench_iwl_memory.py                      # 4,000 vs 40,000 synthetic pairs, 20 steps of 128
    python bench/bench_iwl_memory.py --small 2000 --large 20000 --steps 10
    python bench/bench_iwl_memory.py --steps 60 --cache-mb 8    # the decode cache full on both pools

Writes one synthetic drop per size (``clip_assets.world.write_drops``, kept under --work for reruns), then trains
clip-assets-tiny with importance weights on each drop's pointer rows in a fresh subprocess, and reads that
process's high-water RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) before training (imports, pointers,
weights) and after. Prints both peaks, the training's extra peak (after - before) per size, their ratio (flat in
pool size: ~1), and what the former in-memory trainer held for the decoded pool alone (N x 3 x S x S bytes).
The trainer's decode cache (``TrainConfig.decode_cache_mb``, default 64 MiB) holds at most ``--cache-mb`` of
decoded images, so the extra peak is bounded by that budget plus the batches in flight, whatever the pool size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's clip_assets, here and in the child (PYTHONPATH)


def child(drop: str, steps: int, batch_size: int, cache_mb: int) -> None:
    """Train on ``drop`` and print a JSON line with peak RSS (MiB) before and after training."""
    import numpy as np

    from clip_assets.io.drops import index_drop
    from clip_assets.models.train import TrainConfig, train_contrastive

    tables = index_drop(Path(drop))
    n = sum(t.num_rows for t in tables)
    weights = np.random.default_rng(0).lognormal(0.0, 1.0, n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    cfg = TrainConfig(steps=steps, batch_size=batch_size, warmup_steps=2, eval_images=16, threads=1,
                      decode_cache_mb=cache_mb)
    res = train_contrastive(tables, cfg, name="bench", out_dir=Path(drop).parent / "models", sample_weights=weights)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"pairs": n, "peak_before_mib": before, "peak_after_mib": after,
                      "train_seconds": res.metrics["train_seconds"], "wall_seconds": time.perf_counter() - t0}))


def ensure_drop(work: Path, pairs: int) -> Path:
    from clip_assets.world import write_drops

    out = work / f"pairs-{pairs}"
    done = sorted(p for p in out.glob("*") if p.is_dir() and p.name != "models") if out.exists() else []
    if done:
        return done[0]
    t0 = time.perf_counter()
    drop = write_drops(out, drops=1, pairs=pairs, seed=0, shard_size=1000)[0]
    print(f"wrote {pairs} synthetic pairs in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return drop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=4000)
    ap.add_argument("--large", type=int, default=40000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--cache-mb", type=int, default=None, help="decode cache budget (default: TrainConfig's)")
    ap.add_argument("--work", default="/tmp/bench_iwl_memory")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.cache_mb is None:
        from clip_assets.models.train import TrainConfig

        a.cache_mb = TrainConfig().decode_cache_mb
    if a.child:
        return child(a.child, a.steps, a.batch_size, a.cache_mb)
    rows = []
    for pairs in (a.small, a.large):
        drop = ensure_drop(Path(a.work), pairs)
        out = subprocess.run([sys.executable, __file__, "--child", str(drop), "--steps", str(a.steps),
                              "--batch-size", str(a.batch_size), "--cache-mb", str(a.cache_mb)], cwd=ROOT, check=True, capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in rows:
        r["train_extra_mib"] = r["peak_after_mib"] - r["peak_before_mib"]
        r["in_memory_pool_mib"] = r["pairs"] * 3 * 64 * 64 / 2**20  # the former decode-everything trainer
        print(f"{r['pairs']:>7} pairs: peak RSS {r['peak_before_mib']:.0f} MiB before training, "
              f"{r['peak_after_mib']:.0f} MiB after (+{r['train_extra_mib']:.0f}); {a.steps} steps in "
              f"{r['train_seconds']:.1f}s; the decoded pool alone would be {r['in_memory_pool_mib']:.0f} MiB")
    print(f"decode cache budget: {a.cache_mb} MiB")
    print(f"peak RSS ratio large/small: {rows[1]['peak_after_mib'] / rows[0]['peak_after_mib']:.3f}; "
          f"training's extra peak ratio: {max(rows[1]['train_extra_mib'], 1) / max(rows[0]['train_extra_mib'], 1):.3f}")


if __name__ == "__main__":
    main()
