"""A seeded Tryton over PostgreSQL: the template made once, copied for each server.

The template is named by the seed's fingerprint and stays on the server, so only the
first run on a machine (or after the seed changes) pays for seeding it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gateway.services import Services
from sources.tryton import TrytonRpc
from sources.tryton_estate.server import (
    TrytonDatabase,
    TrytonServer,
    copy_postgres_template,
    drop_postgres_database,
    seeded_postgres_template,
)
from tests.factories import require_postgres
from tests.tryton.estate import PASSWORD, USER, governed_tryton

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/"

ServerFactory = Callable[..., TrytonServer]


@pytest.fixture(scope="session")
def tryton_template() -> str:
    """The seeded PostgreSQL template database (made on first use, then reused)."""
    require_postgres()
    return seeded_postgres_template(PG_SERVER, password=PASSWORD)


@pytest.fixture(scope="module")
def tryton_server(tryton_template: str) -> Iterator[TrytonServer]:
    """One trytond over a fresh copy of the template, shared by a module's tests."""
    name = f"gh_tryton_{uuid.uuid4().hex[:10]}"
    database: TrytonDatabase = copy_postgres_template(PG_SERVER, tryton_template, name)
    try:
        with TrytonServer.start(database) as server:
            yield server
    finally:
        drop_postgres_database(PG_SERVER, name)


@pytest.fixture
def tryton_servers(tryton_server: TrytonServer) -> Iterator[ServerFactory]:
    """Start more trytond processes over the module server's database (to kill, or to
    configure differently); all stopped after the test."""
    started: list[TrytonServer] = []

    def start(**options: Any) -> TrytonServer:
        started.append(TrytonServer.start(tryton_server.database, **options))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def rpc_for(server: TrytonServer, **options: Any) -> TrytonRpc:
    """A client of `server` as the seeded non-privileged user."""
    defaults: dict[str, Any] = {"user": USER, "password": PASSWORD, "timeout": 10.0}
    return TrytonRpc(
        "tryton", url=server.url, database=server.database.name, **(defaults | options)
    )


@pytest.fixture
async def rpc(tryton_server: TrytonServer) -> AsyncIterator[TrytonRpc]:
    """A logged-in client of the module's server."""
    async with rpc_for(tryton_server) as client:
        await client.login()
        yield client


@dataclass
class StubTryton:
    """A tiny HTTP server standing in for Tryton, answering what a test tells it to."""

    url: str
    answers: list[tuple[int, str, bytes]] = field(default_factory=list)  # status, type, body
    delay: float = 0.0
    methods: list[str] = field(default_factory=list)

    def answer_json(self, body: Any, status: int = 200) -> None:
        """Queue a JSON answer (the last one queued repeats)."""
        self.answers.append((status, "application/json", json.dumps(body).encode()))

    def answer(self, status: int, content_type: str, body: bytes) -> None:
        """Queue a raw answer (the last one queued repeats)."""
        self.answers.append((status, content_type, body))


@pytest.fixture
def stub_tryton() -> Iterator[StubTryton]:
    """A stub Tryton on a free loopback port."""
    stub = StubTryton(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            stub.methods.append(str(body.get("method")))
            time.sleep(stub.delay)
            status, content_type, payload = (
                stub.answers.pop(0) if len(stub.answers) > 1 else stub.answers[0]
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="stub-tryton", daemon=True
    )
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def server(tryton_servers: ServerFactory) -> TrytonServer:
    """A trytond process of the test's own over the module's database."""
    return tryton_servers()


@pytest.fixture
async def governed(
    server: TrytonServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Services]:
    """The gateway's services over the Tryton estate on `server`, started."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}"
    async with governed_tryton(server, url, monkeypatch) as services:
        yield services
