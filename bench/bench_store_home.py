"""Ingest and embedding throughput with the data home local vs on a loopback S3 server (moto), in one run.

Writes one synthetic world (``--drops`` x ``--pairs`` pairs, shards of ``--shard-size``) into the landing of a
local home, uploads the same landing to ``s3://<bucket>/bench/home/landing`` (the landing of an s3 home, as
CLIP_ASSETS_HOME=s3://... gives it), then, alternating local and store so that drifting load on a shared machine
affects both alike:

* ingest: :func:`clip_assets.io.ingest.ingest_drop` of every drop into the home, as the ingest asset calls it
  (re-ingest is idempotent: each repeat replaces the drop's raw_pairs / rejected_pairs);
* embedding: :func:`clip_assets.models.embed.embed_drop` of every drop with the small random-init model
  (clip-assets-tiny on CPU), from ``commit.resolve(partition_dir("raw_pairs", drop, home))`` into
  ``partition_dir("embeddings", drop, home)``, as the embeddings asset calls it. The embeddings partition is
  deleted before each repeat (embed_drop skips shards whose output is already valid), so every repeat embeds.

Prints the median seconds of ``--repeats`` runs, pairs/s or images/s and the ratio store/local, and, from the
server's request log, what one store embedding run fetched from the landing tars: bytes the server sent in GET
responses per embedded image next to the mean image size (about 1: ranged reads of the members, not whole tars),
GET requests per image, and every request of a store run by method. Loopback has no network latency: the ratio
is the per-request cost of the S3 protocol and of moto, a lower bound for a remote store. A JSON line at the end
holds every figure.

    python bench/bench_store_home.py [--drops 1 --pairs 2000 --shard-size 1000 --repeats 3 --batch-size 64]
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "io")]  # this checkout's package and the loopback S3 helper


def by_method(reqs) -> dict[str, int]:
    return dict(sorted(collections.Counter(r.method for r in reqs).items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drops", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=2000, help="pairs per drop")
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads while embedding (0: torch's default); 1 keeps the figures steady on "
                         "a loaded machine, where spinning OpenMP threads compete with the server thread")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--requests", action="store_true",
                    help="also print every request of the last store run of each stage (method, path, range, bytes)")
    args = ap.parse_args()
    from s3_server import running_store

    from clip_assets import config
    from clip_assets.io import commit
    from clip_assets.io.drops import child
    from clip_assets.io.ingest import ingest_drop
    from clip_assets.io.warehouse import partition_dir
    from clip_assets.models.embed import embed_drop
    from clip_assets.models.loading import ModelSpec, load_model
    from clip_assets.world import write_drops

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server logs every request otherwise

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp, running_store(mp) as store:
        tmp = Path(tmp)
        mp.setenv("CLIP_ASSETS_CACHE", str(tmp / "cache"))
        mp.delenv("CLIP_ASSETS_LANDING", raising=False)
        homes = {"local": config.data_home(tmp / "home"), "store": config.data_home(store.url("bench", "home"))}
        local_landing = config.landing_dir(homes["local"])
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        drops = [Path(d).name for d in write_drops(local_landing, drops=args.drops, pairs=args.pairs,
                                                    seed=args.seed, shard_size=args.shard_size)]
        t_synth = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.upload_dir(local_landing, "bench/home/landing")
        t_upload = time.perf_counter() - t0
        landing = {k: config.landing_dir(h) for k, h in homes.items()}
        tars = sorted(local_landing.glob("*/*.tar"))
        tar_bytes = sum(p.stat().st_size for p in tars)

        def ingest(k: str) -> tuple[float, int]:
            if k == "store":
                store.reset()
            t = time.perf_counter()
            seen = sum(ingest_drop(child(landing[k], d), home=homes[k]).seen for d in drops)
            return time.perf_counter() - t, seen

        lm = load_model(ModelSpec(name="clip-assets-tiny", device="cpu", batch_size=args.batch_size, workers=0,
                                  threads=args.threads or None))

        def embed(k: str) -> tuple[float, int]:
            h = homes[k]
            for d in drops:  # a clean output: embed_drop resumes per shard otherwise
                out = partition_dir("embeddings", d, h)
                out.rmtree() if k == "store" else shutil.rmtree(out, ignore_errors=True)
            if k == "store":
                store.reset()  # after the removal: the log holds the embedding run's requests only
            t = time.perf_counter()
            n = 0
            for d in drops:
                raw = commit.resolve(partition_dir("raw_pairs", d, h))  # as the embeddings asset reads it
                res = embed_drop(raw, lm, partition_dir("embeddings", d, h))
                assert res.rows_written == res.rows_total, (k, d, res)
                n += res.rows_written
            return time.perf_counter() - t, n

        times = {(s, k): [] for s in ("ingest", "embed") for k in homes}
        counts: dict[tuple[str, str], int] = {}
        logs: dict[str, list] = {}  # the store's requests of the last store run of each stage
        for stage, fn in (("ingest", ingest), ("embed", embed)):
            for r in range(args.repeats):
                for k in (("local", "store") if r % 2 == 0 else ("store", "local")):
                    sec, n = fn(k)
                    times[stage, k].append(sec)
                    counts[stage, k] = n
                    if k == "store":
                        with store.lock:
                            logs[stage] = list(store.requests)

        # what the last store embedding run fetched from the landing tars
        emb_reqs = logs["embed"]
        tar_gets = [r for r in emb_reqs if r.method == "GET" and "/landing/" in r.path and r.path.endswith(".tar")]
        n_img = counts["embed", "store"]
        sent_per_image = sum(r.body_bytes for r in tar_gets) / n_img
        ranged = sum(r.range is not None for r in tar_gets)
        from clip_assets.io.tables import read_partition
        sizes = [s for d in drops for s in read_partition("raw_pairs", d, homes["local"]).column("size").to_pylist()]
        mean_size = statistics.mean(sizes)

        med = {key: statistics.median(v) for key, v in times.items()}
        load_after = os.getloadavg()[0]
        print(f"world: {args.drops} drop(s) x {args.pairs} pairs, shards of {args.shard_size}: {len(tars)} tars "
              f"({tar_bytes / 2**20:.1f} MiB), mean image {mean_size:.0f} B; synth {t_synth:.1f} s, upload "
              f"{t_upload:.1f} s; model clip-assets-tiny cpu, batch {args.batch_size}, {args.threads or 'default'} "
              f"thread(s); median of {args.repeats}; load average {load_before:.1f} before, {load_after:.1f} after")
        print(f"{'stage':>9} {'home':>6} {'median s':>9} {'items/s':>9} {'x local':>8}  runs (s)")
        for stage in ("ingest", "embed"):  # items: pairs seen (ingest), images embedded (embed)
            for k in homes:
                m = med[stage, k]
                print(f"{stage:>9} {k:>6} {m:>9.2f} {counts[stage, k] / m:>9.0f} {m / med[stage, 'local']:>8.2f}"
                      f"  {' '.join(f'{t:.2f}' for t in times[stage, k])}")
        print(f"store embedding run: {len(tar_gets)} GETs of landing tars ({ranged} ranged) for {n_img} images = "
              f"{len(tar_gets) / n_img:.3f} GET/image; {sent_per_image:.0f} B sent/image vs mean image "
              f"{mean_size:.0f} B ({sent_per_image / mean_size:.3f}x; whole tars would be "
              f"{tar_bytes / n_img:.0f} B/image)")
        n_ing = len(logs["ingest"]) / counts["ingest", "store"]
        print(f"store requests by method: ingest run {by_method(logs['ingest'])} ({n_ing:.3f}/pair), "
              f"embedding run {by_method(emb_reqs)} ({len(emb_reqs) / n_img:.3f}/image)")
        figures = {
            "drops": args.drops, "pairs_per_drop": args.pairs, "shard_size": args.shard_size,
            "repeats": args.repeats, "batch_size": args.batch_size, "threads": args.threads,
            "load_avg_before": round(load_before, 2), "load_avg_after": round(load_after, 2),
            "tars": len(tars), "tar_bytes": tar_bytes,
            "synth_s": round(t_synth, 3), "upload_s": round(t_upload, 3),
            **{f"{s}_{k}_median_s": round(med[s, k], 4) for s, k in med},
            **{f"{s}_{k}_runs_s": [round(t, 4) for t in times[s, k]] for s, k in times},
            "ingest_local_pairs_per_s": round(counts["ingest", "local"] / med["ingest", "local"], 1),
            "ingest_store_pairs_per_s": round(counts["ingest", "store"] / med["ingest", "store"], 1),
            "ingest_ratio_store_local": round(med["ingest", "store"] / med["ingest", "local"], 3),
            "embed_local_images_per_s": round(counts["embed", "local"] / med["embed", "local"], 1),
            "embed_store_images_per_s": round(counts["embed", "store"] / med["embed", "store"], 1),
            "embed_ratio_store_local": round(med["embed", "store"] / med["embed", "local"], 3),
            "images_embedded": n_img, "pairs_seen": counts["ingest", "store"],
            "mean_image_bytes": round(mean_size, 1), "tar_get_bytes_per_image": round(sent_per_image, 1),
            "tar_get_bytes_over_mean_image": round(sent_per_image / mean_size, 4),
            "tar_gets_per_image": round(len(tar_gets) / n_img, 4), "tar_gets_ranged": ranged,
            "ingest_store_requests": by_method(logs["ingest"]), "embed_store_requests": by_method(emb_reqs),
        }
        if args.requests:
            for stage in ("ingest", "embed"):
                print(f"--- requests of the last store {stage} run")
                for q in logs[stage]:
                    print(f"{q.method:>6} {q.path} {q.range or ''} {q.body_bytes}")
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
