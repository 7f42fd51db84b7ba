"""Serve a built dashboard directory over HTTP on this machine (stdlib only).

    serve(directory, host="127.0.0.1", port=8000)

Blocks until interrupted. Loopback by default: the page is static and public anyway, but a
dashboard server has no business listening on every interface unless asked. `port=0` takes a free
port; `on_ready(server)` is called once the socket is bound (the tests use it to learn the port and
to stop the server with `server.shutdown()`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Handler(SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        # a rebuilt site shows at the next reload; the page never asks for anything cross-origin
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # one short line per request, on stderr
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def make_server(directory: str | Path, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    directory = Path(directory)
    if not (directory / "index.html").is_file():
        raise FileNotFoundError(f"{directory / 'index.html'} not found: build the dashboard first")
    handler = functools.partial(_Handler, directory=str(directory))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(
    directory: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    on_ready: Callable[[ThreadingHTTPServer], None] | None = None,
) -> None:
    """Serve `directory` until Ctrl-C (or until `server.shutdown()` from another thread)."""
    server = make_server(directory, host, port)
    bound_host, bound_port = server.server_address[:2]
    print(f"Serving {directory} at http://{bound_host}:{bound_port}/ (Ctrl-C to stop)", flush=True)
    if on_ready is not None:
        on_ready(server)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
