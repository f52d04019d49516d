"""Where clip_assets keeps its data.

``<home>`` is the data home: the environment variable ``CLIP_ASSETS_HOME`` when set, else ``data/`` under the
project checkout (the folder holding pyproject.toml), else ``./data``. Everything the project writes lives below it:

* ``<home>/landing/<drop>/``           incoming drops in img2dataset's webdataset layout
* ``<home>/warehouse/<asset>/drop=<key>/part-*.parquet``   per-sample data (hive layout, system of record)
* ``<home>/clip_assets.duckdb``        the DuckDB catalog (views over the warehouse + small tables)
* ``<home>/models/``                   checkpoints the project trains
* ``<home>/exports/``                  curated subset exports
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "CLIP_ASSETS_HOME"
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


def landing_dir(home: Path | None = None) -> Path:
    return (home or data_home()) / "landing"


def warehouse_dir(home: Path | None = None) -> Path:
    return (home or data_home()) / "warehouse"


def catalog_path(home: Path | None = None) -> Path:
    return (home or data_home()) / CATALOG_FILE


def models_dir(home: Path | None = None) -> Path:
    return (home or data_home()) / "models"


def exports_dir(home: Path | None = None) -> Path:
    return (home or data_home()) / "exports"
