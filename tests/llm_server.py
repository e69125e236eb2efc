"""A local OpenAI-compatible chat completions endpoint for tests: real HTTP on 127.0.0.1, scripted replies.

`POST /v1/chat/completions` answers from a queue of `Reply`s, one per choice (`n` choices pop `n`
replies): a text with `usage` token counts, an HTTP error with an optional `Retry-After` header
(429 rate limits, 5xx), or a stall that outlives the client's timeout. Every request's raw body and
headers are recorded, so a test can check what the client sent, and what it never sent. When the
queue is empty the server answers 503, which a test treats as "the client asked for more than the
script holds".
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer: the assistant's text, or an HTTP error, possibly after a delay."""

    content: str = ""
    status: int = 200
    retry_after: float | None = None  # seconds, sent as a Retry-After header with an error
    delay_s: float = 0.0  # sleep before answering (past the client's timeout: a stall)
    prompt_tokens: int = 1000
    completion_tokens: int = 500
    finish_reason: str = "stop"

    @classmethod
    def rate_limited(cls, retry_after: float = 0.2) -> Reply:
        return cls(status=429, retry_after=retry_after)

    @classmethod
    def stall(cls, seconds: float) -> Reply:
        return cls(content="too late", delay_s=seconds)


@dataclass
class Request:
    """What the client sent: the parsed body, the raw bytes, the headers and when it arrived."""

    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    at: float


class LLMServer:
    """Start with `with LLMServer() as server:`; `server.base_url` is the OpenAI-style base (…/v1)."""

    def __init__(self, replies: list[Reply] | None = None) -> None:
        self.replies: list[Reply] = list(replies or [])
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> LLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def script(self, *replies: Reply) -> None:
        with self.lock:
            self.replies.extend(replies)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Block until `count` requests have arrived (True) or `timeout` passes (False)."""
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)

    def bodies(self) -> list[str]:
        return [r.raw.decode("utf-8", "replace") for r in self.requests]

    # -- handling ------------------------------------------------------------------------------

    def _take(self, n: int) -> list[Reply] | None:
        with self.lock:
            if not self.replies:
                return None
            first = self.replies[0]
            if first.status != 200:
                return [self.replies.pop(0)]
            taken = []
            while self.replies and len(taken) < n and self.replies[0].status == 200:
                taken.append(self.replies.pop(0))
            return taken

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    return self._send(400, {"error": {"message": "the body is not JSON", "type": "invalid_request"}})
                with server.arrived:
                    server.requests.append(Request(body, raw, dict(self.headers.items()), time.monotonic()))
                    server.arrived.notify_all()
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                replies = server._take(max(1, int(body.get("n") or 1)))
                if replies is None:
                    return self._send(503, {"error": {"message": "the script is empty", "type": "server_error"}})
                first = replies[0]
                if first.delay_s:
                    time.sleep(first.delay_s)
                if first.status != 200:
                    headers = {"Retry-After": f"{first.retry_after:g}"} if first.retry_after is not None else {}
                    kind = "rate_limit_exceeded" if first.status == 429 else "server_error"
                    return self._send(first.status, {"error": {"message": f"scripted {first.status}", "type": kind,
                                                               "code": kind}}, headers)
                self._send(200, _completion(body, replies))

            def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a stall past its timeout)

        return Handler


def _completion(body: dict[str, Any], replies: list[Reply]) -> dict[str, Any]:
    prompt = max(r.prompt_tokens for r in replies)
    completion = sum(r.completion_tokens for r in replies)
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "test-model"),
        "choices": [{"index": i, "message": {"role": "assistant", "content": r.content},
                     "finish_reason": r.finish_reason} for i, r in enumerate(replies)],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }
