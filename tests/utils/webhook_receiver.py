"""A real HTTP server on loopback that records every request it gets and answers the statuses it is told.

Tests wait on what it records (a condition variable), never on a fixed sleep; `connections` counts accepted
TCP connections, so a test can tell "refused before connecting" from "connected and failed".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class WebhookReceiver:
    host: str = "127.0.0.1"
    answers: list[int] = field(default_factory=list)  # statuses answered in turn; 200 once they run out
    hold: threading.Event | None = None  # set: requests wait for it before answering
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        """The first `count` requests, once that many have arrived."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} of {count} webhook requests within {timeout:.0f}s")
            return list(self.requests[:count])

    def _record(self, received: Received) -> int:
        with self._changed:
            self.requests.append(received)
            self._changed.notify_all()
            return self.answers.pop(0) if self.answers else 200

    def _connected(self) -> None:
        with self._changed:
            self.connections += 1

    @contextmanager
    def running(self) -> Iterator[WebhookReceiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver._record(Received(self.path, headers, body))
                if receiver.hold is not None:
                    receiver.hold.wait(60)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> Any:
                accepted = super().get_request()
                receiver._connected()
                return accepted

        server = Server((self.host, 0), Handler)
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            if self.hold is not None:
                self.hold.set()
            server.shutdown()
            server.server_close()
            thread.join(10)
