"""Which executor runs a per-drop heavy stage (``local`` in process, or ``ray``), and the Ray cluster it uses.

* :func:`executor` reads ``CLIP_ASSETS_EXECUTOR`` ("local", the default, or "ray"); an asset's run config can
  override it (a non-empty value wins).
* :func:`init_ray` connects to the cluster at ``RAY_ADDRESS``; with none it starts a local cluster bound to
  loopback only (no dashboard, an explicit object-store size, ``CLIP_ASSETS_RAY_NUM_CPUS`` CPUs, default 2),
  whose workers import this same ``clip_assets`` tree as the driver.
* :func:`map_blocks` runs one function over a list of blocks as Ray tasks, with one shared value put in the
  object store once, and returns the results in the blocks' order (the stages that are a pure function of
  row blocks: scores + KL, importance weights).

Ray is an optional extra (``pip install clip-assets[ray]``); this module imports it only when asked to start it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

EXECUTORS = ("local", "ray")
EXECUTOR_ENV = "CLIP_ASSETS_EXECUTOR"
RAY_ADDRESS_ENV = "RAY_ADDRESS"
RAY_NUM_CPUS_ENV = "CLIP_ASSETS_RAY_NUM_CPUS"
RAY_OBJECT_STORE_MB_ENV = "CLIP_ASSETS_RAY_OBJECT_STORE_MB"
DEFAULT_RAY_NUM_CPUS = 2
DEFAULT_OBJECT_STORE_MB = 256
#: Times a block task killed with its worker (a node lost, OOM, SIGKILL) is resubmitted before the job fails;
#: bounded (Ray's own default is also 3, stated here so that it is a decision, not an accident of a version).
TASK_MAX_RETRIES = 3
LOOPBACK = "127.0.0.1"

log = logging.getLogger(__name__)


def executor(override: str | None = "") -> str:
    """The executor for this run: ``override`` when non-empty, else ``$CLIP_ASSETS_EXECUTOR``, else "local"."""
    given = (override or "").strip()
    source = "the run config's executor" if given else f"${EXECUTOR_ENV}"
    value = given or os.environ.get(EXECUTOR_ENV, "").strip() or "local"
    if value.lower() not in EXECUTORS:
        raise ValueError(f"unknown executor {value!r} (from {source}); use one of {', '.join(EXECUTORS)}")
    return value.lower()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {raw!r}") from None


def init_ray(num_cpus: int | None = None, object_store_mb: int | None = None,
             log_fn: Callable[[str], Any] | None = None) -> str:
    """Connect to (or start) the Ray cluster; a one-line description of it (also logged).

    ``RAY_ADDRESS`` set: connect there (``num_cpus`` / ``object_store_mb`` are the cluster's business). Unset: a
    local cluster on 127.0.0.1 with ``num_cpus`` CPUs (else ``$CLIP_ASSETS_RAY_NUM_CPUS``, else 2) and
    ``object_store_mb`` MB of object store (else ``$CLIP_ASSETS_RAY_OBJECT_STORE_MB``, else 256), dashboard off.
    Already initialised in this process: reused as it is.
    """
    import ray

    say = log_fn or log.info
    if ray.is_initialized():
        desc = f"ray: reusing this process's cluster ({_resources()})"
        say(desc)
        return desc
    address = os.environ.get(RAY_ADDRESS_ENV, "").strip() or None
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=True)
        desc = f"ray: connected to the cluster at {address} ({_resources()})"
    else:
        cpus = int(num_cpus or _env_int(RAY_NUM_CPUS_ENV, DEFAULT_RAY_NUM_CPUS))
        store_mb = int(object_store_mb or _env_int(RAY_OBJECT_STORE_MB_ENV, DEFAULT_OBJECT_STORE_MB))
        # workers import the clip_assets tree this driver runs (not another copy installed in site-packages)
        pkg_root = str(Path(__file__).resolve().parents[2])
        pythonpath = os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH", "")) if p)
        with _loopback_node_ip():
            ray.init(
                address="local",
                num_cpus=cpus,
                object_store_memory=store_mb * 2**20,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                ignore_reinit_error=True,
                runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
            )
        desc = f"ray: started a local cluster on {LOOPBACK} ({cpus} CPUs, {store_mb} MB object store, no dashboard)"
    say(desc)
    return desc


@contextlib.contextmanager
def _loopback_node_ip() -> Iterator[None]:
    """Make Ray's node IP the loopback address while a local cluster starts.

    Ray turns ``_node_ip_address="127.0.0.1"`` into the machine's routable address (and its servers bind to the
    node IP), except where it treats the machine as a single-node platform (its ENABLE_RAY_CLUSTER constant,
    false on macOS/Windows). Cleared for the start only: once started, the node's IP is the node's own.
    """
    try:
        from ray._private import ray_constants  # private; checked against the pinned ray 2.60
    except ImportError:  # pragma: no cover - another ray layout: its default binding
        yield
        return
    before = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if before is None:  # pragma: no cover
        yield
        return
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _resources() -> str:
    import ray

    r = ray.cluster_resources()
    return f"{r.get('CPU', 0):g} CPUs, {r.get('GPU', 0):g} GPUs"


def cluster_gpus() -> float:
    """GPUs the connected Ray cluster has (0 when none)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def map_blocks(fn: Callable[[Any, Any], Any], blocks: Sequence[Any], shared: Any, *, num_cpus: float = 1.0,
               max_retries: int = TASK_MAX_RETRIES, resources: dict[str, float] | None = None) -> list[Any]:
    """``[fn(block, shared) for block in blocks]`` as Ray tasks on the connected cluster (:func:`init_ray` first).

    ``shared`` (e.g. a reference set) is put in the object store ONCE and every task receives the same object
    (zero-copy numpy on the node that holds it; fetched once per node otherwise), instead of being pickled into
    each task. Tasks are spread over the nodes (``SPREAD``: independent CPU work, no locality to keep), each
    reserves ``num_cpus`` CPUs (and ``resources``), and one lost with its worker is retried ``max_retries``
    times; an exception raised by ``fn`` is not retried (it would raise again) and is re-raised here. The
    result list is in ``blocks`` order whatever order the tasks finish in.
    """
    import ray

    if num_cpus <= 0 or max_retries < 0:
        raise ValueError(f"num_cpus must be > 0 and max_retries >= 0, got {num_cpus!r}, {max_retries!r}")
    if not blocks:
        return []
    task = ray.remote(fn).options(num_cpus=float(num_cpus), max_retries=int(max_retries), retry_exceptions=False,
                                  scheduling_strategy="SPREAD", resources=dict(resources or {}))
    ref = ray.put(shared)
    return ray.get([task.remote(b, ref) for b in blocks])
