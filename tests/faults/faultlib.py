"""Helpers of the fault-injection tests (imported by name: a second conftest.py would shadow tests/conftest.py): bounded waits and a throwaway Dagster instance with pools of one slot."""

from __future__ import annotations

import time
from pathlib import Path

import pytest


def wait_for(predicate, timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while not (ok := bool(predicate())) and time.monotonic() < deadline:
        time.sleep(interval_s)
    return ok


@pytest.fixture
def dagster_home(tmp_path) -> Path:
    """A DAGSTER_HOME with SQLite storage and every concurrency pool limited to one slot (as dagster.yaml)."""
    d = tmp_path / "dagster"
    d.mkdir()
    (d / "dagster.yaml").write_text(
        f"storage:\n  sqlite:\n    base_dir: {d / 'storage'}\n"
        "concurrency:\n  pools:\n    default_limit: 1\n"
        "telemetry:\n  enabled: false\n"
    )
    return d
