"""Class 5, concurrent readers: during repeated re-ingests of one drop (alternating two contents), readers count
raw_pairs + rejected_pairs through the catalog views and through read_partitions / drop_counts, and see only the
totals of one content or the other: never a mix, never nothing, never an error. A connection held across a
re-ingest keeps reading its version; versions no pointer names are garbage-collected after the grace period.
"""

from __future__ import annotations

import threading
from pathlib import Path
import time

import pytest

from clip_assets.io import catalog
from clip_assets.io.commit import VERSION_PREFIX, clean_stale, resolve
from clip_assets.io.completeness import drop_counts
from clip_assets.io.ingest import ingest_drop
from clip_assets.io.tables import read_partitions
from conftest import build_drop, jpeg_bytes

MIN_WRITES, MAX_WRITES, MIN_READS = 12, 400, 40
DROPS_SQL = "SELECT kept, rejected FROM drops WHERE drop = 'd'"
TABLES_SQL = "SELECT (SELECT count(*) FROM raw_pairs), (SELECT count(*) FROM rejected_pairs)"


def _contents(tmp_path):
    """Two landing folders named ``d`` with different contents: (folder, (kept, rejected)) each."""
    a = build_drop(tmp_path / "a" / "d", [[{"key": f"{i:09d}", "image": jpeg_bytes(i), "caption": f"a {i}"}
                                            for i in range(6)] + [{"key": "000000090", "image": None, "caption": "x"}]])
    b = build_drop(tmp_path / "b" / "d", [[{"key": f"{i:09d}", "image": jpeg_bytes(50 + i), "caption": f"b {i}"}
                                            for i in range(3)],
                                           [{"key": f"1{i:08d}", "image": None, "caption": "y"} for i in range(4)]])
    return [(a, (6, 1)), (b, (3, 4))]


def _reader(home, kind: str, stop: threading.Event, seen: list, errors: list) -> None:
    while not stop.is_set():
        try:
            if kind == "views":
                seen.append(tuple(catalog.query(DROPS_SQL, home=home).to_pylist()[0].values()))
                seen.append(tuple(catalog.query(TABLES_SQL, home=home).to_pylist()[0].values()))
            else:
                raw, rej = read_partitions(["raw_pairs", "rejected_pairs"], "d", home, columns=["uid"])
                seen.append((raw.num_rows, rej.num_rows))
                kept, _, rejected = drop_counts("d", home)
                seen.append((kept, rejected))
        except Exception as e:  # noqa: BLE001 - every error a reader meets is a failure of the test
            errors.append(f"{kind}: {type(e).__name__}: {e}")


@pytest.mark.slow
def test_readers_during_reingests_see_one_content_or_the_other(home, tmp_path):
    contents = _contents(tmp_path)
    valid = {totals for _, totals in contents}
    ingest_drop(contents[0][0], home=home)
    catalog.refresh_views(home)
    held = catalog.connect(home)
    con = held.__enter__()
    assert con.execute(DROPS_SQL).fetchone() == contents[0][1]

    stop, seen, errors = threading.Event(), {"views": [], "tables": []}, []
    readers = [threading.Thread(target=_reader, args=(home, k, stop, seen[k], errors)) for k in seen]
    for t in readers:
        t.start()
    t0, writes = time.monotonic(), 0
    # re-ingest B then A, until every reader has read MIN_READS times during the writes (bounded)
    while writes < MIN_WRITES or min(len(v) for v in seen.values()) < MIN_READS:
        assert writes < MAX_WRITES and time.monotonic() - t0 < 90, (writes, {k: len(v) for k, v in seen.items()})
        ingest_drop(contents[1][0], home=home)
        ingest_drop(contents[0][0], home=home)
        writes += 2
    stop.set()
    for t in readers:
        t.join(60)
    assert errors == []
    for kind, totals in seen.items():
        assert set(totals) <= valid, (kind, sorted(set(totals) - valid))

    # the held connection still reads the version it was built on, although every commit since replaced it
    assert con.execute(DROPS_SQL).fetchone() == contents[0][1]
    held.__exit__(None, None, None)
    assert catalog.query(DROPS_SQL, home=home).to_pylist()[0] == {"kept": 6, "rejected": 1}  # A written last

    raw_root = home / "warehouse" / "raw_pairs"
    assert len([p for p in raw_root.iterdir() if p.name.startswith(VERSION_PREFIX)]) == writes + 1
    clean_stale(home / "warehouse", version_grace_s=0)  # past the grace: only the current versions stay
    for asset in ("raw_pairs", "rejected_pairs"):
        root = home / "warehouse" / asset
        assert [p for p in root.iterdir() if p.name.startswith(".")] == [resolve(root / "drop=d")]
    assert drop_counts("d", home) == (6, 6, 1)


def test_a_listed_partition_reads_its_listed_version_across_a_reingest(home, tmp_path):
    """The report's and the catalog's file lists name the version the pointer named when they were listed (not
    ``drop=d/part-*.parquet`` through the pointer), so a re-ingest committing before the read cannot mix contents
    into it or make a listed file vanish."""
    import pyarrow.parquet as pq

    from clip_assets.report import select

    (a, (kept_a, _)), (b, (kept_b, _)) = _contents(tmp_path)
    ingest_drop(a, home=home)
    before = resolve(home / "warehouse" / "raw_pairs" / "drop=d")
    listed = {"report": select.files("raw_pairs", home), "catalog": catalog.partition_files("raw_pairs", "d", home)}
    ingest_drop(b, home=home)  # the pointer moves to content b's version
    assert resolve(home / "warehouse" / "raw_pairs" / "drop=d") != before
    for who, files in listed.items():
        assert files and {str(Path(f).parent) for f in files} == {str(before)}, who
        assert sum(pq.read_metadata(f).num_rows for f in files) == kept_a, who
    assert sum(pq.read_metadata(f).num_rows for f in select.files("raw_pairs", home)) == kept_b
