"""A real, bounded OpenAI-compatible HTTP server on 127.0.0.1 that can misbehave on demand.

Issue 18: outages must never be frozen as results. The server speaks plain HTTP (stdlib
``http.server``), so the client under test goes through its real SDK, sockets and timeouts.
``mode`` can be changed between requests:

- ``ok``: a healthy server: chat and completions (no echo logprobs), answering detection
  prompts ("Example N: 1" when an example shares a word with the explanation);
- ``429``: "Too Many Requests" with ``Retry-After: 1``; ``500``: a server error;
- ``garbage``: 200 with a body that is not JSON; ``no_choices``: 200 JSON without choices;
- ``hang``: holds the request for ``hang_s`` seconds (past the client's timeout), then closes.

Bounded: every handler thread is a daemon, a hang waits on an event that :meth:`stop` sets,
and the server is closed by the fixture.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

MODES = ("ok", "429", "500", "garbage", "no_choices", "hang")
_EXAMPLE = re.compile(r"^Example (\d+): (.*)$", re.M)


def detection_answer(prompt: str) -> str:
    """A deterministic reader: an example is "1" when it shares a word with the explanation."""
    head = prompt.split("\n", 1)[0]
    words = {w for w in re.findall(r"[a-z]+", head.split("looks for:")[-1].lower())
             if len(w) > 2}
    lines = []
    for number, text in _EXAMPLE.findall(prompt):
        hit = bool(words & set(re.findall(r"[a-z]+", text.lower())))
        lines.append(f"Example {number}: {int(hit)}")
    return "\n".join(lines) or "Example 1: 0"


class OutageServer(ThreadingHTTPServer):
    """The server; ``mode`` is read per request, ``requests`` counts what arrived."""

    daemon_threads = True

    def __init__(self, mode: str = "ok", hang_s: float = 5.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode, self.hang_s = mode, hang_s
        self.requests: list[tuple[str, str]] = []  # (mode, path)
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def count(self, mode: str) -> int:
        with self.lock:
            return sum(m == mode for m, _ in self.requests)

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: OutageServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        """Quiet: the tests read ``requests`` instead."""

    def do_POST(self) -> None:  # noqa: N802 - stdlib's name
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        mode = self.server.mode
        with self.server.lock:
            self.server.requests.append((mode, self.path))
        if mode == "hang":
            self.server.stopping.wait(self.server.hang_s)
            return  # close without a reply
        if mode in ("429", "500"):
            headers = {"Retry-After": "1"} if mode == "429" else {}
            return self._send(int(mode), {"error": {"message": f"mode {mode}"}}, headers)
        if mode == "garbage":
            return self._raw(200, b"<html>upstream proxy error</html>", "text/html")
        if mode == "no_choices":
            return self._send(200, {"id": "x", "object": "text_completion", "choices": []})
        return self._send(200, self._healthy(body))

    def _healthy(self, body: dict[str, Any]) -> dict[str, Any]:
        """A well-formed reply; completions never carry logprobs (no echo support)."""
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        if self.path.endswith("/chat/completions"):
            text = detection_answer(body["messages"][-1]["content"])
            return {"id": "c", "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": usage}
        return {"id": "c", "object": "text_completion", "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "text": detection_answer(str(body.get("prompt", "")))}],
                "usage": usage}

    def _send(self, status: int, data: dict[str, Any],
              headers: dict[str, str] | None = None) -> None:
        self._raw(status, json.dumps(data).encode(), "application/json", headers)

    def _raw(self, status: int, payload: bytes, kind: str,
             headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)


S = TypeVar("S", bound=OutageServer)


@contextmanager
def serving(server: S) -> Iterator[S]:
    """Run ``server`` (an :class:`OutageServer` or subclass) in a daemon thread, stopped on exit."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(timeout=5)


@contextmanager
def outage_server(mode: str = "ok", hang_s: float = 5.0) -> Iterator[OutageServer]:
    """A running :class:`OutageServer`, stopped on exit."""
    with serving(OutageServer(mode, hang_s)) as server:
        yield server
