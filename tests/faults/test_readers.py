"""Class 6: readers never block the catalog writer, and a reader sees the old catalog or the new one, never an error.

A reader process holds a read-only connection open (as the README once suggested) and another reconnects for
every query, both querying in a loop while the catalog is rebuilt again and again and a new drop appears.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets.config import catalog_path
from clip_assets.io import catalog

READER = r"""
import sys, time, duckdb
path, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
con = duckdb.connect(path, read_only=True) if mode == "held" else None
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    c = con or duckdb.connect(path, read_only=True)
    print(c.execute("SELECT count(*) FROM raw_pairs").fetchone()[0], flush=True)
    if con is None:
        c.close()
    time.sleep(0.01)
"""


def _drop(home, drop: str, n: int) -> None:
    d = home / "warehouse" / "raw_pairs" / f"drop={drop}"
    d.mkdir(parents=True)
    pq.write_table(pa.table({"uid": [f"{drop}{i}" for i in range(n)], "drop": [drop] * n}), d / "part-00000.parquet")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["held", "reconnecting"])
def test_readers_never_block_the_writer_nor_see_a_torn_catalog(home, mode):
    _drop(home, "a", 3)
    catalog.refresh_views(home)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(catalog_path(home)), mode, "8"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "ready"
    worst = 0.0
    for i in range(20):
        if i == 10:
            _drop(home, "b", 2)
        t0 = time.perf_counter()
        catalog.refresh_views(home)
        worst = max(worst, time.perf_counter() - t0)
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    counts = {int(line) for line in out.split()}
    assert counts and counts <= {3, 5}, counts  # old or new state, never anything else
    assert worst < 5.0, f"a refresh took {worst:.1f}s with a reader open"
    assert catalog.query("SELECT count(*) AS n FROM raw_pairs", home=home)["n"].to_pylist() == [5]
