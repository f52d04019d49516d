"""A real S3 API on loopback for tests and benchmarks: moto's standalone server in a thread, counting bytes.

:func:`s3_store` (a module-scoped pytest fixture; import it into a test module) starts
``moto.server.ThreadedMotoServer`` on 127.0.0.1 and a free port, points the standard AWS variables at it
(``AWS_ENDPOINT_URL``, test credentials, ``us-east-1``; profiles, config files and instance metadata switched
off so that nothing reaches a real cloud endpoint), creates a bucket, yields an :class:`S3Store`, and stops the
server. :func:`running_store` is the same as a context manager, for the benchmarks.

:attr:`S3Store.slow_puts` makes the store slow on purpose for the fault tests: a PUT to a key whose path holds
one of its substrings is served one at a time, each after that many seconds, so a writer killed while it uploads
a folder leaves part of it (deterministically, not by a race with parallel uploads). As on a real store, a PUT the
server has received still completes after its client dies: :meth:`S3Store.wait_quiet` waits until no request is
in flight, so a test looks at what a killed writer left only once the store has finished with it.

The server records every request it answers (method, path, ``Range`` header, response body bytes), so a test can
check how many bytes a read really fetched from the store: moto itself keeps no such counter.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow.fs as pafs
import pytest
from moto.moto_server import threaded_moto_server
from moto.server import ThreadedMotoServer

from clip_assets.io import fs

BUCKET = "clip-assets-test"


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    body_bytes: int


@dataclass
class S3Store:
    endpoint: str
    bucket: str
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    slow_puts: dict[str, float] = field(default_factory=dict)  # path substring -> seconds (see module doc)
    inflight: "_InFlight" = field(default_factory=lambda: _InFlight())

    def wait_quiet(self, timeout_s: float = 60.0, settle_s: float = 0.5) -> None:
        """Return once no request has been served for ``settle_s`` (a killed client's received PUTs included: a
        connection accepted a moment ago is being served by then); fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self.inflight.cond:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self.inflight.cond.wait_for(lambda: self.inflight.n == 0, left):
                    raise TimeoutError(f"the store still serves {self.inflight.n} request(s) after {timeout_s}s")
                seen = self.inflight.started
                self.inflight.cond.wait(settle_s)
                if self.inflight.n == 0 and self.inflight.started == seen:
                    return

    def url(self, *parts: str) -> str:
        return fs.join(f"s3://{self.bucket}", *parts)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()

    def gets(self) -> list[Request]:
        """The GET requests for objects (not bucket listings) since the last :meth:`reset`."""
        with self.lock:
            return [r for r in self.requests if r.method == "GET" and r.path.count("/") >= 2]

    def upload_dir(self, local_dir, prefix: str) -> None:
        """Copy a local folder tree to ``s3://<bucket>/<prefix>/`` (pyarrow's copy_files)."""
        s3, path = fs.resolve(self.url(prefix))
        pafs.copy_files(str(local_dir), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)


class _InFlight:
    """How many requests the server is serving now, with a condition to wait on."""

    def __init__(self) -> None:
        self.n = 0
        self.started = 0  # requests begun, ever
        self.cond = threading.Condition()

    def __enter__(self) -> None:
        with self.cond:
            self.n += 1
            self.started += 1
            self.cond.notify_all()

    def __exit__(self, *exc) -> None:
        with self.cond:
            self.n -= 1
            self.cond.notify_all()


class _CountingServer(ThreadedMotoServer):
    """ThreadedMotoServer whose WSGI app is wrapped to record each request and the bytes of its response."""

    def __init__(self, store_requests: list[Request], lock: threading.Lock, slow_puts: dict[str, float],
                 inflight: _InFlight) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self._log, self._lock, self._slow, self._inflight = store_requests, lock, slow_puts, inflight

    def _server_entry(self) -> None:
        app = threaded_moto_server.DomainDispatcherApplication(threaded_moto_server.create_backend_app)
        log, lock, slow, inflight = self._log, self._lock, self._slow, self._inflight
        one_at_a_time = threading.Lock()

        def counting(environ, start_response):
            with inflight:  # until the response is out (or the client gone)
                yield from _served(environ, start_response)

        def _served(environ, start_response):
            # the request is logged and its bytes counted before each chunk goes out, so a client that has its
            # response already sees it in the log
            req = Request(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("HTTP_RANGE"), 0)
            delay = next((s for sub, s in list(slow.items()) if sub in req.path), None) if req.method == "PUT" else None
            if delay is None:
                body = app(environ, start_response)
            else:
                with one_at_a_time:  # the object is stored by app(): it appears `delay` after the previous one
                    time.sleep(delay)
                    body = app(environ, start_response)
            with lock:
                log.append(req)
            try:
                for chunk in body:
                    with lock:
                        req.body_bytes += len(chunk)
                    yield chunk
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()

        self._server = threaded_moto_server.make_server(
            self._ip_address, self._port, counting, True, request_handler=threaded_moto_server.MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


AWS_VARS_OFF = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION",
                "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_ROLE_ARN",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI")


@contextlib.contextmanager
def running_store(mp: pytest.MonkeyPatch, bucket: str = BUCKET) -> Iterator[S3Store]:
    """Start the loopback server, point the AWS variables at it (through ``mp``), create ``bucket``."""
    requests: list[Request] = []
    lock = threading.Lock()
    slow_puts: dict[str, float] = {}
    inflight = _InFlight()
    server = _CountingServer(requests, lock, slow_puts, inflight)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for var in AWS_VARS_OFF:
            mp.delenv(var, raising=False)
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        fs.clear_cache()
        pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1", access_key="testing",
                          secret_key="testing", allow_bucket_creation=True).create_dir(bucket)
        store = S3Store(endpoint=endpoint, bucket=bucket, requests=requests, lock=lock, slow_puts=slow_puts,
                        inflight=inflight)
        yield store
    finally:
        fs.clear_cache()
        server.stop()


@pytest.fixture(scope="module")
def s3_store() -> Iterator[S3Store]:
    """A bucket on a loopback S3 server for one test module, with the AWS variables pointing at it."""
    with pytest.MonkeyPatch.context() as mp, running_store(mp) as store:
        yield store
