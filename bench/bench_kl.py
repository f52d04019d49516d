"""Benchmark of the chunked KL engine (clip_assets.core.kl.kl_against_reference).

    python bench/bench_kl.py                      # full size: M=200000 targets, N=25000 refs, d=512
    python bench/bench_kl.py --m 20000            # ~10x quicker; throughput (targets/s) is linear in M
    python bench/bench_kl.py --m 20000 --backend numpy,torch --repeats 3

Random unit vectors stored as float16 (as in the warehouse), scale a = 100. In ONE run, each in its own
subprocess (so peak memory is measured cleanly: the high-water RSS during the runs minus the RSS before them,
with the data already loaded):
  (a) matmul bound: the bare (m, d) @ (d, n) block products in exactly the engine's chunking;
  (b) the chunked engine;
  (c) a straightforward implementation: per batch of 1,000 targets, the whole (1000, N) score matrix, numpy
      logsumexp and softmax, D_KL = sum(pi * s) - lse + log N, D_KLR = lse - log N - mean(s).
Each timing is repeated --repeats times (median quoted). Prints targets/s, engine / matmul-bound ratio (target
>= 0.6), speed-up over (c), and peak extra memory. (a)-(c) all compute in --dtype (float32 by default: the fast
mode; the engine's float64 default is ~2x slower, matmul-bound).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
A = 100.0


def make_data(m: int, n: int, d: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)

    def unit16(rows: int):
        out = np.empty((rows, d), dtype=np.float16)
        for i in range(0, rows, 8192):
            x = rng.standard_normal((min(8192, rows - i), d), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[i:i + x.shape[0]] = x
        return out

    return unit16(m), unit16(n)


def naive_kl(X, R, a, dtype, batch: int = 1000):
    """(c): the obvious numpy implementation, one (batch, N) score matrix at a time."""
    import numpy as np

    N = R.shape[0]
    Rt = np.ascontiguousarray(R, dtype=dtype).T  # (d, N)
    out_kl = np.empty(X.shape[0])
    out_klr = np.empty(X.shape[0])
    for i in range(0, X.shape[0], batch):
        S = (X[i:i + batch].astype(dtype) * dtype(a)) @ Rt  # (b, d) @ (d, N) -> (b, N)
        mx = S.max(axis=1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(S - mx).sum(axis=1))  # logsumexp
        P = np.exp(S - lse[:, None])  # softmax
        out_kl[i:i + batch] = (P * S).sum(axis=1) - lse + math.log(N)
        out_klr[i:i + batch] = lse - math.log(N) - S.mean(axis=1)
    return out_kl, out_klr


def matmul_bound(X, R, a, dtype, backend, budget_elems):
    """(a): the engine's block products and nothing else."""
    import numpy as np
    import torch

    from clip_assets.core.kl import plan_chunks

    M, N = X.shape[0], R.shape[0]
    rows, cols = plan_chunks(M, N, budget_elems)
    Rc = np.ascontiguousarray(R, dtype=dtype)
    if backend == "torch":
        Rt = torch.from_numpy(Rc)
        buf = torch.empty(rows * cols, dtype=Rt.dtype)
    else:
        buf = np.empty(rows * cols, dtype=dtype)
    for i in range(0, M, rows):
        Xc = np.asarray(X[i:i + rows], dtype=dtype) * dtype(a)
        m = Xc.shape[0]
        for j in range(0, N, cols):
            n = min(N, j + cols) - j
            if backend == "torch":
                torch.matmul(torch.from_numpy(Xc), Rt[j:j + n].T, out=buf[: m * n].view(m, n))
            else:
                np.matmul(Xc, Rc[j:j + n].T, out=buf[: m * n].reshape(m, n))


def worker(args) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from clip_assets.core.kl import kl_against_reference

    dtype = np.dtype(args.dtype).type
    X, R = make_data(args.m, args.n, args.d)
    if args.method == "engine":
        def run(x):
            kl_against_reference(x, R, A, dtype=dtype, budget_elems=args.budget_elems, backend=args.backend)
    elif args.method == "matmul":
        def run(x):
            matmul_bound(x, R, A, dtype, args.backend, args.budget_elems)
    elif args.method == "naive":
        def run(x):
            naive_kl(x, R, A, dtype)
    else:
        raise SystemExit(f"unknown method {args.method}")
    run(X[:64])  # warm-up: thread pools, lazy library init
    # Peak memory = high-water RSS during the runs minus RSS before them. ru_maxrss alone would also carry
    # any earlier transient peak (data generation), so reset the kernel's high-water mark first (Linux
    # /proc/self/clear_refs "5"); fall back to the ru_maxrss delta where that is not possible.
    hwm_reset = _reset_hwm()
    base_kb = _status_kb("VmRSS") if hwm_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run(X)
        times.append(time.perf_counter() - t0)
    peak_kb = _status_kb("VmHWM") if hwm_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"times": times, "peak_extra_mib": max(0, peak_kb - base_kb) / 1024.0,
                      "data_mib": (X.nbytes + R.nbytes) / 2**20}))


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmHWM") > 0
    except OSError:
        return False


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def spawn(args, method: str, backend: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--backend", backend, "--m", str(args.m),
           "--n", str(args.n), "--d", str(args.d), "--repeats", str(args.repeats), "--dtype", args.dtype,
           "--threads", str(args.threads), "--budget-elems", str(args.budget_elems)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{method}/{backend} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def agreement(args, backend: str) -> tuple[float, float]:
    """max |engine - naive| on D_KL and D_KLR for the first 1,000 targets (sanity check)."""
    import numpy as np

    from clip_assets.core.kl import kl_against_reference

    X, R = make_data(min(args.m, 1000), args.n, args.d)
    dtype = np.dtype(args.dtype).type
    e = kl_against_reference(X, R, A, dtype=dtype, budget_elems=args.budget_elems, backend=backend)
    kl, klr = naive_kl(X, R, A, np.float64)
    return float(np.abs(e["d_kl"] - kl).max()), float(np.abs(e["d_klr"] - klr).max())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, default=200_000, help="targets (default 200000)")
    p.add_argument("--n", type=int, default=25_000, help="references (default 25000)")
    p.add_argument("--d", type=int, default=512, help="embedding dimension (default 512)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--backend", default="numpy", help="comma-separated engine backends: numpy,torch")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--budget-elems", type=int, default=2**24)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.method = args.worker
        worker(args)
        return

    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    from clip_assets.core.kl import plan_chunks

    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    rows, cols = plan_chunks(args.m, args.n, args.budget_elems)
    gflop = 2.0 * args.m * args.n * args.d / 1e9
    print(f"bench_kl: M={args.m} N={args.n} d={args.d} a={A} dtype={args.dtype} threads={args.threads} "
          f"repeats={args.repeats} blocks={rows}x{cols} (budget {args.budget_elems}) "
          f"torch {torch.__version__} numpy {np.__version__}")
    # ~40 GFLOP/s per pass on the shared 2-core reference box (matmul ~50, engine ~37, straightforward ~28)
    est = (len(backends) * 2 + 1.5) * args.repeats * gflop / 40.0
    print(f"one pass = {gflop:.0f} GFLOP; rough total run time at ~40 GFLOP/s: {est / 60:.1f} min")
    if est > 180:
        print(f"NOTE: this size does not fit in 3 minutes on a shared 2-core box; throughput (targets/s) is linear in M, "
              f"so --m {max(1000, int(args.m * 150 / est) // 1000 * 1000)} gives the same figures in ~2.5 min.")
    sys.stdout.flush()

    results = {}
    for b in backends:
        results[("matmul", b)] = spawn(args, "matmul", b)
        results[("engine", b)] = spawn(args, "engine", b)
    results[("naive", "numpy")] = spawn(args, "naive", "numpy")

    med = {k: statistics.median(v["times"]) for k, v in results.items()}
    naive_t = med[("naive", "numpy")]
    print()
    print(f"{'method':<37} {'median s':>9} {'runs s':>22} {'targets/s':>11} {'GFLOP/s':>8} {'peak MiB':>9}")
    for (meth, b), r in results.items():
        label = {"matmul": "(a) matmul bound", "engine": "(b) chunked engine",
                 "naive": "(c) straightforward (1000,N)"}[meth] + f" [{b}]"
        runs = ", ".join(f"{t:.2f}" for t in r["times"])
        print(f"{label:<37} {med[meth, b]:>9.2f} {runs:>22} {args.m / med[meth, b]:>11,.0f} "
              f"{gflop / med[meth, b]:>8.1f} {r['peak_extra_mib']:>9.0f}")
    print()
    for b in backends:
        ratio = med[("matmul", b)] / med[("engine", b)]
        dkl, dklr = agreement(args, b)
        print(f"[{b}] engine / matmul-bound = {ratio:.2f} (target >= 0.6: {'OK' if ratio >= 0.6 else 'MISSED'}); "
              f"speed-up over straightforward = {naive_t / med[('engine', b)]:.2f}x; "
              f"max |engine - float64 naive| on 1000 targets: D_KL {dkl:.1e}, D_KLR {dklr:.1e}")
    print(f"data (float16 targets + refs) = {results[('naive', 'numpy')]['data_mib']:.0f} MiB, not in peak figures")


if __name__ == "__main__":
    main()
