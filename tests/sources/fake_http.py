"""A real HTTP server on loopback that gives canned answers: malformed, failing or slow.

Only for what the real CRM never does; everything else is tested against the CRM process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """The answer to every GET: a status, a body (bytes as is, anything else as JSON), a delay."""

    status: int = 200
    body: Any = b""
    delay: float = 0.0

    def content(self) -> bytes:
        """The body as bytes on the wire."""
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, replies: tuple[Reply, ...]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies = list(replies)
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def next_reply(self) -> Reply:
        """The replies in order, the last one for good."""
        with self.lock:
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up on a slow answer closes its end: expected, not worth a traceback.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        reply = self.server.next_reply()
        if reply.delay and self.server.stopping.wait(reply.delay):
            return
        content = reply.content()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def fake_http(*replies: Reply) -> Iterator[str]:
    """Serve `replies` in turn (the last one from then on) on a free loopback port for the
    block; yield the base URL."""
    server = _Server(replies)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
