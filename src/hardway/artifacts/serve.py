"""Serve a mirror over HTTP on 127.0.0.1 only (stdlib, one thread per request)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..errors import OperationError, UsageError

HOST = "127.0.0.1"


class _Handler(SimpleHTTPRequestHandler):
    log_hook: Callable[[str], None] | None = None

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib's name)
        if self.log_hook is not None:
            self.log_hook(f"{self.address_string()} {format % args}")

    def list_directory(self, path):  # a mirror is fetched by exact path; no listings
        self.send_error(404, "No directory listings")
        return None


def _server(root: Path, port: int, log: Callable[[str], None] | None) -> ThreadingHTTPServer:
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory (build one with `hardway artifacts mirror build {root} --from-debian`)")
    handler = type("MirrorHandler", (_Handler,), {"log_hook": staticmethod(log) if log else None})
    try:
        server = ThreadingHTTPServer((HOST, port), functools.partial(handler, directory=str(root.resolve())))
    except OSError as e:
        raise OperationError(f"cannot listen on {HOST}:{port}: {e.strerror or e}") from None
    server.daemon_threads = True
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


def serve_forever(root: Path, port: int = 8080, on_ready: Callable[[str], None] | None = None,
                  log: Callable[[str], None] | None = None) -> None:
    """Serve `root` until interrupted (KeyboardInterrupt propagates after the socket is closed)."""
    server = _server(root, port, log)
    try:
        if on_ready:
            on_ready(url_of(server))
        server.serve_forever()
    finally:
        server.server_close()


@contextmanager
def serving(root: Path, port: int = 0, log: Callable[[str], None] | None = None) -> Iterator[str]:
    """Serve `root` in a background thread; yields the base URL (port 0: any free port)."""
    server = _server(root, port, log)
    t = threading.Thread(target=server.serve_forever, name="hardway-mirror", daemon=True)
    t.start()
    try:
        yield url_of(server)
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=10)
