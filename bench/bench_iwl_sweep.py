"""Where Importance Weight Learning helps: a sweep of a', target prevalence in the pool, training steps, pool size.

    python bench/bench_iwl_sweep.py --home H --weights-only                 # free: ESS and weight mass, every a'
    python bench/bench_iwl_sweep.py --home H --factor prevalence --values 0.2 0.1 --seeds 0 1 2
    python bench/bench_iwl_sweep.py --home H --factor a_prime --values 10 30 --seeds 0 1 2
    python bench/bench_iwl_sweep.py --home H --factor steps --values 100 400
    python bench/bench_iwl_sweep.py --home H --factor pool --values 1000 4000

``H`` is a synthetic data home with raw_pairs and importance_weights (after ``clip-assets demo``); the pool is
``load_training_pool(H)`` and the truth (``in_<domain>``) comes from ``<H>/landing/<drop>.truth.parquet``. One
factor moves at a time from the documented setting (a' as stored, the whole pool, the demo budget:
``DEMO_TRAIN``, normalise "mean"):

* a_prime: log w rescaled to a'_new <u, v*> (the stored b' only shifts log w, which the pool-mean normalisation
  divides out);
* prevalence: target-domain rows subsampled (seeded) so that they are this fraction of the pool, every other
  row kept (only down from the pool's own prevalence);
* pool: a seeded uniform subsample of this many rows;
* steps: training steps per model.

Per point and seed, the IWL and baseline models train on the same rows, init and batches
(:func:`clip_assets.models.iwl_train.train_pair`) and are evaluated zero-shot on the fixed target-domain and
whole-world sets (``iwl_eval``'s defaults); IWL - baseline is paired by seed (mean, std, 95% t interval,
:func:`clip_assets.core.stats.paired_difference`). Each point also reports ESS/M of the training weights and the
share of the weight mass on target-domain rows. Results go to ``--out`` (JSON) and a Markdown table on stdout.
Cost: two trainings per seed and point (~20-40 s each on a quiet core at the demo budget).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's clip_assets

from clip_assets.config import landing_dir  # noqa: E402
from clip_assets.core.iwl import effective_sample_size  # noqa: E402
from clip_assets.core.stats import paired_difference  # noqa: E402
from clip_assets.defs.iwl.assets import DEMO_TRAIN  # noqa: E402
from clip_assets.io.commit import write_text  # noqa: E402
from clip_assets.iwl.evaluation import METRICS, EvalSettings, _eval_sets  # noqa: E402
from clip_assets.models import iwl_train as iw  # noqa: E402
from clip_assets.models.train import TrainConfig  # noqa: E402


def in_domain(home: Path, pool: iw.TrainingPool, domain: str) -> np.ndarray:
    """(N,) bool: which pool rows are in ``domain`` (from the drops' truth files, by uid)."""
    flags = {}
    for d in pool.drops:
        t = pq.read_table(landing_dir(home) / f"{d}.truth.parquet", columns=["uid", f"in_{domain}"])
        flags.update(zip(t.column("uid").to_pylist(), t.column(f"in_{domain}").to_pylist()))
    return np.array([bool(flags[u]) for u in pool.pointers.column("uid").to_pylist()])


def subset(pool: iw.TrainingPool, keep: np.ndarray) -> iw.TrainingPool:
    idx = np.flatnonzero(keep)
    return replace(pool, pointers=pool.pointers.take(pa.array(idx)), log_weight=pool.log_weight[idx])


def point_pool(pool, target, factor: str, value: float, seed: int = 0):
    """The pool and target flags of one sweep point (see the module doc)."""
    rng = np.random.default_rng(seed)
    keep = np.ones(pool.n, dtype=bool)
    if factor == "a_prime":
        return replace(pool, log_weight=pool.log_weight * (value / pool.a_prime), a_prime=value), target
    if factor == "prevalence":
        rows, other = np.flatnonzero(target), int((~target).sum())
        k = int(round(value * other / (1.0 - value)))
        if k > rows.size:
            raise ValueError(f"prevalence {value} needs {k} target rows; the pool has {rows.size} (prevalence "
                             f"{target.mean():.3f}): only lower prevalences can be made by subsampling")
        keep[:] = ~target
        keep[rng.choice(rows, size=k, replace=False)] = True
    elif factor == "pool":
        if int(value) > pool.n:
            raise ValueError(f"pool size {int(value)} exceeds the pool's {pool.n} rows")
        keep[:] = False
        keep[rng.choice(pool.n, size=int(value), replace=False)] = True
    return subset(pool, keep), target[keep]


def weight_stats(pool, target) -> dict:
    w, _ = iw.training_weights(pool.log_weight, "mean")
    return {"pairs": pool.n, "prevalence": float(target.mean()), "ess_fraction": effective_sample_size(w) / w.size,
            "target_mass": float(w[target].sum() / w.sum())}


def run_point(pool, target, cfg: TrainConfig, seeds, sets, work: Path, world) -> dict:
    rows = []
    for seed in seeds:
        pr = iw.train_pair(pool, replace(cfg, seed=seed), work, world=world)
        row = {"seed": seed}
        for kind, res in (("iwl", pr.iwl), ("baseline", pr.baseline)):
            for name, es in sets.items():
                rep = iw.evaluate_zero_shot(res.loaded, es)
                for m in METRICS:
                    row[f"{name}_{m}_{kind}"] = rep[m]
        rows.append(row)
        print(f"  seed {seed}: target macro F1 {row['target_macro_f1_baseline']:.3f} -> "
              f"{row['target_macro_f1_iwl']:.3f}", file=sys.stderr)
    out = {"per_seed": rows, **weight_stats(pool, target)}
    for name in sets:
        for m in METRICS:
            d = paired_difference([r[f"{name}_{m}_iwl"] for r in rows], [r[f"{name}_{m}_baseline"] for r in rows])
            out[f"{name}_delta_{m}"] = d.to_dict()
            out[f"{name}_{m}_baseline"] = float(np.mean([r[f"{name}_{m}_baseline"] for r in rows]))
    return out


def _fmt(d: dict) -> str:
    if d["n"] < 2:
        return f"{d['mean']:+.3f}"
    return f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", required=True)
    ap.add_argument("--factor", choices=["a_prime", "prevalence", "steps", "pool"], default="a_prime")
    ap.add_argument("--values", type=float, nargs="+", default=[])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--domain", default="red")
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--weights-only", action="store_true", help="only ESS and target weight mass (no training)")
    ap.add_argument("--out", default="/tmp/bench_iwl_sweep.json")
    a = ap.parse_args()
    home = Path(a.home)
    pool = iw.load_training_pool(home)
    target = in_domain(home, pool, a.domain)
    if a.weights_only:
        print("| a' | prevalence | ESS/M | target weight mass |\n|---|---|---|---|")
        for ap_ in (1, 3, 10, 20, 30, 50, 100):
            s = weight_stats(*point_pool(pool, target, "a_prime", ap_))
            print(f"| {ap_} | {s['prevalence']:.3f} | {s['ess_fraction']:.3f} | {s['target_mass']:.3f} |")
        return
    base_cfg = TrainConfig(**{**DEMO_TRAIN, "threads": 1})
    sets = _eval_sets(home, EvalSettings(target_domain=a.domain, eval_images=a.eval_images))
    results, work = [], Path(a.out).with_suffix("") / "models"
    print(f"| {a.factor} | pairs | prevalence | ESS/M | target mass | target F1 baseline | target dF1 [95% CI] | "
          f"target dacc [95% CI] | overall dF1 [95% CI] |\n|---|---|---|---|---|---|---|---|---|")
    for v in a.values:
        t0 = time.perf_counter()
        cfg = replace(base_cfg, steps=int(v)) if a.factor == "steps" else base_cfg
        p, t = (pool, target) if a.factor == "steps" else point_pool(pool, target, a.factor, v)
        r = {"factor": a.factor, "value": v, "steps": cfg.steps, **run_point(p, t, cfg, a.seeds, sets, work, iw.synthetic_world(home))}
        r["seconds"] = time.perf_counter() - t0
        results.append(r)
        print(f"| {v:g} | {r['pairs']} | {r['prevalence']:.3f} | {r['ess_fraction']:.3f} | {r['target_mass']:.3f} | "
              f"{r['target_macro_f1_baseline']:.3f} | {_fmt(r['target_delta_macro_f1'])} | "
              f"{_fmt(r['target_delta_accuracy'])} | {_fmt(r['overall_delta_macro_f1'])} |", flush=True)
        write_text(Path(a.out), json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
