"""executors.map_blocks, the Ray task mapper behind scores + KL and importance weights: results in block order
whatever order the tasks finish in; a worker killed mid-task is retried within the bound and the result is
complete; past the bound (or with retries off) the call fails with Ray's worker-crash error; an error the code
raises is not retried and reaches the caller.

A local Ray cluster of 2 CPUs for the module (fixed ports: run one Ray test module at a time); skipped when the
optional extra ``ray`` is not installed.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from clip_assets.models.executors import TASK_MAX_RETRIES, map_blocks
from ray_support import attempts, killing, own_cluster


@pytest.fixture(scope="module")
def ray_cluster():
    with own_cluster() as desc:  # this module's own local cluster (tests/ray_support.py)
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the task bodies below, by value
        yield desc


def _slow_square(block, shared):
    time.sleep(block["sleep"])
    return block["i"] ** 2 + shared["offset"]


def _fails_on_three(block, shared):
    with open(os.path.join(shared["dir"], f"try-{block['i']}"), "a") as f:
        f.write("x")
    if block["i"] == 3:
        raise ValueError(f"block {block['i']} is bad")
    return block["i"]


def test_results_come_back_in_block_order(ray_cluster):
    blocks = [{"i": i, "sleep": 0.05 * (6 - i)} for i in range(6)]  # the first blocks finish last
    assert map_blocks(_slow_square, blocks, {"offset": 7}) == [i * i + 7 for i in range(6)]
    assert map_blocks(_slow_square, [], {"offset": 7}) == []


def test_a_killed_worker_is_retried_and_the_result_is_complete(ray_cluster, tmp_path):
    blocks = [{"i": i, "sleep": 0.0} for i in range(4)]
    got = map_blocks(killing(_slow_square, tmp_path, times=2), blocks, {"offset": 1})
    assert got == [i * i + 1 for i in range(4)]
    assert attempts(tmp_path) == 4 + 2  # two attempts died with their worker and ran again


def test_past_the_retry_bound_the_call_fails_with_the_worker_crash(ray_cluster, tmp_path):
    import ray

    (tmp_path / "off").mkdir()
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        map_blocks(killing(_slow_square, tmp_path / "off", times=1), [{"i": 0, "sleep": 0.0}], {"offset": 0},
                   max_retries=0)
    (tmp_path / "always").mkdir()
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        map_blocks(killing(_slow_square, tmp_path / "always", times=None), [{"i": 0, "sleep": 0.0}], {"offset": 0})
    assert attempts(tmp_path / "always") == 1 + TASK_MAX_RETRIES  # bounded, not Ray Data's unbounded default


def test_an_error_of_the_code_is_not_retried(ray_cluster, tmp_path):
    import ray

    blocks = [{"i": i} for i in range(6)]
    with pytest.raises(ray.exceptions.RayTaskError, match="block 3 is bad") as err:
        map_blocks(_fails_on_three, blocks, {"dir": str(tmp_path)})
    assert isinstance(err.value.cause, ValueError)
    assert (tmp_path / "try-3").read_text() == "x"  # raised once, not retried
