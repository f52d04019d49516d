"""Where clip_assets keeps its data.

``<home>`` is the data home: the environment variable ``CLIP_ASSETS_HOME`` when set, else ``data/`` under the
project checkout (the folder holding pyproject.toml), else ``./data``. Everything the project writes lives below it:

* ``<home>/landing/<drop>/``           incoming drops in img2dataset's webdataset layout (or ``$CLIP_ASSETS_LANDING``)
* ``<home>/warehouse/<asset>/drop=<key>/part-*.parquet``   per-sample data (hive layout, system of record)
* ``<home>/clip_assets.duckdb``        the DuckDB catalog (views over the warehouse + small tables)
* ``<home>/models/``                   checkpoints the project trains
* ``<home>/exports/``                  curated subset exports

``CLIP_ASSETS_LANDING`` (optional) moves the landing area elsewhere, whatever the home: a local path, or an
object-store URL such as ``s3://bucket/prefix`` (endpoint and credentials from the standard AWS variables, see
:mod:`clip_assets.io.fs`). A URL is kept as a ``str`` (a ``pathlib.Path`` would fold its ``//``); the warehouse,
catalog, models and exports stay under the local home.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "CLIP_ASSETS_HOME"
ENV_LANDING = "CLIP_ASSETS_LANDING"
CATALOG_FILE = "clip_assets.duckdb"


def project_root() -> Path | None:
    """The checkout that holds this package (an editable install), or None for a wheel install."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def data_home(override: str | os.PathLike | None = None) -> Path:
    """Resolve the data home: explicit override > $CLIP_ASSETS_HOME > <project>/data > ./data."""
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().resolve()
    root = project_root()
    return (root / "data") if root is not None else (Path.cwd() / "data").resolve()


def landing_dir(home: Path | None = None) -> Path | str:
    """The landing area: ``$CLIP_ASSETS_LANDING`` when set (a local path, or a store URL returned as ``str``
    without a trailing ``/``), else ``<home>/landing``. ValueError naming the value when it is an unsupported or
    malformed URL."""
    env = os.environ.get(ENV_LANDING, "").strip()
    if env:
        from clip_assets.io import fs  # pyarrow; config itself stays import-light

        try:
            fs.resolve(env)
        except ValueError as e:
            raise ValueError(f"{ENV_LANDING}={env!r} is not a landing location: {e}") from e
        if fs.is_remote(env):
            return env.rstrip("/")
        return Path(fs.resolve(env)[1]).expanduser() if env.startswith("file://") else Path(env).expanduser().resolve()
    return (home or data_home()) / "landing"


def warehouse_dir(home: Path | None = None) -> Path:
    return (home or data_home()) / "warehouse"


def catalog_path(home: Path | None = None) -> Path:
    return (home or data_home()) / CATALOG_FILE


def models_dir(home: Path | None = None) -> Path:
    return (home or data_home()) / "models"


def exports_dir(home: Path | None = None) -> Path:
    return (home or data_home()) / "exports"
