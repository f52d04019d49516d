"""Every estimate against the synthetic world's exact truth: Spearman, Pearson and AUC per estimate, and a plot."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from matplotlib.figure import Figure  # no pyplot: no global backend state

from clip_assets.core.calibration import auc, pearson, spearman
from clip_assets.io import fs
from clip_assets.io.catalog import partition_files
from clip_assets.io.commit import write_table
from clip_assets.io.tables import drops_with
from clip_assets.io.warehouse import asset_dir
from clip_assets.score.drop import KL_COLUMNS

ESTIMATES = [
    # (estimate column, truth column)
    ("log_r_img", "true_log_ratio"), ("log_r_txt", "true_log_ratio"), ("s", "true_log_ratio"),
    ("clip_score", "true_log_ratio"),
    ("image_kl", "true_kl_image"), ("image_klr", "true_klr_image"), ("image_dc", "true_kl_image"),
    ("image_dw", "true_kl_image"),
    ("text_kl", "true_kl_text"), ("text_klr", "true_klr_text"), ("text_dc", "true_kl_text"),
    ("text_dw", "true_kl_text"),
]
AUC_SCORES = ["clip_score", "s", "log_r_img", "log_r_txt"]
CALIBRATION_SCHEMA = pa.schema([("estimate", pa.string()), ("truth", pa.string()), ("spearman", pa.float64()),
                                ("pearson", pa.float64()), ("auc_aligned", pa.float64()), ("n", pa.int64())])


def calibration_table(df) -> list[dict]:
    """Spearman/Pearson of each estimate vs its exact truth, and AUC (aligned vs misaligned/placeholder) for the
    pair scores (None, a null, for the KL estimates, which do not score a pair)."""
    aligned = ~(df["is_misaligned"].to_numpy() | df["is_placeholder"].to_numpy())
    rows = []
    for est, truth in ESTIMATES:
        x, y = df[est].to_numpy(), df[truth].to_numpy()
        rows.append({"estimate": est, "truth": truth, "spearman": spearman(x, y), "pearson": pearson(x, y),
                     "auc_aligned": auc(x, aligned) if est in AUC_SCORES else None, "n": int(len(x))})
    return rows


@dataclass
class Calibration:
    """The calibrated drops, the joined rows (scores + truth) and one row per estimate."""

    drops: list[str]
    frame: pl.DataFrame
    rows: list[dict]

    def by(self, estimate: str, truth: str) -> dict:
        return next(r for r in self.rows if r["estimate"] == estimate and r["truth"] == truth)


def scored_drops_with_truth(home: Path, landing: Path | str) -> list[str]:
    """Drops with kl_stats and a ``<landing>/<drop>.truth.parquet`` (the landing: a folder or a store URL)."""
    return [d for d in drops_with("kl_stats", home) if fs.exists(fs.join(landing, f"{d}.truth.parquet"))]


def calibrate(home: Path, landing: Path | str, drops: list[str]) -> Calibration:
    """Join each drop's scores with its truth, compute :func:`calibration_table`, write
    ``warehouse/score_calibration/score_calibration.parquet``."""
    frames = []
    for d in drops:  # file lists from Python: a '[' in the data home's path is no glob pattern
        ps = pl.from_arrow(fs.read_tables(partition_files("pair_scores", d, home)))
        kl = pl.from_arrow(fs.read_tables(partition_files("kl_stats", d, home))).select(["uid", *KL_COLUMNS])
        truth = pl.read_parquet(io.BytesIO(fs.read_bytes(fs.join(landing, f"{d}.truth.parquet"))))
        frames.append(ps.join(kl, on="uid").join(truth.drop("drop"), on="uid", how="inner"))
    df = pl.concat(frames)
    rows = calibration_table(df)
    write_table(asset_dir("score_calibration", home) / "score_calibration.parquet",
                pa.Table.from_pylist(rows, schema=CALIBRATION_SCHEMA))
    return Calibration(drops, df, rows)


def scatter(cal: Calibration) -> Figure:
    """Estimate vs truth for three estimates (5,000 sampled pairs), coloured by the pair's true kind."""
    fig = Figure(figsize=(13, 4))
    axes = fig.subplots(1, 3)
    df = cal.frame
    sub = df.sample(n=min(5000, df.height), seed=0)
    colours = np.where(sub["is_placeholder"].to_numpy(), "#c44e52",
                       np.where(sub["is_misaligned"].to_numpy(), "#dd8452", "#4c72b0"))
    for ax, (est, truth) in zip(axes, [("log_r_img", "true_log_ratio"), ("image_kl", "true_kl_image"),
                                       ("text_kl", "true_kl_text")]):
        ax.scatter(sub[truth].to_numpy(), sub[est].to_numpy(), s=4, alpha=0.4, c=colours)
        r = cal.by(est, truth)
        ax.set_xlabel(truth)
        ax.set_ylabel(f"estimated {est}")
        ax.set_title(f"Spearman {r['spearman']:.3f}  Pearson {r['pearson']:.3f}", fontsize=9)
    fig.suptitle("estimates vs exact truth (blue aligned, orange misaligned, red placeholder)")
    fig.tight_layout()
    return fig
