"""Pointer reads (image bytes by tar offset + size) from local disk vs a loopback S3 server (moto), in one run.

Writes one synthetic drop, uploads it to a bucket on moto's server bound to 127.0.0.1, and reads every pointer of
its index in tar order, as embedding and export do: locally, through s3:// with the handle cache (one open input
file per tar), and through s3:// without a cache (one open, hence one HEAD, per image). Prints the median time
per read, the ratio to local, and the bytes the server sent per image next to the mean image size: a ranged read
fetches the member, not the tar. The server counts the bytes (tests/io/s3_server.py); loopback has no network
latency, so the ratio is the per-request cost of the S3 protocol, a lower bound for a remote store.

    python bench/bench_s3_pointer.py [--pairs 2000 --repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "io")]  # this checkout's package and the loopback S3 helper


def timed_reads(pointers: list[dict], path_of, cached: bool) -> list[float]:
    from clip_assets.io.drops import close_handles, read_pointer

    handles: dict | None = {} if cached else None
    times = []
    for p in pointers:
        t0 = time.perf_counter()
        read_pointer(path_of(p), p["offset"], p["size"], handles)
        times.append(time.perf_counter() - t0)
    if handles is not None:
        close_handles(handles)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from s3_server import running_store

    from clip_assets.io import fs
    from clip_assets.io.drops import index_drop
    from clip_assets.world import write_drops

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the server logs every request otherwise

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp, running_store(mp) as store:
        [drop] = write_drops(Path(tmp) / "landing", drops=1, pairs=args.pairs, seed=11)
        store.upload_dir(drop, f"landing/{drop.name}")
        drop_url = store.url("landing", drop.name)
        pointers = [row for t in index_drop(drop) for row in t.to_pylist()]
        tar_bytes = sum(p.stat().st_size for p in drop.glob("*.tar"))
        mean_size = statistics.mean(p["size"] for p in pointers)

        def remote(p: dict) -> str:
            return fs.join(drop_url, Path(p["tar_path"]).name)

        rows = []
        for label, path_of, cached in (("local", lambda p: p["tar_path"], True),
                                       ("s3, handle cache", remote, True),
                                       ("s3, no cache", remote, False)):
            times: list[float] = []
            store.reset()
            for _ in range(args.repeats):
                times += timed_reads(pointers, path_of, cached)
            reqs = store.requests if path_of is remote else []
            n = len(pointers) * args.repeats
            rows.append((label, statistics.median(times), sum(r.body_bytes for r in reqs) / n, len(reqs) / n))

        print(f"drop: {len(pointers)} images in {len(list(drop.glob('*.tar')))} tars ({tar_bytes / 2**20:.1f} MiB), "
              f"mean image {mean_size:.0f} B; {args.repeats} passes over every pointer")
        print(f"{'reads':>18} {'median us/read':>15} {'x local':>8} {'bytes sent/image':>17} {'requests/image':>15}")
        local = rows[0][1]
        for label, med, sent, nreq in rows:
            shown_sent = f"{sent:>17.0f}" if label != "local" else f"{'-':>17}"
            shown_req = f"{nreq:>15.2f}" if label != "local" else f"{'-':>15}"
            print(f"{label:>18} {med * 1e6:>15.1f} {med / local:>8.1f} {shown_sent} {shown_req}")
        print(f"bytes sent per image / mean image size: {rows[1][2] / mean_size:.3f} (cached), "
              f"{rows[2][2] / mean_size:.3f} (no cache); downloading whole tars instead would send at least "
              f"{tar_bytes / len(pointers):.0f} B/image ({tar_bytes / len(pointers) / mean_size:.1f}x)")


if __name__ == "__main__":
    main()
