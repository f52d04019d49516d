"""The ``ray`` executor of importance_weights: :func:`weigh_drop_ray`, same inputs and outputs as
:func:`clip_assets.iwl.weights.weigh_drop`.

log w(x) = a' <u_x, v_t*> + b' is row-wise; the overflow shift and the ESS are over the whole drop. So:

    driver: list the embeddings files once (uids, model ids: the local path's model check), load the current
            contrastive_model and embed the prompts (P texts, one forward pass), ray.put the prompt embeddings ONCE
      -> one CPU task per row block (an embeddings shard file, or ``block_rows`` rows inside one): read its image
         embeddings through the filesystem layer, log w for every prompt (core.iwl.log_importance_weights)
      -> driver: blocks in plan order (not completion order), uids checked against the plan, log w concatenated
         per prompt, weights_from_log once per prompt (the one shift of the pool), then the local path's commit
         (:func:`clip_assets.iwl.weights.commit_weights`).

Same rows in the same order as the local path, log weights equal to float rounding. Faults as for scoring
(:mod:`clip_assets.score.drop_ray`): a task lost with its worker is retried a bounded number of times, else the
call raises before anything is committed and the previous partition stays.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from clip_assets.core.iwl import log_importance_weights, weights_from_log
from clip_assets.io.tables import RowBlock, plan_embeddings, read_embeddings_block
from clip_assets.iwl.weights import DropWeights, check_model, commit_weights
from clip_assets.models.card import load_current_model
from clip_assets.models.executors import init_ray, map_blocks


def _weigh_block(block: RowBlock, shared: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """One Ray task: the block's uids and its log weights, (P, m) float64, one row per prompt."""
    uids, u, _ = read_embeddings_block(block)
    lw = [log_importance_weights(u, v, shared["a_prime"], shared["b_prime"]) for v in shared["v"]]
    return uids, np.stack(lw) if lw else np.zeros((0, len(uids)))


def weigh_drop_ray(drop: str, home: Path, prompts: Sequence[str], a_prime: float, b_prime: float, *,
                   block_rows: int = 0, num_cpus: int | None = None,
                   log: Callable[[str], Any] | None = None) -> DropWeights:
    """:func:`clip_assets.iwl.weights.weigh_drop` as Ray tasks (see the module doc); same result and files.

    Args:
        block_rows: rows per task (0: one task per embeddings file, i.e. per input shard).
        num_cpus: CPUs of a local cluster started here when there is no RAY_ADDRESS.
        log: where to say which cluster was used.
    """
    t0 = time.perf_counter()
    plan = plan_embeddings(drop, home, block_rows)
    loaded = load_current_model(home)
    check_model(drop, plan.model_ids, loaded)
    v = loaded.encode_texts(list(prompts)).cpu().numpy()  # (P, d)
    init_ray(num_cpus=num_cpus, log_fn=log)
    results = map_blocks(_weigh_block, plan.blocks, {"v": v, "a_prime": float(a_prime), "b_prime": float(b_prime)})
    plan.check_uids(drop, [u for uids, _ in results for u in uids], "weighed")
    lw = np.concatenate([r for _, r in results], axis=1) if results else np.zeros((len(prompts), 0))
    weights = {prompt: weights_from_log(lw[p]) for p, prompt in enumerate(prompts)}
    return commit_weights(drop, home, plan.uids, weights, a_prime, b_prime, loaded.model_id_str, t0)
