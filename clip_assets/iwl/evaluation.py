"""Zero-shot evaluation of every seed's iwl_model vs baseline_model, its Markdown report and bar plot.

Mean and sample std (ddof=1) over seeds; deltas are IWL - baseline paired by seed, summarised by
:func:`clip_assets.core.stats.paired_difference` (mean, std and a 95% Student-t interval over seeds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend state

from clip_assets.core.stats import paired_difference
from clip_assets.io.commit import write_text
from clip_assets.models import iwl_train as iw

METRICS = ("accuracy", "macro_f1")
KINDS = ("iwl", "baseline")


@dataclass(frozen=True)
class EvalSettings:
    """Which labelled set, and how it is prompted (see the iwl_eval asset's config for each field)."""

    eval_set: str = "synthetic"
    target_domain: str = "red"
    eval_images: int = 1000
    eval_seed: int = 12345
    class_names: Sequence[str] = ()
    template: str = iw.DEFAULT_TEMPLATE
    also_overall: bool = True


def _eval_sets(h: Path, s: EvalSettings) -> dict:
    target = iw.load_eval_set(s.eval_set, home=h, target_domain=s.target_domain, n=s.eval_images,
                              seed=s.eval_seed, class_names=list(s.class_names) or None)
    sets = {"target": target}
    if s.also_overall and s.eval_set in ("", "synthetic"):
        sets["overall"] = iw.load_eval_set("synthetic", home=h, target_domain=None, n=s.eval_images,
                                           seed=s.eval_seed + 1)
    return sets


def _evaluate_seeds(manifest: dict, sets: dict, template: str, log) -> tuple[list[dict], dict]:
    """Per seed: every metric of both models on every set; and each (seed, kind, set)'s full report."""
    per_seed, reports = [], {}
    for seed, entry in sorted(manifest["seeds"].items(), key=lambda kv: int(kv[0])):
        row = {"seed": int(seed)}
        for kind in KINDS:
            loaded = iw.load_checkpoint(entry[f"{kind}_model"]["checkpoint"])
            for set_name, es in sets.items():
                r = iw.evaluate_zero_shot(loaded, es, template)
                reports[(int(seed), kind, set_name)] = r
                for metric in METRICS:
                    row[f"{set_name}_{metric}_{kind}"] = r[metric]
        log(f"seed {seed}: target macro F1 IWL {row['target_macro_f1_iwl']:.3f}, "
            f"baseline {row['target_macro_f1_baseline']:.3f}")
        per_seed.append(row)
    return per_seed, reports


def _summary(manifest: dict, target, sets: dict, per_seed: list[dict]) -> dict:
    summary = {"seeds": len(per_seed), "prompt": manifest["prompt"], "eval_set": target.source,
               "eval_n": target.n, "pairs": manifest.get("pairs"), "train_config": manifest.get("train_config")}
    for set_name in sets:
        for metric in METRICS:
            for kind in KINDS:
                key = f"{set_name}_{metric}_{kind}"
                summary[key], summary[f"{key}_std"] = iw.mean_std([r[key] for r in per_seed])
            key = f"{set_name}_delta_{metric}"
            d = paired_difference([r[f"{set_name}_{metric}_iwl"] for r in per_seed],
                                  [r[f"{set_name}_{metric}_baseline"] for r in per_seed])
            summary[key], summary[f"{key}_std"] = d.mean, d.std if d.n > 1 else 0.0
            one = d.n < 2  # no interval from one seed (None, not NaN, in the JSON and the metadata)
            summary[f"{key}_ci_low"], summary[f"{key}_ci_high"] = (None, None) if one else (d.ci_low, d.ci_high)
    return summary


def _with_deltas(per_seed: list[dict], sets: Sequence[str]) -> list[dict]:
    """Each seed's row plus ``<set>_delta_<metric>`` = IWL - baseline."""
    return [{**r, **{f"{s}_delta_{m}": r[f"{s}_{m}_iwl"] - r[f"{s}_{m}_baseline"] for s in sets for m in METRICS}}
            for r in per_seed]


def _per_class(target, reports: dict, seeds: list[int]) -> list[dict]:
    rows = []
    for ci, name in enumerate(target.class_names):
        row = {"class": name, "support": reports[(seeds[0], "iwl", "target")]["per_class"][ci]["support"]}
        for kind in KINDS:
            row[f"f1_{kind}"], row[f"f1_{kind}_std"] = iw.mean_std(
                [reports[(sd, kind, "target")]["per_class"][ci]["f1"] for sd in seeds])
        row["delta_f1"] = row["f1_iwl"] - row["f1_baseline"]
        rows.append(row)
    return rows


def evaluate_models(h: Path, settings: EvalSettings, log: Callable[[str], None] = lambda s: None) -> dict:
    """Evaluate every seed's pair of models in the manifest.

    Returns {"per_seed": [{seed, <set>_<metric>_<kind>}], "summary": {<set>_<metric>_<kind>[_std],
    <set>_delta_<metric>[_std], ...}, "per_class": [...], "sets": ["target", ("overall")], "manifest": ...}.
    """
    manifest = iw.read_manifest(iw.iwl_root(h))
    sets = _eval_sets(h, settings)
    per_seed, reports = _evaluate_seeds(manifest, sets, settings.template, log)
    per_seed = _with_deltas(per_seed, list(sets))
    target = sets["target"]
    return {"manifest": manifest, "per_seed": per_seed, "summary": _summary(manifest, target, sets, per_seed),
            "per_class": _per_class(target, reports, [r["seed"] for r in per_seed]), "sets": list(sets)}


def _pm(m: float, s: float) -> str:
    return f"{m:.3f} ± {s:.3f}"


def _ci(s: dict, key: str) -> str:
    lo, hi = s.get(f"{key}_ci_low"), s.get(f"{key}_ci_high")
    return "n/a (1 seed)" if lo is None or hi is None else f"[{lo:+.3f}, {hi:+.3f}]"


def report_markdown(result: dict) -> str:
    """The comparison as Markdown: mean ± sample std over seeds, the paired difference's 95% t interval, and one
    row per seed."""
    s = result["summary"]
    lines = [
        f"IWL vs baseline: prompt {s['prompt']!r}, {s['seeds']} seed(s), eval set {s['eval_set']} "
        f"(n={s['eval_n']}), {s.get('pairs')} training pairs",
        "",
        "| eval set | metric | baseline | IWL | IWL - baseline | 95% CI (paired, t) |",
        "|---|---|---|---|---|---|",
    ]
    for set_name in result["sets"]:
        for metric in METRICS:
            k = f"{set_name}_{metric}"
            d = f"{set_name}_delta_{metric}"
            lines.append(f"| {set_name} | {metric} | {_pm(s[k + '_baseline'], s[k + '_baseline_std'])} | "
                         f"{_pm(s[k + '_iwl'], s[k + '_iwl_std'])} | {_pm(s[d], s[d + '_std'])} | {_ci(s, d)} |")
    return "\n".join(lines + ["", *_per_seed_table(result)])


def _per_seed_table(result: dict) -> list[str]:
    cols = [(st, m) for st in result["sets"] for m in METRICS]
    head = "| seed | " + " | ".join(f"{st} {m}: baseline -> IWL (delta)" for st, m in cols) + " |"
    rows = [head, "|---|" + "---|" * len(cols)]
    for r in result["per_seed"]:
        cells = [f"{r[f'{st}_{m}_baseline']:.3f} -> {r[f'{st}_{m}_iwl']:.3f} "
                 f"({r[f'{st}_{m}_iwl'] - r[f'{st}_{m}_baseline']:+.3f})" for st, m in cols]
        rows.append(f"| {r['seed']} | " + " | ".join(cells) + " |")
    return rows


def evaluate_and_report(h: Path, settings: EvalSettings, log: Callable[[str], None] = lambda s: None
                        ) -> tuple[dict, str, Path]:
    """:func:`evaluate_models`, then ``<home>/models/iwl/eval.md`` and ``eval.json`` written atomically.
    Returns (result, Markdown, folder)."""
    result = evaluate_models(h, settings, log)
    md = report_markdown(result)
    root = iw.iwl_root(h)
    write_text(root / "eval.md", md + "\n")
    write_text(root / "eval.json", json.dumps({k: v for k, v in result.items() if k != "manifest"}, indent=2,
                                              default=str))
    return result, md, root


def metrics_valid(result: dict) -> bool:
    """Every seed of the manifest evaluated; every accuracy and F1 finite in [0, 1], every IWL - baseline delta
    finite in [-1, 1] (a delta may be negative: IWL can lose on a seed)."""
    def ok(key: str, v: float) -> bool:
        low = -1.0 if "_delta_" in key else 0.0
        return bool(np.isfinite(v) and low <= v <= 1.0)

    rows = result["per_seed"]
    return bool(len(rows) == len(result["manifest"]["seeds"])
                and all(ok(k, v) for r in rows for k, v in r.items() if k != "seed"))


def bar_plot(per_class: list[dict], summary: dict) -> Figure:
    """Per-class target F1 and target accuracy / macro F1, baseline vs IWL, with the std over seeds."""
    fig = Figure(figsize=(9.0, 3.2), dpi=100)
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [max(len(per_class), 2), 2]})
    x = np.arange(len(per_class))
    for off, kind, color in ((-0.2, "baseline", "tab:gray"), (0.2, "iwl", "tab:red")):
        ax1.bar(x + off, [r[f"f1_{kind}"] for r in per_class], width=0.4, color=color,
                yerr=[r[f"f1_{kind}_std"] for r in per_class], label=kind)
    ax1.set_xticks(x, [r["class"] for r in per_class], rotation=30, ha="right", fontsize=8)
    ax1.set_ylabel("F1 (mean over seeds)")
    ax1.set_ylim(0, 1)
    ax1.set_title("per-class F1, target domain")
    ax1.legend(fontsize=8)
    for off, kind, color in ((-0.2, "baseline", "tab:gray"), (0.2, "iwl", "tab:red")):
        ax2.bar(np.arange(2) + off, [summary[f"target_accuracy_{kind}"], summary[f"target_macro_f1_{kind}"]],
                width=0.4, yerr=[summary[f"target_accuracy_{kind}_std"], summary[f"target_macro_f1_{kind}_std"]],
                color=color)
    ax2.set_xticks(np.arange(2), ["accuracy", "macro F1"])
    ax2.set_ylim(0, 1)
    ax2.set_title(f"target domain, {summary['seeds']} seed(s)")
    fig.tight_layout()
    return fig
