"""The child side of a demo service that serves one SQLite file over HTTP (the CRM, the storefront).

    python -m sources.demo.<service> --db PATH [--host 127.0.0.1] [--port 0]
    └── serve(service)   refuse a missing file -> listen -> print the ready line -> uvicorn

A service module describes itself in a `SqliteService` and its `main` calls `serve`, so every
such service starts, reports and stops alike; `ServiceProcess` (process.py) is the parent side,
which starts the child and waits for its ready line.
"""

from __future__ import annotations

import argparse
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

__all__ = ["SqliteService", "serve"]


@dataclass(frozen=True)
class SqliteService:
    """What sets one service apart: its command line, its app and what it prints."""

    # The command --help and usage errors name, e.g. "python -m sources.demo.crm".
    prog: str
    # What --help prints under the usage: the service module's docstring.
    description: str | None
    # --db's help, naming the seed function that makes the file.
    db_help: str
    # The error when --db is not a file; "{db}" stands for the path given.
    missing_db: str
    # Builds the HTTP API over the SQLite file.
    create_app: Callable[[Path], FastAPI]
    # The first stdout line, the one the parent waits for; "{url}" stands for the base URL.
    ready_line: str


def serve(service: SqliteService, argv: Sequence[str] | None = None) -> None:
    """Serve `service` until SIGTERM or SIGINT; the first stdout line says where."""
    args = _arguments(service, argv)
    if not args.db.is_file():
        # sqlite3 would quietly create an empty file and every request would then fail.
        raise SystemExit(service.missing_db.format(db=args.db))
    sock = _listen(args.host, args.port)
    config = uvicorn.Config(
        service.create_app(args.db),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    for handled in (signal.SIGTERM, signal.SIGINT):
        signal.signal(handled, _exit_cleanly)
    print(service.ready_line.format(url=f"http://{args.host}:{sock.getsockname()[1]}"), flush=True)
    with sock:
        uvicorn.Server(config).run(sockets=[sock])


def _arguments(service: SqliteService, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=service.prog,
        description=service.description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", type=Path, required=True, help=service.db_help)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS choose a free port")
    return parser.parse_args(argv)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket; SO_REUSEADDR lets a restarted service take back its port at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listening before the ready line is printed: early clients wait in the backlog, not refused.
    sock.listen(128)
    return sock


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn takes these signals while it serves and re-raises them once it has shut down;
    # ending with status 0 then tells the parent the stop was clean.
    raise SystemExit(0)
