"""The filesystem layer: one way to address, read and write data on local disk or on an object store.

A location is a local path (``str`` or ``os.PathLike``), a ``file://`` URL, or an object-store URL:

* ``s3://bucket/prefix`` (AWS S3 or an S3-compatible store such as MinIO or Ceph). The endpoint comes from the
  standard ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` variable (in that order, as the AWS SDKs read them;
  ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`` turns both off); the region from ``AWS_REGION`` /
  ``AWS_DEFAULT_REGION`` when set; credentials and everything else from pyarrow's default AWS chain
  (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, the shared
  config and credentials files, instance roles). The endpoint is passed explicitly because pyarrow's
  ``S3FileSystem()`` constructor does not read ``AWS_ENDPOINT_URL`` by itself (only ``FileSystem.from_uri``
  does).
* ``gs://bucket/path`` (or ``gcs://``) and ``abfs://`` / ``abfss://container@account.dfs.core.windows.net/path``
  through pyarrow's ``FileSystem.from_uri``; ``az://container/path`` with the account from
  ``AZURE_STORAGE_ACCOUNT_NAME``. These use each library's default credentials.

Why pyarrow.fs, with fsspec only as DuckDB's adapter: pyarrow is already a dependency (it writes every Parquet
file of the warehouse), so its native S3, GCS, Azure and local filesystems add nothing to install and pin no
aiobotocore / botocore versions against the rest of the environment; its input files do ranged reads natively
(``open_input_file(path).read_at(nbytes, offset)`` is one HTTP GET with a ``Range`` header), which is what a
pointer read needs: the bytes of one tar member, never the whole tar. DuckDB's Python client can only be given an
fsspec filesystem (``DuckDBPyConnection.register_filesystem``), so :func:`duckdb_filesystem` wraps the same
pyarrow filesystem in fsspec's ``ArrowFSWrapper``; nothing else here goes through fsspec.

Filesystems are cached per (scheme, bucket, endpoint, region), so repeated calls reuse one connection pool;
:func:`clear_cache` drops them (after the endpoint or credentials variables change). Every error names the value
it is about: ``ValueError`` for an unsupported scheme or a malformed URL, ``OSError`` (``FileNotFoundError`` for a
missing file or object) for failed I/O.
"""

from __future__ import annotations

import operator
import os
import tempfile
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow.fs as pafs
from fsspec.implementations.arrow import ArrowFSWrapper

REMOTE_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "az")

_cache: dict[tuple, pafs.FileSystem] = {}
_cache_lock = threading.Lock()
_local = pafs.LocalFileSystem()


def clear_cache() -> None:
    """Forget the cached filesystems (the next :func:`resolve` builds them from the environment again)."""
    with _cache_lock:
        _cache.clear()


def _scheme(url_or_path: str | os.PathLike) -> str | None:
    """The URL scheme (lower case) of a location, ``None`` for a plain local path; ValueError when unsupported."""
    if not isinstance(url_or_path, (str, os.PathLike)):
        raise TypeError(f"a location is a str, os.PathLike or URL, got {type(url_or_path).__name__}: {url_or_path!r}")
    s = os.fspath(url_or_path)
    if isinstance(s, bytes):
        raise TypeError(f"a location is a str, os.PathLike or URL, got bytes: {s!r}")
    if isinstance(url_or_path, os.PathLike) or "://" not in s:
        return None
    scheme = s.split("://", 1)[0].lower()
    if scheme == "file" or scheme in REMOTE_SCHEMES:
        return scheme
    known = ", ".join(f"{r}://" for r in REMOTE_SCHEMES)
    raise ValueError(f"unsupported storage scheme {scheme!r} in {s!r}: use a local path, file:// or one of {known}")


def is_remote(url_or_path: str | os.PathLike) -> bool:
    """True for an object-store URL (``s3://``, ``gs://``, ...), False for a local path or ``file://`` URL."""
    return _scheme(url_or_path) not in (None, "file")


def _check_key(url: str, key: str) -> None:
    """An object key (the part after the bucket) must be addressable: no empty, ``.`` or ``..`` component."""
    parts = key.rstrip("/").split("/") if key.strip("/") else []
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"malformed object URL {url!r}: empty, '.' or '..' path component in {key!r}")


def _split_remote(url: str) -> tuple[str, str, str]:
    """(scheme, bucket / container netloc, key without leading or trailing slash) of an object-store URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise ValueError(f"malformed object URL {url!r}: no '?' query or '#' fragment is allowed "
                         "(endpoint and credentials come from the environment)")
    bucket = parts.netloc
    if not bucket:
        raise ValueError(f"malformed object URL {url!r}: no bucket (expected {scheme}://<bucket>/<path>)")
    key = parts.path.lstrip("/")
    if parts.path and not parts.path.startswith("/"):
        raise ValueError(f"malformed object URL {url!r}")
    _check_key(url, key)
    return scheme, bucket, key.rstrip("/")


def _endpoint() -> str | None:
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
        return None
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(var, "").strip()
        if value:
            p = urlsplit(value)
            if p.scheme not in ("http", "https") or not p.netloc or p.path.strip("/") or p.query:
                raise ValueError(f"{var}={value!r} is not an endpoint URL (expected http[s]://host[:port])")
            return value.rstrip("/")
    return None


def _cached(key: tuple, make) -> pafs.FileSystem:
    with _cache_lock:
        fs = _cache.get(key)
        if fs is None:
            fs = _cache[key] = make()
        return fs


def _s3(url: str, bucket: str) -> pafs.FileSystem:
    if any(c in bucket for c in "@:") or bucket.startswith((".", "-")):
        raise ValueError(f"malformed object URL {url!r}: {bucket!r} is not a bucket name "
                         "(no credentials or port in the URL; the endpoint comes from AWS_ENDPOINT_URL)")
    endpoint = _endpoint()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    kwargs: dict[str, Any] = {}
    if endpoint is not None:
        kwargs["endpoint_override"] = endpoint
    if region is not None:
        kwargs["region"] = region
    return _cached(("s3", bucket, endpoint, region), lambda: pafs.S3FileSystem(**kwargs))


def _from_uri(url: str, scheme: str, bucket: str) -> pafs.FileSystem:
    def make() -> pafs.FileSystem:
        if scheme == "az":
            account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", "").strip()
            if not account:
                raise ValueError(f"{url!r}: az:// URLs need AZURE_STORAGE_ACCOUNT_NAME (or use "
                                 "abfs://<container>@<account>.dfs.core.windows.net/<path>)")
            return pafs.AzureFileSystem(account_name=account)
        try:
            return pafs.FileSystem.from_uri(f"{scheme}://{bucket}/")[0]
        except Exception as e:  # noqa: BLE001 - pyarrow built without this filesystem, or a malformed authority
            raise ValueError(f"cannot open {url!r} with pyarrow: {type(e).__name__}: {e}") from e

    account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") if scheme == "az" else None
    return _cached((scheme, bucket, account), make)


def resolve(url_or_path: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) of a location.

    A local path or ``file://`` URL gives the local filesystem and an absolute path (symbolic links are kept, not
    resolved); ``s3://bucket/key`` gives an S3 filesystem (see the module docstring for the endpoint, region and
    credentials) and ``"bucket/key"``. Raises ValueError naming the value for an unsupported scheme or a malformed
    URL (``s3://`` with no bucket, a query string, an empty path component).
    """
    scheme = _scheme(url_or_path)
    s = os.fspath(url_or_path)
    if scheme is None:
        return _local, os.path.abspath(s)
    if scheme == "file":
        p = urlsplit(s)
        if p.netloc not in ("", "localhost") or p.query or p.fragment or not p.path:
            raise ValueError(f"malformed file URL {s!r}: expected file:///absolute/path")
        return _local, os.path.abspath(unquote(p.path))
    scheme, bucket, key = _split_remote(s)
    if scheme == "s3":
        fs = _s3(s, bucket)
    else:
        fs = _from_uri(s, scheme, bucket)
    container = bucket.split("@", 1)[0] if scheme in ("abfs", "abfss") else bucket
    return fs, f"{container}/{key}" if key else container


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base`` with ``parts`` appended: ``os.path.join`` for a local path, ``/``-joined for a URL.

    Each part may hold ``/`` separators; for a URL none may be empty, ``.`` or ``..`` (ValueError naming it).
    """
    scheme = _scheme(base)
    b = os.fspath(base)
    if scheme is None:
        return os.path.join(b, *parts)
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"join({b!r}, ...): parts are str, got {type(part).__name__}: {part!r}")
        if any(c in ("", ".", "..") for c in part.strip("/").split("/")):
            raise ValueError(f"join({b!r}, ...): {part!r} has an empty, '.' or '..' path component")
    tail = "/".join(p.strip("/") for p in parts)
    if not tail:
        return b
    return f"{b.rstrip('/')}/{tail}" if not b.endswith("://") else f"{b}{tail}"


def open_input_file(url_or_path: str | os.PathLike) -> pafs.NativeFile:
    """A random-access input file of the location (``read_at`` does one ranged read; close it when done).

    Raises FileNotFoundError naming the location when it does not exist, OSError for any other failure.
    """
    fs, path = resolve(url_or_path)
    try:
        return fs.open_input_file(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no such file or object: {os.fspath(url_or_path)} ({e})") from e
    except OSError as e:
        raise OSError(f"cannot open {os.fspath(url_or_path)}: {e}") from e


def read_at(fh: Any, name: str, offset: int, size: int) -> bytes:
    """Exactly ``size`` bytes at ``offset`` of an open input file (one ranged read); OSError naming ``name`` on a
    short read (the same message as a local pointer read)."""
    try:
        data = fh.read_at(size, offset)
    except OSError as e:  # pyarrow refuses an offset past the end of the object
        if "past end" not in str(e):
            raise OSError(f"cannot read {size} bytes at offset {offset} of {name}: {e}") from e
        data = b""
    if len(data) != size:
        raise OSError(f"short read: {len(data)} of {size} bytes at offset {offset} of {name}")
    return data


def _check_range(url_or_path: Any, offset: Any, size: Any) -> tuple[int, int]:
    out = []
    for label, v in (("offset", offset), ("size", size)):
        try:
            n = operator.index(v)
        except TypeError:
            n = -1
        if isinstance(v, bool) or n < 0:
            raise ValueError(f"{label} must be a non-negative integer, got {v!r} (reading {os.fspath(url_or_path)})")
        out.append(n)
    return out[0], out[1]


def read_range(url_or_path: str | os.PathLike, offset: int, size: int) -> bytes:
    """The ``size`` bytes at ``offset`` of a file or object: one ranged read, never the whole object.

    Raises FileNotFoundError / OSError naming the location when it is missing or holds fewer bytes.
    """
    offset, size = _check_range(url_or_path, offset, size)
    with open_input_file(url_or_path) as fh:
        return read_at(fh, os.fspath(url_or_path), offset, size)


def read_bytes(url_or_path: str | os.PathLike) -> bytes:
    """The whole file or object; FileNotFoundError / OSError naming the location."""
    with open_input_file(url_or_path) as fh:
        return fh.read()


def write_bytes_atomic(url_or_path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` so that a reader sees the old contents or the new, never a part.

    Local: a temporary file in the same folder (parents created), flushed to disk, then ``os.replace``. Object
    store: the object becomes visible only when its upload completes (one PUT below pyarrow's multipart part size,
    else the completion of a multipart upload), which is atomic already; no rename is needed or possible. The
    upload starts only once ``data`` is complete in memory.
    """
    data = bytes(data)
    name = os.fspath(url_or_path)
    fs, path = resolve(url_or_path)
    if not is_remote(url_or_path):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return
    try:
        with fs.open_output_stream(path) as out:
            out.write(data)
    except OSError as e:
        raise OSError(f"cannot write {name}: {e}") from e


def exists(url_or_path: str | os.PathLike) -> bool:
    """Whether a file, object, folder or (non-empty) prefix exists at the location."""
    fs, path = resolve(url_or_path)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_dir(url_or_path: str | os.PathLike) -> list[str]:
    """Sorted names (not paths) of the entries directly under a folder or prefix.

    FileNotFoundError naming the location when there is no such folder (an object store has no empty prefixes:
    a prefix exists while an object lies under it).
    """
    fs, path = resolve(url_or_path)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=False, recursive=False))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no such folder or prefix: {os.fspath(url_or_path)} ({e})") from e
    except NotADirectoryError as e:
        raise NotADirectoryError(f"not a folder: {os.fspath(url_or_path)} ({e})") from e
    return sorted(i.base_name for i in infos)


class SchemeArrowFS(ArrowFSWrapper):
    """fsspec's wrapper of a pyarrow filesystem, named by the URL scheme it serves (``"s3"``, ``"gs"``, ...)."""

    cachable = False  # fsspec would otherwise reuse an instance found by the repr of its arguments

    def __init__(self, fs: pafs.FileSystem, scheme: str) -> None:
        super().__init__(fs)
        self._scheme = scheme

    @property
    def protocol(self) -> str:  # DuckDB routes URLs by this name: the URL's own scheme
        return self._scheme


def duckdb_filesystem(url_or_path: str | os.PathLike) -> SchemeArrowFS | None:
    """The fsspec filesystem DuckDB needs to read the location's store, or None for a local location.

    Give it to ``con.register_filesystem(...)``; its ``protocol`` is the URL's scheme (``"s3"`` for
    ``s3://...``), so the same URLs work in SQL: ``read_parquet('s3://bucket/prefix/*.parquet')``. DuckDB keeps
    one filesystem per protocol name and connection. DuckDB reads local paths itself (None: nothing to register).
    """
    if not is_remote(url_or_path):
        return None
    fs, _ = resolve(url_or_path)
    return SchemeArrowFS(fs, _scheme(url_or_path))


def register_duckdb(con: Any, url_or_path: str | os.PathLike) -> bool:
    """Register the location's store with a DuckDB connection unless its protocol is registered already (or the
    location is local); True when it registered one."""
    wrapper = duckdb_filesystem(url_or_path)
    if wrapper is None or wrapper.protocol in con.list_filesystems():
        return False
    con.register_filesystem(wrapper)
    return True
