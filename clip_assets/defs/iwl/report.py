"""The multi-seed IWL report in one command (README: "Importance Weight Learning").

    python -m clip_assets.defs.iwl.report --seeds 0 1 2

Against the current data home ($CLIP_ASSETS_HOME or ./data) and Dagster instance (as ``clip-assets materialize``
uses them): materializes importance_weights for every drop that has embeddings, then iwl_model + baseline_model
for the given seeds (the demo's training budget unless --steps/--batch-size say otherwise) and iwl_eval, prints
the comparison (mean ± sample std over seeds, per seed below) and writes it to <home>/models/iwl/report.md.
The chain up to embeddings must exist first (``make demo``, or ``clip-assets materialize --all-drops``).
"""

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    from clip_assets import config as cfg
    from clip_assets.cli import materialize
    from clip_assets.defs.iwl.assets import DEMO_TRAIN, report_markdown
    from clip_assets.io.tables import drops_with
    from clip_assets.models.iwl_train import iwl_root

    p = argparse.ArgumentParser(prog="python -m clip_assets.defs.iwl.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=DEMO_TRAIN["steps"])
    p.add_argument("--batch-size", type=int, default=DEMO_TRAIN["batch_size"])
    p.add_argument("--prompt", default="", help="stored prompt to train with (default: the first configured)")
    p.add_argument("--eval-set", default="synthetic", help="'synthetic' or a labelled Parquet / ImageFolder path")
    p.add_argument("--target-domain", default="red", help="synthetic world domain of the evaluation set")
    p.add_argument("--eval-images", type=int, default=1000)
    args = p.parse_args(argv)

    home = cfg.data_home()
    drops = drops_with("embeddings", home)
    if not drops:
        print(f"no embeddings in {home}: run `make demo` (or `clip-assets materialize --all-drops`) first",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    materialize("key:importance_weights", drops, all_drops=False)
    run_config = {"ops": {
        "iwl_models": {"config": {"seeds": args.seeds, "steps": args.steps, "batch_size": args.batch_size,
                                  "prompt": args.prompt}},
        "iwl_eval": {"config": {"eval_set": args.eval_set, "target_domain": args.target_domain,
                                "eval_images": args.eval_images}},
    }}
    materialize("key:iwl_model or key:baseline_model or key:iwl_eval", None, all_drops=False, run_config=run_config)
    seconds = time.perf_counter() - t0
    result = json.loads((iwl_root(home) / "eval.json").read_text())  # what iwl_eval just wrote
    per_seed = "\n".join(
        f"seed {r['seed']}: target macro F1 baseline {r['target_macro_f1_baseline']:.3f} -> IWL "
        f"{r['target_macro_f1_iwl']:.3f}; accuracy {r['target_accuracy_baseline']:.3f} -> "
        f"{r['target_accuracy_iwl']:.3f}" for r in result["per_seed"])
    text = (f"{report_markdown(result)}\n\n{per_seed}\n\n"
            f"{args.steps} steps x {args.batch_size} pairs per model, seeds {args.seeds}; wall time {seconds:.0f}s\n")
    out = iwl_root(home) / "report.md"
    out.write_text(text)
    print(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
