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

import fnmatch
import io
import operator
import os
import posixpath
import tempfile
import threading
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, NamedTuple
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.implementations.arrow import ArrowFSWrapper

REMOTE_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "az")
SINGLE_PUT_BYTES = 5 * 1024 * 1024  # S3's minimum multipart part: smaller objects go up in one PutObject

_cache: dict[tuple, pafs.FileSystem] = {}
_cache_lock = threading.Lock()
_local = pafs.LocalFileSystem()


def clear_cache() -> None:
    """Forget the cached filesystems (the next :func:`resolve` builds them from the environment again)."""
    with _cache_lock:
        _cache.clear()


def _scheme(url_or_path: str | os.PathLike) -> str | None:
    """The URL scheme (lower case) of a location, ``None`` for a plain local path; ValueError when unsupported."""
    if isinstance(url_or_path, StorePath):
        url_or_path = url_or_path.url
    if not isinstance(url_or_path, (str, os.PathLike)):
        raise TypeError(f"a location is a str, os.PathLike or URL, got {type(url_or_path).__name__}: {url_or_path!r}")
    s = _text(url_or_path)
    if isinstance(s, bytes):
        raise TypeError(f"a location is a str, os.PathLike or URL, got bytes: {s!r}")
    if isinstance(url_or_path, os.PathLike) or "://" not in s:
        return None
    scheme = s.split("://", 1)[0].lower()
    if scheme == "file" or scheme in REMOTE_SCHEMES:
        return scheme
    known = ", ".join(f"{r}://" for r in REMOTE_SCHEMES)
    raise ValueError(f"unsupported storage scheme {scheme!r} in {s!r}: use a local path, file:// or one of {known}")


def _text(url_or_path: Any) -> str:
    """The location as text: a StorePath's URL, else ``os.fspath``."""
    return url_or_path.url if isinstance(url_or_path, StorePath) else os.fspath(url_or_path)


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
    # delayed open: an input file is opened without a HEAD (a pointer read is one ranged GET), and a small output
    # stream is sent as one PutObject at close instead of a multipart upload (three requests)
    kwargs: dict[str, Any] = {"allow_delayed_open": True}
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
    s = _text(url_or_path)
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
    b = _text(base)
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
        raise FileNotFoundError(f"no such file or object: {_text(url_or_path)} ({e})") from e
    except OSError as e:
        raise OSError(f"cannot open {_text(url_or_path)}: {e}") from e


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
            raise ValueError(f"{label} must be a non-negative integer, got {v!r} (reading {_text(url_or_path)})")
        out.append(n)
    return out[0], out[1]


def read_range(url_or_path: str | os.PathLike, offset: int, size: int) -> bytes:
    """The ``size`` bytes at ``offset`` of a file or object: one ranged read, never the whole object.

    Raises FileNotFoundError / OSError naming the location when it is missing or holds fewer bytes.
    """
    offset, size = _check_range(url_or_path, offset, size)
    with open_input_file(url_or_path) as fh:
        return read_at(fh, _text(url_or_path), offset, size)


def read_bytes(url_or_path: str | os.PathLike) -> bytes:
    """The whole file or object; FileNotFoundError / OSError naming the location."""
    with open_input_file(url_or_path) as fh:
        return fh.read()


def write_bytes_atomic(url_or_path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` so that a reader sees the old contents or the new, never a part.

    Local: a temporary file in the same folder (parents created), flushed to disk, then ``os.replace``. Object
    store: below ``SINGLE_PUT_BYTES`` one PutObject of the complete bytes (the object appears whole or not at all);
    larger data goes up as a multipart upload to a scratch key beside the name, then is copied onto the name
    server-side, so a failed part never completes under the name itself.
    """
    data = bytes(data)
    name = _text(url_or_path)
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
    if len(data) < SINGLE_PUT_BYTES:  # one PutObject at close (delayed open): the object lands whole or not at all
        try:
            with fs.open_output_stream(path) as out:
                out.write(data)
        except OSError as e:
            raise OSError(f"cannot write {name}: {e}") from e
        return

    def stream(scratch: str) -> None:
        with fs.open_output_stream(scratch) as out:
            out.write(data)

    _via_scratch(fs, path, name, stream)


def _via_scratch(fsys: pafs.FileSystem, path: str, name: str, fill: Any) -> None:
    """A multipart upload to a scratch key beside ``path`` (``fill(scratch)`` writes it), then a server-side copy
    onto ``path``: pyarrow completes a multipart upload even when a part failed (its streams cannot abort one), so
    a failed upload only ever completes under scratch, which is removed."""
    folder, base = path.rsplit("/", 1)
    scratch = f"{folder}/.{base}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        fill(scratch)
        fsys.move(scratch, path)
    except OSError as e:
        raise OSError(f"cannot write {name}: {e}") from e
    finally:
        try:
            fsys.delete_file(scratch)
        except OSError:
            pass


def upload_file(local: "str | os.PathLike", url_or_path: "str | StorePath") -> None:
    """Publish the local file ``local`` as the object ``url_or_path``, whole or not at all: below
    ``SINGLE_PUT_BYTES`` as :func:`write_bytes_atomic` of its bytes, else streamed from disk through a scratch key
    (:func:`_via_scratch`), never held in memory."""
    local = os.fspath(local)
    if os.path.getsize(local) < SINGLE_PUT_BYTES:
        with open(local, "rb") as f:
            write_bytes_atomic(url_or_path, f.read())
        return
    fsys, path = resolve(url_or_path)
    _via_scratch(fsys, path, _text(url_or_path), lambda scratch: pafs.copy_files(
        local, scratch, source_filesystem=_local, destination_filesystem=fsys))


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
        raise FileNotFoundError(f"no such folder or prefix: {_text(url_or_path)} ({e})") from e
    except NotADirectoryError as e:
        raise NotADirectoryError(f"not a folder: {_text(url_or_path)} ({e})") from e
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


# ---------------------------------------------------------------------------------------------------------------
# Object-store locations with pathlib's interface
# ---------------------------------------------------------------------------------------------------------------

class _Stat(NamedTuple):
    st_size: int
    st_mtime: float


class StorePath:
    """A location on an object store (``s3://bucket/key``) with the part of :class:`pathlib.Path`'s interface the
    project uses on data paths: ``/``, ``name``, ``parent``, ``exists``, ``is_dir``, ``iterdir``, ``glob``,
    ``read_bytes``, ``stat``, ``unlink`` and the like, all through this layer's pyarrow filesystem.

    It is what :func:`location` (and so :func:`clip_assets.config.data_home` for a URL home) returns, so code that
    walks ``home / "warehouse" / asset / f"drop={d}"`` works unchanged on a store. It deliberately has no
    ``__fspath__``: a library handed one (``open``, ``shutil``, ``pq.read_table``, ``duckdb``) fails loudly instead
    of writing a local file named like a URL; such calls go through :func:`arrow` (a filesystem and a path),
    :func:`read_table` / :func:`read_tables` / :func:`parquet_metadata`, or the commit layer.

    An object store has no folders: a "folder" exists while an object lies below its prefix, ``mkdir`` does
    nothing, and nothing is a symbolic link (versioned folders use pointer objects, see
    :mod:`clip_assets.io.commit`). ``__str__`` and :meth:`as_posix` give the URL, as DuckDB and messages want it.
    """

    __slots__ = ("url", "_kind")

    def __init__(self, url: "str | StorePath", _kind: "pafs.FileType | None" = None) -> None:
        url = url.url if isinstance(url, StorePath) else url
        if not isinstance(url, str) or not is_remote(url):
            raise ValueError(f"StorePath needs an object-store URL (s3://bucket/key), got {url!r}")
        scheme, bucket, key = _split_remote(url)
        self.url = f"{scheme}://{bucket}/{key}" if key else f"{scheme}://{bucket}"
        # what the listing that found this entry said it is (like os.scandir's DirEntry): is_file / is_dir of a
        # listed entry cost no request; None for a path built by hand, which asks the store
        self._kind = _kind

    # -- pure path operations --------------------------------------------------------------------------------
    def _key(self) -> str:
        return self.url.split("://", 1)[1].partition("/")[2]

    def _root(self) -> str:
        scheme, rest = self.url.split("://", 1)
        return f"{scheme}://{rest.partition('/')[0]}"

    @property
    def name(self) -> str:
        key = self._key()
        return key.rsplit("/", 1)[-1] if key else ""

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0] if self.name else ""

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def parent(self) -> "StorePath":
        key = self._key()
        return StorePath(f"{self._root()}/{key.rsplit('/', 1)[0]}" if "/" in key else self._root())

    @property
    def parts(self) -> tuple[str, ...]:
        key = self._key()
        return (self._root(), *key.split("/")) if key else (self._root(),)

    def __truediv__(self, part: "str | os.PathLike") -> "StorePath":
        if isinstance(part, StorePath):
            raise TypeError(f"cannot join {part!r} below {self!r}")
        return StorePath(join(self.url, os.fspath(part)))

    def joinpath(self, *parts: str) -> "StorePath":
        return StorePath(join(self.url, *[os.fspath(p) for p in parts])) if parts else self

    def with_name(self, name: str) -> "StorePath":
        if not name or "/" in name:
            raise ValueError(f"invalid name {name!r} for {self!r}")
        return self.parent / name

    def with_suffix(self, suffix: str) -> "StorePath":
        return self.with_name(self.stem + suffix)

    def relative_to(self, other: "StorePath") -> PurePosixPath:
        other = StorePath(other)
        if self.url == other.url:
            return PurePosixPath(".")
        if not self.url.startswith(other.url + "/"):
            raise ValueError(f"{self.url!r} is not below {other.url!r}")
        return PurePosixPath(self.url[len(other.url) + 1:])

    def as_posix(self) -> str:
        return self.url

    def resolve(self) -> "StorePath":
        return self

    def expanduser(self) -> "StorePath":
        return self

    absolute = resolve

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"StorePath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StorePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(("StorePath", self.url))

    def __lt__(self, other: "StorePath") -> bool:
        return self.url < StorePath(other).url

    # -- queries and I/O through pyarrow.fs ------------------------------------------------------------------
    def _fs(self) -> tuple[pafs.FileSystem, str]:
        return resolve(self.url)

    def _info(self) -> pafs.FileInfo:
        fsys, path = self._fs()
        return fsys.get_file_info(path)

    def _type(self) -> pafs.FileType:
        return self._kind if self._kind is not None else self._info().type

    def exists(self) -> bool:
        """Asks the store every time (is_file / is_dir of a listed entry answer from the listing)."""
        return self._info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_symlink(self) -> bool:
        return False

    def stat(self) -> _Stat:
        """Size and modification time (seconds). A prefix has neither: its newest object's time, size 0."""
        info = self._info()
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"no such file or object: {self.url}")
        if info.type == pafs.FileType.File:
            return _Stat(int(info.size or 0), info.mtime.timestamp() if info.mtime else 0.0)
        times = [i.mtime.timestamp() for i in self._walk() if i.mtime is not None]
        return _Stat(0, max(times, default=0.0))

    lstat = stat

    def _walk(self) -> list[pafs.FileInfo]:
        fsys, path = self._fs()
        return fsys.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=True))

    def iterdir(self) -> Iterator["StorePath"]:
        """The entries directly below (objects and prefixes, each once, sorted). A prefix with nothing below lists
        as empty (``mkdir`` cannot make an empty folder on a store, so a missing one is an empty one); an object
        raises NotADirectoryError."""
        yield from self._listing()

    def _listing(self) -> list["StorePath"]:
        fsys, path = self._fs()
        try:
            infos = fsys.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
        except NotADirectoryError as e:
            raise NotADirectoryError(f"not a folder: {self.url} ({e})") from e
        kinds: dict[str, pafs.FileType] = {}
        for i in infos:  # an object and a prefix of one name: the prefix (the folder) wins
            if kinds.get(i.base_name) != pafs.FileType.Directory:
                kinds[i.base_name] = i.type
        return [StorePath(join(self.url, n), kinds[n]) for n in sorted(kinds)]

    def glob(self, pattern: str) -> Iterator["StorePath"]:
        """Entries matching a relative pattern of ``/``-separated :mod:`fnmatch` segments (one level each)."""
        segments = [s for s in pattern.split("/") if s]
        if "**" in segments:
            raise ValueError(f"StorePath.glob: '**' is not supported ({pattern!r} below {self.url}); use rglob")
        return iter(self._glob(segments) if segments else ())

    def _glob(self, segments: list[str]) -> list["StorePath"]:
        head, rest = segments[0], segments[1:]
        try:
            entries = self._listing()
        except NotADirectoryError:
            return []
        hits = [p for p in entries if fnmatch.fnmatchcase(p.name, head)]
        if not rest:
            return hits
        return [p for h in hits for p in h._glob(rest)]

    def _all_below(self) -> set["StorePath"]:
        """Every object below, and every prefix between them and this one."""
        kinds: dict[str, pafs.FileType] = {}
        base = self._fs()[1].rstrip("/")
        for info in self._walk():
            rel = info.path[len(base) + 1:] if info.path.startswith(base + "/") else None
            if not rel:
                continue
            parts = rel.split("/")
            for i in range(1, len(parts)):
                kinds["/".join(parts[:i])] = pafs.FileType.Directory
            kinds.setdefault(rel, info.type)
        return {StorePath(join(self.url, r), k) for r, k in kinds.items()}

    def rglob(self, pattern: str) -> Iterator["StorePath"]:
        """Entries at any depth below whose name matches ``pattern``."""
        return iter(sorted(p for p in self._all_below() if fnmatch.fnmatchcase(p.name, pattern)))

    def read_bytes(self) -> bytes:
        return read_bytes(self.url)

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def write_bytes(self, data: bytes) -> int:
        """Upload ``data`` as this object (visible whole or not at all, see :func:`write_bytes_atomic`)."""
        write_bytes_atomic(self.url, data)
        self._kind = None
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def open(self, mode: str = "rb", encoding: str | None = None) -> Any:
        """``"rb"``: a random-access input file; ``"r"``: its text. Writes go through the commit layer."""
        if mode == "rb":
            return open_input_file(self.url)
        if mode in ("r", "rt"):
            return io.StringIO(self.read_text(encoding or "utf-8"))
        raise ValueError(f"StorePath.open: mode {mode!r} is not supported on {self.url} (write through "
                         "clip_assets.io.commit)")

    def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: a prefix exists as soon as an object is written below it."""

    def unlink(self, missing_ok: bool = False) -> None:
        self._kind = None
        fsys, path = self._fs()
        try:
            fsys.delete_file(path)
        except FileNotFoundError:
            if not missing_ok:
                raise FileNotFoundError(f"no such file or object: {self.url}") from None

    def rmtree(self) -> None:
        """Delete every object below this prefix (missing: nothing to do)."""
        self._kind = None
        fsys, path = self._fs()
        try:
            fsys.delete_dir(path)
        except FileNotFoundError:
            pass


LOCATION_TYPES = (str, os.PathLike, StorePath)  # what may name a file or folder (isinstance checks)


def location(value: "str | os.PathLike | StorePath") -> "Path | StorePath":
    """A :class:`StorePath` for an object-store URL (ValueError naming a malformed one), else a local
    :class:`~pathlib.Path` (``file://`` URLs decoded)."""
    if isinstance(value, StorePath):
        return value
    if isinstance(value, str) and is_remote(value):
        return StorePath(value)
    if isinstance(value, str) and value.startswith("file://"):
        return Path(resolve(value)[1])
    return Path(value)


def arrow(value: "str | os.PathLike | StorePath") -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path) for pyarrow calls that take a ``filesystem=`` (same as :func:`resolve`)."""
    return resolve(value)


def read_table(path: "str | os.PathLike | StorePath", columns: list[str] | None = None) -> pa.Table:
    """One Parquet file, local or on a store."""
    fsys, p = resolve(path)
    return pq.read_table(p, columns=columns, filesystem=fsys)


def read_tables(paths: list, columns: list[str] | None = None) -> pa.Table:
    """Several Parquet files (same schema) as one table, in the given order."""
    if not paths:
        raise ValueError("read_tables: no files given")
    return pa.concat_tables([read_table(p, columns) for p in paths])


def parquet_metadata(path: "str | os.PathLike | StorePath") -> pq.FileMetaData:
    """The footer of a Parquet file (row count, schema) with one ranged read on a store."""
    with open_input_file(path) as fh:
        return pq.ParquetFile(fh).metadata


def read_schema(path: "str | os.PathLike | StorePath") -> pa.Schema:
    return parquet_metadata(path).schema.to_arrow_schema()


def known_stores() -> list[tuple[str, pafs.FileSystem]]:
    """(scheme, filesystem) of every object store this process has opened (for DuckDB connections)."""
    with _cache_lock:
        return [(k[0] if k[0] != "gcs" else "gs", v) for k, v in _cache.items()]


def register_known_stores(con: Any) -> int:
    """Register every store this process has opened with a DuckDB connection (one per scheme), so that SQL over
    ``s3://`` files works in any connection once the home or landing is on a store. Returns how many."""
    n, have = 0, set(con.list_filesystems())
    for scheme, fsys in known_stores():
        if scheme not in have:
            con.register_filesystem(SchemeArrowFS(fsys, scheme))
            have.add(scheme)
            n += 1
    return n


def parquet_file(path: "str | os.PathLike | StorePath") -> pq.ParquetFile:
    """A :class:`pyarrow.parquet.ParquetFile` over the file or object (ranged reads on a store)."""
    return pq.ParquetFile(open_input_file(path))
