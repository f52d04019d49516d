"""Where clip_assets keeps its data.

``<home>`` is the data home: the environment variable ``CLIP_ASSETS_HOME`` when set, else ``data/`` under the
project checkout (the folder holding pyproject.toml), else ``./data``. Everything the project writes lives below it:

* ``<home>/landing/<drop>/``           incoming drops in img2dataset's webdataset layout (or ``$CLIP_ASSETS_LANDING``)
* ``<home>/warehouse/<asset>/drop=<key>/part-*.parquet``   per-sample data (hive layout, system of record)
* ``<home>/clip_assets.duckdb``        the DuckDB catalog (views over the warehouse + small tables)
* ``<home>/models/``                   checkpoints the project trains
* ``<home>/exports/``                  curated subset exports

The home may be an object-store URL, ``CLIP_ASSETS_HOME=s3://bucket/prefix`` (endpoint and credentials from the
standard AWS variables, see :mod:`clip_assets.io.fs`): :func:`data_home` then returns a
:class:`~clip_assets.io.fs.StorePath` (pathlib's interface over the store), and the landing area, warehouse,
models, reports and exports all live on the store, committed without rename (:mod:`clip_assets.io.commit`). Two
things stay on local disk, both caches re-created from the store: the DuckDB catalog file (it holds only views
over the warehouse's files and the pointers they were built on; :func:`catalog_path`) and downloaded model
checkpoints (immutable versions; :func:`cache_dir`). ``CLIP_ASSETS_CACHE`` moves that local folder (default
``$XDG_CACHE_HOME/clip_assets`` or ``~/.cache/clip_assets``; one sub-folder per store home).

``CLIP_ASSETS_LANDING`` (optional) moves the landing area elsewhere, whatever the home: a local path, or an
object-store URL. A landing URL is kept as a ``str`` (a ``pathlib.Path`` would fold its ``//``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clip_assets.io.fs import StorePath

ENV_HOME = "CLIP_ASSETS_HOME"
ENV_LANDING = "CLIP_ASSETS_LANDING"
ENV_CACHE = "CLIP_ASSETS_CACHE"
CATALOG_FILE = "clip_assets.duckdb"


def project_root() -> Path | None:
    """The checkout that holds this package (an editable install), or None for a wheel install."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def _home_of(value: "str | os.PathLike", what: str) -> "Path | StorePath":
    from clip_assets.io import fs  # pyarrow; config itself stays import-light

    if isinstance(value, fs.StorePath):
        return value
    text = os.fspath(value).strip()
    if "://" in text:
        try:
            loc = fs.location(text)
        except ValueError as e:
            raise ValueError(f"{what}={text!r} is not a data home: {e}") from e
        if isinstance(loc, fs.StorePath):
            return loc
        return loc.resolve()
    return Path(text).expanduser().resolve()


def data_home(override: "str | os.PathLike | StorePath | None" = None) -> "Path | StorePath":
    """Resolve the data home: explicit override > $CLIP_ASSETS_HOME > <project>/data > ./data. A store URL gives a
    :class:`~clip_assets.io.fs.StorePath` (ValueError naming a malformed one)."""
    if override:
        return _home_of(override, "home")
    env = os.environ.get(ENV_HOME, "").strip()
    if env:
        return _home_of(env, ENV_HOME)
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
    home = home or data_home()
    return str(home / "landing") if _is_store(home) else home / "landing"


def _is_store(home) -> bool:
    return type(home).__name__ == "StorePath"


def warehouse_dir(home: "Path | StorePath | None" = None) -> "Path | StorePath":
    return (home or data_home()) / "warehouse"


def cache_dir(home: "Path | StorePath | None" = None) -> Path:
    """Local folder for what a store home keeps on local disk (the catalog file, downloaded checkpoints): one
    sub-folder per home URL below ``$CLIP_ASSETS_CACHE`` (default ``$XDG_CACHE_HOME/clip_assets`` or
    ``~/.cache/clip_assets``). A local home is its own cache."""
    home = home or data_home()
    if not _is_store(home):
        return home
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
    tail = str(home).split("://", 1)[1].replace("/", "_")[:60]
    return cache_root() / f"{tail}-{digest}"


def cache_root() -> Path:
    """``$CLIP_ASSETS_CACHE``, else ``$XDG_CACHE_HOME/clip_assets``, else ``~/.cache/clip_assets``."""
    root = os.environ.get(ENV_CACHE, "").strip() or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache"),
        "clip_assets")
    return Path(root).expanduser().resolve()


def catalog_path(home: "Path | StorePath | None" = None) -> Path:
    """The DuckDB catalog file: ``<home>/clip_assets.duckdb``, or below :func:`cache_dir` for a store home (a
    local file: DuckDB cannot write a database to a store; it holds only views, rebuilt from the store)."""
    return cache_dir(home) / CATALOG_FILE


def models_dir(home: "Path | StorePath | None" = None) -> "Path | StorePath":
    return (home or data_home()) / "models"


def exports_dir(home: "Path | StorePath | None" = None) -> "Path | StorePath":
    return (home or data_home()) / "exports"
