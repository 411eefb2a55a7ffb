"""`gatehouse audit ledger`: the action ledger, one row per action, as JSONL or CSV.

    gatehouse audit ledger --format csv [--since] [--until] [--who] [--approver] [--kind]
                           [--status] [--search] [--output FILE] [--config] [--database-url]

The rows the console's ledger downloads (gateway/actions/ledger.py: amounts through each
kind's contract, so the configuration is read; personal data masked), newest first. The
copy is recorded in the trail (`audit.exported`, channel cli) as every export is. Exit 0
written, 2 a bad argument or an unreadable database, in one line.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from gateway.actions import ledger
from gateway.actions.store import Status
from gateway.app import build_services
from gateway.audit import AuditEvent, ExportFormat, export_event
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.services import Services
from gateway.settings import Settings

FILTERS = ("since", "until", "who", "approver", "kind", "status", "search")


class BadArgument(ValueError):
    """An argument that cannot be read; says which, in words."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options (`--database-url` comes from the audit commands' parent)."""
    parser.add_argument("--format", choices=("jsonl", "csv"), required=True)
    parser.add_argument("--config", type=Path, help="TOML file (default: $GATEHOUSE_CONFIG)")
    parser.add_argument("--since", help="requested at or after: ISO 8601 date or time (UTC)")
    parser.add_argument("--until", help="requested before: ISO 8601 date or time (UTC)")
    parser.add_argument("--who", help="requested by this principal, or by an agent for them")
    parser.add_argument("--approver", help="decided by this principal")
    parser.add_argument("--kind", help="only this action kind, e.g. credit_note.issue")
    parser.add_argument("--status", choices=[s.value for s in Status], help="its status now")
    parser.add_argument("--search", help="an action id, a trace id, or part of a target")
    parser.add_argument("--output", type=Path, help="file to write (default: stdout)")


def run(args: argparse.Namespace) -> int:
    """Write the ledger as asked; the exit status."""
    try:
        query = _query(args)
        settings = _settings(args)
        services = build_services(settings, load_config(settings.config))
    except (BadArgument, ConfigError) as exc:
        return _fail(str(exc))
    try:
        count = asyncio.run(_write(services, query, args))
    except (SQLAlchemyError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return _fail(f"cannot export the ledger: {first}")
    print(f"gatehouse: exported {count} actions", file=sys.stderr)
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings(**({"config": args.config} if args.config else {}))
    if args.database_url:
        settings = settings.model_copy(update={"database_url": args.database_url})
    # Connecting would create an empty SQLite file where the path was mistyped.
    url = make_url(settings.database_url)
    path = url.database
    in_file = url.get_backend_name() == "sqlite" and path not in (None, "", ":memory:")
    if in_file and not Path(str(path)).is_file():
        raise BadArgument(f"no database file at {path}")
    return settings


def _query(args: argparse.Namespace) -> ledger.Query:
    return ledger.Query(
        search=args.search,
        who=args.who,
        approver=args.approver,
        kind=args.kind,
        status=args.status,
        since=_instant(args.since, "--since"),
        until=_instant(args.until, "--until"),
    )


def _instant(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadArgument(f"{flag}: {text!r} is not an ISO 8601 date or time") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def _write(services: Services, query: ledger.Query, args: argparse.Namespace) -> int:
    fmt: ExportFormat = args.format
    try:
        records = [
            ledger.record(entry, services.catalog)
            async for entry in ledger.every(services.engine, query)
        ]
        with _output(args.output) as out:
            out.write(ledger.written(records, fmt))
        await services.audit.append(_event(args, fmt, len(records)))
    finally:
        await services.close()
    return len(records)


def _event(args: argparse.Namespace, fmt: ExportFormat, rows: int) -> AuditEvent:
    asked = {name: value for name in FILTERS if (value := getattr(args, name))}
    return export_event(
        principal="gatehouse",
        principal_kind="system",
        on_behalf_of=None,
        channel="cli",
        trace_id=uuid.uuid4().hex,
        export="ledger",
        format=fmt,
        filters=asked,
        rows=rows,
        os_user=_os_user(),
        host=socket.gethostname(),
        output=str(args.output) if args.output else "stdout",
    )


@contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8", newline="") as file:
        yield file


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid may have no name
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _fail(message: str) -> int:
    print(f"gatehouse: {message}", file=sys.stderr)
    return 2
