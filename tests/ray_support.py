"""The local Ray cluster a Ray test module starts for itself (one module at a time: Ray's ports are fixed).

:func:`own_cluster` skips the module, with the reason, when the optional extra ``ray`` is not installed; sets
``RAY_ADDRESS`` aside so that the cluster is a local one; starts it (``executors.init_ray`` with 2 CPUs, or the
module's own ``start``); turns Ray Data's progress bars off; and shuts the cluster down and restores the variable
afterwards.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator

import pytest

NO_RAY = "the optional extra 'ray' (pip install clip-assets[ray]) is not installed"


@contextlib.contextmanager
def own_cluster(start: Callable[[], Any] | None = None) -> Iterator[Any]:
    """Yield what ``start()`` returned (default: ``init_ray(num_cpus=2)``'s description)."""
    ray = pytest.importorskip("ray", reason=NO_RAY)
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
