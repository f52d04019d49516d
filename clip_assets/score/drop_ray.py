"""The ``ray`` executor of pair_scores + kl_stats: :func:`score_drop_ray`, same inputs and outputs as
:func:`clip_assets.score.drop.score_drop`.

Every statistic of a pair depends only on that pair and the reference set (``drop_statistics`` is row-wise), so
the drop is cut into row blocks (one per embeddings shard file, or ``block_rows`` rows that never span two files)
and each block is scored in its own Ray task:

    driver: list the embeddings files once, read their uid/model_id columns, check lineage (the local path's
            check), ray.put the reference set + the model scale ONCE
      -> one CPU task per block: read its rows of the embeddings file (through the filesystem layer: a local
         path, or the object store every node reads), drop_statistics against the shared reference
      -> driver: results in block order (ray.get of the list, not completion order), each block's uids checked
         against the planned ones, concatenated, then the local path's commit (:func:`commit_scores`).

So the rows and their order are the local path's, and the values are the same function of the same float32
inputs (equal to float rounding: the score blocks of ``budget_elems`` are cut per task instead of per drop).
Faults: a task lost with its worker is retried up to ``executors.TASK_MAX_RETRIES`` times; past that (or on an
error raised by the code, not retried) the call raises before anything is committed; the previous pair_scores
and kl_stats stay as they were, and a re-run scores the drop again (one commit for both tables, so there is no
per-shard resume to make here, unlike embeddings).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clip_assets.core.drop_scores import drop_statistics
from clip_assets.io.tables import RowBlock, plan_embeddings, read_embeddings_block
from clip_assets.models.executors import init_ray, map_blocks
from clip_assets.score.drop import ScoredDrop, commit_scores, scoring_inputs


def _score_block(block: RowBlock, shared: dict[str, Any]) -> tuple[list[str], dict[str, np.ndarray]]:
    """One Ray task: the block's uids and every statistic of its rows (float64, shape (m,))."""
    uids, u, v = read_embeddings_block(block)
    ref = shared["ref"]
    st = drop_statistics(u, v, ref["images"], ref["texts"], ref["image_mean"], ref["text_mean"], ref["image_cov"],
                         ref["text_cov"], shared["a"], b=shared["b"], tau=shared["tau"],
                         budget_elems=shared["budget_elems"])
    return uids, st


def score_drop_ray(drop: str, home: Path, budget_elems: int, siglip_tau: float | None, *, block_rows: int = 0,
                   num_cpus: int | None = None, log: Callable[[str], Any] | None = None) -> ScoredDrop:
    """:func:`clip_assets.score.drop.score_drop` as Ray tasks (see the module doc); same result and files.

    Args:
        block_rows: rows per task (0: one task per embeddings file, i.e. per input shard).
        num_cpus: CPUs of a local cluster started here when there is no RAY_ADDRESS
            (:func:`clip_assets.models.executors.init_ray`).
        log: where to say which cluster was used.
    """
    t0 = time.perf_counter()
    plan = plan_embeddings(drop, home, block_rows)
    ref, a, b = scoring_inputs(drop, home, plan.model_ids)
    init_ray(num_cpus=num_cpus, log_fn=log)
    shared = {"ref": {k: getattr(ref, k) for k in ("images", "texts", "image_mean", "text_mean", "image_cov",
                                                   "text_cov")},
              "a": a, "b": b, "tau": siglip_tau, "budget_elems": int(budget_elems)}
    results = map_blocks(_score_block, plan.blocks, shared)
    plan.check_uids(drop, [u for uids, _ in results for u in uids], "scored")
    if results:
        st = {c: np.concatenate([r[c] for _, r in results]) for c in results[0][1]}
    else:  # no rows: the statistics of nothing, computed as the local path would
        d = ref.images.shape[1]
        st = drop_statistics(np.zeros((0, d), np.float32), np.zeros((0, d), np.float32), ref.images, ref.texts,
                             ref.image_mean, ref.text_mean, ref.image_cov, ref.text_cov, a, b=b, tau=siglip_tau,
                             budget_elems=budget_elems)
    pair_t, kl_t = commit_scores(drop, home, plan.uids, st, ref)
    return ScoredDrop(drop, pair_t, kl_t, st, ref, a, time.perf_counter() - t0)
