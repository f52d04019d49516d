"""The DuckDB catalog: ``<home>/clip_assets.duckdb`` holding views over the Parquet warehouse.

SQL lives in ``sql/`` at the project top level and is loaded by name (:func:`load_sql`). Queries bind their
values with ``?``. DuckDB cannot bind parameters inside DDL (``CREATE VIEW``), so view files use one named token,
``:warehouse``, which :func:`render_view` replaces with the warehouse path as an escaped SQL string literal; that is
the only place a value is spliced into SQL text.

Only one process may write the file at a time (DuckDB's lock). Writers go through :func:`connect` with
``read_only=False``, which waits and retries while another process holds the lock; the Dagster assets that write
also run in the ``duckdb`` concurrency pool (limit 1).
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import duckdb

from clip_assets.config import catalog_path, data_home, project_root, warehouse_dir

_TOKEN = ":warehouse"


def sql_dir() -> Path:
    root = project_root()
    if root is not None and (root / "sql").is_dir():
        return root / "sql"
    raise FileNotFoundError("cannot find the project's sql/ folder next to pyproject.toml")


def load_sql(name: str) -> str:
    """Text of ``sql/<name>.sql`` (``name`` may contain one folder, e.g. ``queries/drop_counts``)."""
    if not re.fullmatch(r"[A-Za-z0-9_]+(/[A-Za-z0-9_]+)?", name):
        raise ValueError(f"bad SQL file name {name!r}")
    path = sql_dir() / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no SQL file {path}")
    return path.read_text()


def sql_string_literal(value: str) -> str:
    """An SQL string literal for ``value`` (single quotes doubled; NUL refused)."""
    if "\0" in value:
        raise ValueError("NUL character in SQL literal")
    return "'" + value.replace("'", "''") + "'"


def render_view(text: str, warehouse: Path) -> str:
    return text.replace(_TOKEN, sql_string_literal(warehouse.as_posix()))


def _required_assets(text: str) -> list[str]:
    m = re.search(r"^--\s*requires:\s*(.+)$", text, flags=re.M)
    return m.group(1).split() if m else []


def _has_files(warehouse: Path, asset: str) -> bool:
    return any((warehouse / asset).glob("drop=*/*.parquet")) or any((warehouse / asset).glob("*.parquet"))


@contextmanager
def connect(home: Path | None = None, read_only: bool = False, wait_s: float = 120.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the catalog, waiting up to ``wait_s`` seconds while another process holds DuckDB's lock."""
    home = home or data_home()
    path = catalog_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    if read_only and not path.exists():
        refresh_views(home)
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as e:
            if "lock" not in str(e).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        yield con
    finally:
        con.close()


def refresh_views(home: Path | None = None) -> list[str]:
    """(Re)create every view in sql/views whose warehouse assets exist. Returns the views created."""
    home = home or data_home()
    wh = warehouse_dir(home)
    created = []
    files = sorted((sql_dir() / "views").glob("*.sql"))
    with connect(home, read_only=False) as con:
        for f in files:
            text = f.read_text()
            if all(_has_files(wh, a) for a in _required_assets(text)):
                con.execute(render_view(text, wh))
                created.append(f.stem.split("_", 1)[1])
    return created


def query(sql: str, params: Sequence | None = None, home: Path | None = None):
    """Run one query against the catalog (read-only) and return a DuckDB relation materialised as Arrow."""
    with connect(home, read_only=True) as con:
        return con.sql(sql, params=list(params or [])).to_arrow_table()
