"""A local stand-in for the climbmix shard host: small parquet shards over HTTP, with faults on demand.

    with ParquetServer(tmp_path / "shards", n_train=2) as srv:
        srv.fail("shard_00000.parquet", "503")      # next request for it answers 503, then it works
        srv.fail("shard_00001.parquet", "drop")     # next response is cut off half-way (resume needed)
        srv.fail("shard_00002.parquet", "stall")    # next response stops half-way and hangs
        srv.fail("shard_06542.parquet", "corrupt")  # every response for it has damaged bytes
        os.environ["AUTORESEARCH_DATA_URL"] = srv.url
        ...
        assert srv.saw_range("shard_00001.parquet")

It is a ThreadingHTTPServer on 127.0.0.1 (port chosen by the OS) serving GET and HEAD with single
byte-range support (Range: bytes=a- / bytes=a-b, 206 + Content-Range, 416 past the end). `requests`
records every request as (path, Range header or None, status).
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VAL_SHARD = 6542
FAULTS = ("503", "429", "drop", "stall", "corrupt", "404")
STALL_SECONDS = 2.0

_WORD_TEXT = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were their one all we can her has there been if more when will would who so no people time "
    "nation state government congress war peace law year river city market ship school water bridge energy "
    "report science garden music letter history engine island forest harbor village council program"
)
_WORDS = tuple(_WORD_TEXT.split())


def make_text(rng: random.Random, paragraphs: int) -> str:
    paras = []
    for _ in range(paragraphs):
        sents = []
        for _ in range(rng.randint(1, 6)):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 18))]
            sents.append(" ".join(words).capitalize() + rng.choice(".!?."))
        paras.append(" ".join(sents))
    return "\n\n".join(paras)


def make_shard(path: Path, rows: int = 200, seed: int = 0, row_group_size: int = 64) -> Path:
    """A parquet file shaped like a climbmix shard: one string column "text"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    texts = [make_text(rng, rng.choice([1, 1, 2, 3, 8, 40])) for _ in range(rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts}), path, row_group_size=row_group_size)
    return path


def make_shards(root: Path, n_train: int = 2, rows: int = 200) -> list[Path]:
    ids = [*range(n_train), VAL_SHARD]
    return [make_shard(root / f"shard_{i:05d}.parquet", rows=rows, seed=i) for i in ids]


class ParquetServer:
    def __init__(self, root: Path, n_train: int = 2, rows: int = 200, make: bool = True):
        self.root = Path(root)
        if make:
            make_shards(self.root, n_train, rows)
        self.requests: list[tuple[str, str | None, int]] = []
        self._faults: dict[str, list[str]] = {}
        self._sticky: dict[str, str] = {}
        self._lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- control ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, name: str, fault: str, times: int = 1) -> None:
        """Inject `fault` into the next `times` requests for `name` ("corrupt" sticks for good)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
        with self._lock:
            if fault == "corrupt":
                self._sticky[name] = fault
            else:
                self._faults.setdefault(name, []).extend([fault] * times)

    def _take_fault(self, name: str) -> str | None:
        with self._lock:
            q = self._faults.get(name)
            if q:
                return q.pop(0)
            return self._sticky.get(name)

    def _log(self, name: str, rng: str | None, status: int) -> None:
        with self._lock:
            self.requests.append((name, rng, status))

    def saw_range(self, name: str) -> bool:
        return any(n == name and r and not r.startswith("bytes=0-") for n, r, _ in self.requests)

    def statuses(self, name: str) -> list[int]:
        return [s for n, _, s in self.requests if n == name]

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> ParquetServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ParquetServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client hanging up is not news
        pass


def free_port() -> int:
    """A port nothing listens on (for "unreachable" tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_handler(server: ParquetServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_HEAD(self):
            self._serve(body=False)

        def do_GET(self):
            self._serve(body=True)

        def _serve(self, body: bool):
            name = self.path.lstrip("/").split("?")[0]
            rng = self.headers.get("Range")
            path = server.root / name
            if "/" in name or not path.is_file():
                return self._status(404, name, rng)
            fault = server._take_fault(name)
            if fault in ("503", "429", "404"):
                return self._status(int(fault), name, rng, retry_after=fault == "429")
            data = path.read_bytes()
            if fault == "corrupt":  # same length, damaged footer: size checks pass, parquet does not
                data = data[:-12] + bytes(8) + data[-4:]
            start, end, status = 0, len(data) - 1, 200
            if rng:
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                if not m or int(m.group(1)) >= len(data):
                    server._log(name, rng, 416)
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(m.group(1))
                end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
                status = 206
            chunk = data[start : end + 1]
            server._log(name, rng, status)
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(chunk)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if not body:
                return
            if fault == "stall":  # half the body, then silence: the client's read timeout must fire
                self.wfile.write(chunk[: len(chunk) // 2])
                self.wfile.flush()
                time.sleep(STALL_SECONDS)
                self.close_connection = True
                return
            if fault == "drop":  # half the body, then the connection dies
                self.wfile.write(chunk[: len(chunk) // 2])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(chunk)

        def _status(self, code: int, name: str, rng: str | None, retry_after: bool = False):
            msg = f"fault {code}\n".encode()
            server._log(name, rng, code)  # before answering: a client may check the log at once
            self.send_response(code)
            if retry_after:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)

    return Handler
