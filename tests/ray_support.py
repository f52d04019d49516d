"""The local Ray cluster a Ray test module starts for itself (one module at a time: Ray's ports are fixed).

:func:`own_cluster` skips the module, with the reason, when the optional extra ``ray`` is not installed (fails it
instead under ``CLIP_ASSETS_REQUIRE_RAY=1``, which ``make test-ray`` sets: a broken install must not pass as all
skipped, see :func:`import_or_skip`); sets
``RAY_ADDRESS`` aside so that the cluster is a local one; starts it (``executors.init_ray`` with 2 CPUs, or the
module's own ``start``); turns Ray Data's progress bars off; and shuts the cluster down and restores the variable
afterwards. :func:`killing` makes a task body kill its own worker, for the fault tests, and :func:`kill_blocks`
puts it under a stage's block tasks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

NO_RAY = "the optional extra 'ray' (pip install clip-assets[ray]) is not installed"
REQUIRE_ENV = "CLIP_ASSETS_REQUIRE_RAY"


def import_or_skip(name: str, reason: str = NO_RAY) -> Any:
    """``pytest.importorskip(name)``, except under ``CLIP_ASSETS_REQUIRE_RAY=1`` (``make test-ray``), where a module
    that cannot be imported fails the test with the import's own error instead of skipping it."""
    if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        import importlib

        try:
            return importlib.import_module(name)
        except ImportError as e:
            pytest.fail(f"{REQUIRE_ENV} is set but {name!r} cannot be imported ({reason}): {e!r}", pytrace=False)
    return pytest.importorskip(name, reason=reason)


@contextlib.contextmanager
def own_cluster(start: Callable[[], Any] | None = None) -> Iterator[Any]:
    """Yield what ``start()`` returned (default: ``init_ray(num_cpus=2)``'s description)."""
    ray = import_or_skip("ray")
    import_or_skip("ray.data")
    from clip_assets.models.executors import RAY_ADDRESS_ENV, init_ray

    address = os.environ.pop(RAY_ADDRESS_ENV, None)
    try:
        started = start() if start is not None else init_ray(num_cpus=2)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield started
    finally:
        ray.shutdown()
        if address is not None:
            os.environ[RAY_ADDRESS_ENV] = address


def killing(fn: Callable[[Any, Any], Any], marker_dir: Any, times: int | None = 1) -> Callable[[Any, Any], Any]:
    """``fn`` as a Ray task body whose first ``times`` calls, counted across every worker of the cluster (one
    marker file per death, created atomically), SIGKILL their own worker process mid-task, the way an OOM kill
    or a lost node ends a worker; ``times=None``: every call dies. Each attempt appends its pid to
    ``marker_dir/attempts``.

    The wrapper travels to the workers by value (this module is not on their path); ``fn`` by reference.
    """
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker_dir = str(marker_dir)

    def body(block: Any, shared: Any) -> Any:
        with open(os.path.join(marker_dir, "attempts"), "a") as f:
            f.write(f"{os.getpid()}\n")
        dies = times is None
        for i in range(times or 0):
            try:
                os.close(os.open(os.path.join(marker_dir, f"death-{i}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            dies = True
            break
        if dies:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(block, shared)

    return body


def attempts(marker_dir: Any) -> int:
    """How many task attempts a :func:`killing` body has started."""
    p = Path(marker_dir) / "attempts"
    return len(p.read_text().split()) if p.exists() else 0


def kill_blocks(monkeypatch: Any, module: Any, marker_dir: Any, times: int | None) -> None:
    """Make ``module``'s block tasks (its ``map_blocks``, the real one underneath) run :func:`killing` bodies."""
    from clip_assets.models.executors import map_blocks

    monkeypatch.setattr(module, "map_blocks", lambda fn, blocks, shared, **kw: map_blocks(
        killing(fn, marker_dir, times), blocks, shared, **kw))
