"""A local stand-in for the Anthropic Messages API, for driving the real `anthropic` client in tests.

A stdlib ThreadingHTTPServer on 127.0.0.1 (port 0) in a thread. It answers POST /v1/messages from a
queue of scripted replies (status, JSON body, headers, an optional delay before answering) and
records every request (path, headers, parsed JSON body) so a test can assert what the client sent.
When the queue is empty it answers 500 with `x-should-retry: false`, so a missing script fails fast.

    with FakeAnthropic() as fake:
        fake.push(tool_reply({"hypothesis": "...", "train_py": "..."}))
        client = anthropic.Anthropic(api_key="sk-test", base_url=fake.url, max_retries=0)
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "claude-opus-5-5"


@dataclass
class Reply:
    status: int = 200
    body: dict = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to sleep before answering (to make the client time out)


def message_body(
    content: list[dict], stop_reason: str = "end_turn", usage: dict | None = None, model: str = MODEL
) -> dict:
    """A Messages API response with the fields strict validation requires (integrations.md §4.9)."""
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage
        or {
            "input_tokens": 1200,
            "output_tokens": 400,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def tool_reply(
    tool_input,
    name: str = "submit_experiment",
    usage: dict | None = None,
    stop_reason: str = "tool_use",
    text: str | None = None,
) -> Reply:
    content = [{"type": "text", "text": text}] if text else []
    content.append({"type": "tool_use", "id": "toolu_fake", "name": name, "input": tool_input})
    return Reply(body=message_body(content, stop_reason, usage))


def text_reply(text: str, stop_reason: str = "end_turn", usage: dict | None = None) -> Reply:
    return Reply(body=message_body([{"type": "text", "text": text}], stop_reason, usage))


def error_reply(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"type": "error", "error": {"type": type_, "message": message}}, headers or {})


class FakeAnthropic:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    reply = fake.replies.popleft() if fake.replies else None
                if self.path.split("?")[0] != "/v1/messages":
                    reply = error_reply(404, "not_found_error", f"fake server: no route {self.path}")
                elif reply is None:
                    reply = error_reply(
                        500, "api_error", "fake server: no scripted reply left", {"x-should-retry": "false"}
                    )
                if reply.delay:
                    time.sleep(reply.delay)
                payload = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("request-id", f"req_fake_{len(fake.requests)}")
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def start(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
