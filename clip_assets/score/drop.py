"""One drop's pair_scores and kl_stats against the reference set: compute, write, and describe."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure  # no pyplot: no global backend state

from clip_assets.core.drop_scores import drop_statistics
from clip_assets.io.commit import SCRATCH_GRACE_S, clean_stale, stage_dirs
from clip_assets.io.reference import ReferenceSet, load_reference
from clip_assets.io.tables import read_embeddings, read_partition
from clip_assets.io.warehouse import partition_dir
from clip_assets.models.card import read_card

PAIR_COLUMNS = ["clip_score", "s", "log_r_img", "log_r_txt", "log_r_siglip"]
KL_COLUMNS = ["image_kl", "image_klr", "image_dc", "image_dw", "text_kl", "text_klr", "text_dc", "text_dw"]
_LINEAGE = [("drop", pa.string()), ("model_id", pa.string()), ("reference_id", pa.string())]
PAIR_SCORES_SCHEMA = pa.schema([("uid", pa.string()), *[(c, pa.float64()) for c in PAIR_COLUMNS], *_LINEAGE])
KL_STATS_SCHEMA = pa.schema([("uid", pa.string()), *[(c, pa.float64()) for c in KL_COLUMNS], *_LINEAGE])


class LineageMismatchError(ValueError):
    """Embeddings, reference set and current model disagree on the model id."""


@dataclass
class ScoredDrop:
    """What :func:`score_drop` wrote: both tables, every statistic (M,), the reference and model scale."""

    drop: str
    pair_scores: pa.Table
    kl_stats: pa.Table
    stats: dict[str, np.ndarray]
    reference: ReferenceSet
    logit_scale: float
    seconds: float

    @property
    def rows(self) -> int:
        return self.pair_scores.num_rows


def scoring_inputs(drop: str, home: Path, embeddings_model_ids) -> tuple[ReferenceSet, float, float | None]:
    """The reference set and the current model's scale a and bias b, after checking that the embeddings (their
    model ids), the reference set and the current contrastive_model agree (LineageMismatchError otherwise)."""
    ref = load_reference(home)
    card = read_card(home)
    model_ids = set(embeddings_model_ids)
    if model_ids != {ref.model_id} or card["model_id_str"] != ref.model_id:
        raise LineageMismatchError(
            f"model mismatch for drop {drop}: embeddings {sorted(model_ids)}, reference set {ref.model_id}, "
            f"current contrastive_model {card['model_id_str']}. Re-materialize embeddings and reference_set.")
    return ref, float(card["model_id"]["logit_scale"]), card["model_id"].get("logit_bias")


def commit_scores(drop: str, home: Path, uids: pa.ChunkedArray | pa.Array, st: dict[str, np.ndarray],
                  ref: ReferenceSet) -> tuple[pa.Table, pa.Table]:
    """Build the pair_scores and kl_stats tables of ``uids`` (embeddings order) from the statistics ``st`` and
    publish both partitions as one commit; every executor ends here."""
    n = len(uids)
    bad = {c: len(v) for c, v in st.items() if len(v) != n}
    if bad:
        raise ValueError(f"drop {drop}: {n} uids but statistics of other lengths {bad}")
    lineage = {"drop": pa.array([drop] * n), "model_id": pa.array([ref.model_id] * n),
               "reference_id": pa.array([ref.reference_id] * n)}
    pair_cols = {c: pa.array(st[c]) if c in st else pa.nulls(n, pa.float64()) for c in PAIR_COLUMNS}
    pair_t = pa.table({"uid": uids, **pair_cols, **lineage}).cast(PAIR_SCORES_SCHEMA)
    kl_t = pa.table({"uid": uids, **{c: pa.array(st[c]) for c in KL_COLUMNS}, **lineage}).cast(KL_STATS_SCHEMA)
    # one commit of both tables, as versions behind pointers (like raw_pairs + rejected_pairs): a kill between
    # the two never leaves new scores beside old KL statistics, and a reader holding a listed version keeps it
    finals = [partition_dir("pair_scores", drop, home), partition_dir("kl_stats", drop, home)]
    for f in finals:
        clean_stale(f.parent, older_than_s=SCRATCH_GRACE_S)
    with stage_dirs(finals, versioned=True) as (pw, kw):
        pw.write_table("part-00000.parquet", pair_t)
        kw.write_table("part-00000.parquet", kl_t)
    return pair_t, kl_t


def score_drop(drop: str, home: Path, budget_elems: int, siglip_tau: float | None) -> ScoredDrop:
    """One pass per modality against the reference set gives every score and KL statistic of the drop; both
    partitions are replaced (one commit each)."""
    t0 = time.perf_counter()
    emb, U, V = read_embeddings(drop, home)
    ref, a, b = scoring_inputs(drop, home, emb["model_id"].unique().to_pylist())
    st = drop_statistics(U, V, ref.images, ref.texts, ref.image_mean, ref.text_mean, ref.image_cov, ref.text_cov,
                         a, b=b, tau=siglip_tau, budget_elems=budget_elems)
    pair_t, kl_t = commit_scores(drop, home, emb["uid"], st, ref)
    return ScoredDrop(drop, pair_t, kl_t, st, ref, a, time.perf_counter() - t0)


def kl_in_range(sd: ScoredDrop, tol: float = 1e-9) -> bool:
    """0 <= D_KL <= log N, D_KLR >= 0, D_C >= 0, D_W >= 0 on both sides, every statistic finite."""
    st, log_n = sd.stats, float(np.log(sd.reference.n))
    return bool(all(np.isfinite(st[c]).all() for c in st) and all(
        (st[f"{s}_kl"] >= -tol).all() and (st[f"{s}_kl"] <= log_n + tol).all() and (st[f"{s}_klr"] >= -tol).all()
        and (st[f"{s}_dc"] >= 0).all() and (st[f"{s}_dw"] >= -tol).all() for s in ("image", "text")))


def extremes(sd: ScoredDrop, home: Path, columns: tuple[str, ...], k: int = 5) -> list[dict]:
    """The ``k`` highest and lowest rows of each column, with their captions from raw_pairs."""
    raw = read_partition("raw_pairs", sd.drop, home, columns=["uid", "caption"])
    cap = dict(zip(raw["uid"].to_pylist(), raw["caption"].to_pylist()))
    caps = [cap.get(u, "?") for u in sd.pair_scores["uid"].to_pylist()]
    rows = []
    for name in columns:
        values = sd.stats[name]
        order = np.argsort(values, kind="stable")
        rows += [{"stat": name, "end": "top", "value": float(values[i]), "caption": caps[i]} for i in order[::-1][:k]]
        rows += [{"stat": name, "end": "bottom", "value": float(values[i]), "caption": caps[i]} for i in order[:k]]
    return rows


def histograms(cols: dict[str, np.ndarray], drop: str) -> Figure:
    """One histogram per column of one drop (finite values; the count of others in the panel's title), two
    rows of panels, each with its axes labelled."""
    names = list(cols)
    per_row = (len(names) + 1) // 2
    fig = Figure(figsize=(3.2 * per_row, 6.0))
    axes = np.ravel(fig.subplots(2, per_row))
    for ax, name in zip(axes, names):
        finite = np.isfinite(cols[name])
        ax.hist(cols[name][finite], bins=50, color="#4c72b0")
        missing = int((~finite).sum())
        ax.set_title(name + (f" ({missing:,} without a value)" if missing else ""), fontsize=9)
        ax.set_xlabel(name, fontsize=8)
        ax.set_ylabel("pairs per bin", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle(f"drop {drop}: {len(next(iter(cols.values()), [])):,} pairs")
    fig.tight_layout()
    return fig
