"""Ingestion throughput and memory: raw_pairs on a 2k-pair and a 20k-pair synthetic drop.

Prints pairs/s (median of --repeats runs) and the peak resident memory of a fresh process ingesting each drop.
Streaming means the peak must stay flat as the drop grows (ratio 20k/2k close to 1).

    python bench/bench_ingest.py [--small 2000 --large 20000 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from clip_assets.io.ingest import ingest_drop
drop, home = Path(sys.argv[1]), Path(sys.argv[2])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
res = ingest_drop(drop, home=home)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seen": res.seen, "kept": res.kept, "seconds": dt, "peak_mib": peak / 1024,
                  "base_mib": base / 1024}))
"""


def run_child(drop: Path, home: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(drop), str(home)], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from clip_assets.world import write_drops

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for n in (args.small, args.large):
            t0 = time.perf_counter()
            [drop] = write_drops(tmp / f"landing{n}", drops=1, pairs=n, seed=n)
            gen = time.perf_counter() - t0
            runs = [run_child(drop, tmp / f"home{n}") for _ in range(args.repeats)]
            rows.append({
                "pairs": n,
                "generate_s": gen,
                "pairs_per_s": statistics.median(r["seen"] / r["seconds"] for r in runs),
                "peak_mib": statistics.median(r["peak_mib"] for r in runs),
                "import_mib": statistics.median(r["base_mib"] for r in runs),
            })
        print(f"{'pairs':>8} {'pairs/s (median)':>17} {'peak RSS MiB':>13} {'after imports':>14}")
        for r in rows:
            print(f"{r['pairs']:>8} {r['pairs_per_s']:>17.0f} {r['peak_mib']:>13.1f} {r['import_mib']:>14.1f}")
        s, l_ = rows
        grow = (l_["peak_mib"] - l_["import_mib"]) / max(s["peak_mib"] - s["import_mib"], 1e-9)
        print(f"peak memory ratio {l_['pairs']}/{s['pairs']} pairs: {l_['peak_mib'] / s['peak_mib']:.2f}x "
              f"(working set above imports: {grow:.2f}x for {l_['pairs'] / s['pairs']:.0f}x the data)")


if __name__ == "__main__":
    main()
