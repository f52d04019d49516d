"""The DuckDB catalog: glob-safe paths, one file list helper, atomic rebuilds and the sandboxed SQL connection."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets.cli import main as cli_main
from clip_assets.io import catalog
from clip_assets.io.ingest import ingest_drop
from conftest import build_drop, jpeg_bytes


def _rows(home: Path, asset: str, drop: str, n: int, name: str = "part-00000.parquet") -> None:
    d = home / "warehouse" / asset / f"drop={drop}"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"uid": [f"{drop}-{i}" for i in range(n)], "drop": [drop] * n,
                             "reason": ["r"] * n, "shard": ["00000"] * n}), d / name)


def _subset(home: Path, subset: str, n: int) -> None:
    d = home / "warehouse" / "curated_subsets" / f"subset={subset}"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"uid": [str(i) for i in range(n)], "drop": ["a"] * n, "keep": [True] * n,
                             "reason": [None] * n}), d / "part-00000.parquet")


WEIRD = "we[ir]d {x}*?"


@pytest.fixture
def weird_home(tmp_path, monkeypatch) -> Path:
    """A home below a folder with every DuckDB glob character and a hive-looking ancestor, next to a sibling
    that the unescaped path would match as a glob (its rows must never show up)."""
    home = tmp_path / "env=prod" / WEIRD / "home"
    decoy = tmp_path / "env=prod" / "we[ir]d {x}ab" / "home"
    _rows(decoy, "raw_pairs", "a", 7)
    monkeypatch.setenv("CLIP_ASSETS_HOME", str(home))
    return home


def test_views_read_a_home_with_glob_characters_and_only_its_own_files(weird_home):
    _rows(weird_home, "raw_pairs", "a", 3)
    _rows(weird_home, "raw_pairs", "b", 2)
    _rows(weird_home, "rejected_pairs", "a", 1)
    _subset(weird_home, "kl_text", 4)
    stage = weird_home / "warehouse" / "raw_pairs" / ".staging-drop=c-123"
    stage.mkdir()
    pq.write_table(pa.table({"uid": ["x"], "drop": ["c"]}), stage / "part-00000.parquet")
    views = catalog.refresh_views(weird_home)
    assert {"raw_pairs", "rejected_pairs", "drops", "curated_subsets"} <= set(views)
    drops = catalog.query("SELECT drop, seen, kept, rejected FROM drops ORDER BY drop", home=weird_home).to_pylist()
    assert drops == [{"drop": "a", "seen": 4, "kept": 3, "rejected": 1}, {"drop": "b", "seen": 2, "kept": 2,
                                                                           "rejected": 0}]
    cols = catalog.query("SELECT * FROM raw_pairs LIMIT 0", home=weird_home).column_names
    assert "env" not in cols  # a k=v folder above the warehouse is not a partition column
    sub = catalog.query("SELECT subset, count(*) AS n FROM curated_subsets GROUP BY 1", home=weird_home).to_pylist()
    assert sub == [{"subset": "kl_text", "n": 4}]


def test_partition_files_lists_literal_paths_that_duckdb_reads_as_files(weird_home):
    _rows(weird_home, "raw_pairs", "a", 3)
    _rows(weird_home, "raw_pairs", "a", 2, name="part-00001.parquet")
    (weird_home / "warehouse" / "raw_pairs" / "drop=a" / ".part-00002.parquet.abc.tmp").write_bytes(b"junk")
    files = catalog.partition_files("raw_pairs", "a", weird_home)
    assert [Path(f).name for f in files] == ["part-00000.parquet", "part-00001.parquet"]
    assert catalog.partition_files("raw_pairs", "missing", weird_home) == []
    with catalog.scratch() as con:
        assert con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0] == 5
    assert len(catalog.asset_files("raw_pairs", weird_home)) == 2


def test_ingest_then_sql_under_a_home_with_glob_characters(weird_home):
    build_drop(weird_home / "landing" / "d1", [[{"key": f"{i:09d}", "image": jpeg_bytes(i), "caption": f"c{i}"}
                                                  for i in range(4)]])
    res = ingest_drop(weird_home / "landing" / "d1", home=weird_home)
    assert res.kept == 4
    catalog.refresh_views(weird_home)
    assert catalog.query("SELECT kept FROM drops", home=weird_home, restricted=True)["kept"].to_pylist() == [4]


def test_a_home_duckdb_cannot_read_is_refused_naming_it(tmp_path):
    home = tmp_path / "back\\slash" / "home"
    _rows(home, "raw_pairs", "a", 3)
    with pytest.raises(ValueError, match="backslash"):
        catalog.refresh_views(home)


def test_sql_connection_reads_the_warehouse_and_nothing_else(home, tmp_path, capsys):
    _rows(home, "raw_pairs", "a", 3)
    catalog.refresh_views(home)
    assert catalog.query("SELECT count(*) AS n FROM raw_pairs", home=home, restricted=True)["n"].to_pylist() == [3]
    target = tmp_path / "x.csv"
    for sql in (f"COPY (SELECT 1) TO '{target}'", f"COPY (SELECT 1) TO '{home}/warehouse/raw_pairs/drop=a/x.parquet'",
                "ATTACH '/tmp/other.duckdb'", "SET enable_external_access = true", "INSTALL httpfs"):
        with pytest.raises(PermissionError):
            catalog.query(sql, home=home, restricted=True)
    for sql in ("SELECT * FROM read_csv('/etc/passwd')", f"SELECT * FROM read_text('{home}/warehouse/../../x')",
                "SELECT * FROM glob('/*')"):
        with pytest.raises(duckdb.PermissionException):
            catalog.query(sql, home=home, restricted=True)
    assert not target.exists()
    assert cli_main(["sql", f"COPY (SELECT 1) TO '{target}'"]) == 2
    assert cli_main(["sql", "SELECT * FROM read_csv('/etc/passwd')"]) == 2
    assert "Permission" in capsys.readouterr().err
    assert not target.exists()
    assert cli_main(["sql", "SELECT count(*) AS n FROM raw_pairs", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "3"]


def test_only_refresh_views_writes_the_catalog(home):
    with pytest.raises(ValueError, match="refresh_views"):
        with catalog.connect(home, read_only=False):
            pass


def test_a_partition_without_a_drop_column_gets_it_from_its_own_folder(weird_home):
    d = weird_home / "warehouse" / "importance_weights" / "drop=a"
    d.mkdir(parents=True)
    pq.write_table(pa.table({"uid": ["u1", "u2"], "prompt": ["p", "p"], "weight": [1.0, 2.0]}), d / "part-00000.parquet")
    catalog.refresh_views(weird_home)
    rows = catalog.query("SELECT drop, count(*) AS n FROM importance_weights GROUP BY 1", home=weird_home).to_pylist()
    assert rows == [{"drop": "a", "n": 2}]


def test_memory_connection_sees_nan_in_pyarrow_parquet(tmp_path):
    """pyarrow's min/max statistics leave NaN out; DuckDB trusts them, and ``WHERE isnan(x)`` then finds
    nothing on a plain connection (asserted, so this test notices when DuckDB changes). The one in-memory
    connection helper must see the NaN row."""
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"x": [math.nan, 1.0, 2.0, 3.0, 4.0]}), path)
    q = "SELECT (SELECT count(*) FROM read_parquet($p) WHERE isnan(x)), (SELECT count(*) FROM read_parquet($p) WHERE x > 3.5)"
    plain = duckdb.connect()
    try:
        assert plain.execute(q, {"p": str(path)}).fetchone() == (0, 2)  # the hazard: the NaN row is not found
    finally:
        plain.close()
    con = catalog.memory_connection()
    try:
        assert con.execute(q, {"p": str(path)}).fetchone() == (1, 2)  # NaN sorts above every number in DuckDB
    finally:
        con.close()
    with catalog.scratch() as con:
        assert con.execute(q, {"p": str(path)}).fetchone() == (1, 2)
