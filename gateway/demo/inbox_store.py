"""The inbox's storage: e-mails and webhook requests in one SQLite file, kept across restarts.

    InboxStore(db_path)
    ├── add_mail(raw, envelope, ...)       a message as SMTP delivered it (raw bytes kept)
    ├── mails()                            every message, oldest first, parsed on the way out
    ├── add_request(name, method, ...)     a webhook request and the status it was answered
    ├── requests(name)                     one hook's requests (or every hook's), oldest first
    └── clear_mails() / clear_requests(name)

Raw bytes are what is stored, so a parsing mistake never loses a message: `Mail` parses them
when read. Everything runs on the inbox's one event loop thread, so one connection serves it all.
"""

from __future__ import annotations

import email
import email.policy
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

Json = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mails (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    envelope_from TEXT NOT NULL,
    envelope_to TEXT NOT NULL,
    tls INTEGER NOT NULL,
    login TEXT,
    raw BLOB NOT NULL,
    peer TEXT
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    received_at TEXT NOT NULL,
    method TEXT NOT NULL,
    query TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    status INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_name ON requests (name, id);
"""


@dataclass(frozen=True)
class Mail:
    """One e-mail as received: the SMTP envelope, how it came, and its parsed content."""

    id: int
    received_at: str
    envelope_from: str
    envelope_to: list[str]
    tls: bool
    login: str | None
    raw: bytes
    peer: str | None  # the client's address and port: one per SMTP connection

    def to_json(self) -> Json:
        """The message as `GET /api/messages` shows it."""
        message = _parse(self.raw)
        return {
            "id": self.id,
            "received_at": self.received_at,
            "envelope_from": self.envelope_from,
            "envelope_to": self.envelope_to,
            "tls": self.tls,
            "login": self.login,
            "peer": self.peer,
            "from": str(message.get("From", "")),
            "to": str(message.get("To", "")),
            "subject": str(message.get("Subject", "")),
            "date": str(message.get("Date", "")),
            "text": _body(message, "plain"),
            "html": _body(message, "html"),
            "headers": _header_dict([(k, str(v)) for k, v in message.items()]),
            "size": len(self.raw),
        }


@dataclass(frozen=True)
class HookRequest:
    """One request a webhook received, and the status code it was answered."""

    id: int
    name: str
    received_at: str
    method: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    status: int

    def to_json(self) -> Json:
        """The request as `GET /api/hooks/{name}` shows it."""
        text = self.body.decode(errors="replace")
        return {
            "id": self.id,
            "name": self.name,
            "received_at": self.received_at,
            "method": self.method,
            "query": self.query,
            "headers": _header_dict(self.headers),
            "body": text,
            "json": _json_or_none(text),
            "status": self.status,
        }


class InboxStore:
    """The SQLite file at `db_path`, created on first use."""

    def __init__(self, db_path: Path) -> None:
        # Autocommit: every write is one statement, durable once it returns.
        self._db = sqlite3.connect(db_path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(mails)")}
        if "peer" not in columns:  # an inbox kept from before connections were noted
            self._db.execute("ALTER TABLE mails ADD COLUMN peer TEXT")

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def add_mail(
        self,
        raw: bytes,
        *,
        envelope_from: str,
        envelope_to: list[str],
        tls: bool,
        login: str | None,
        peer: str | None = None,
    ) -> int:
        """Keep one delivered message; its id."""
        cursor = self._db.execute(
            "INSERT INTO mails (received_at, envelope_from, envelope_to, tls, login, raw, peer)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (_now(), envelope_from, json.dumps(envelope_to), tls, login, raw, peer),
        )
        return _rowid(cursor)

    def mails(self) -> list[Mail]:
        """Every message, oldest first."""
        rows = self._db.execute(
            "SELECT id, received_at, envelope_from, envelope_to, tls, login, raw, peer"
            " FROM mails ORDER BY id"
        )
        return [
            Mail(i, at, sender, json.loads(to), bool(tls), login, raw, peer)
            for i, at, sender, to, tls, login, raw, peer in rows
        ]

    def clear_mails(self) -> None:
        """Forget every message."""
        self._db.execute("DELETE FROM mails")

    def add_request(
        self,
        name: str,
        *,
        method: str,
        query: str,
        headers: list[tuple[str, str]],
        body: bytes,
        status: int,
    ) -> int:
        """Keep one webhook request and the status it is answered; its id."""
        cursor = self._db.execute(
            "INSERT INTO requests (name, received_at, method, query, headers, body, status)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, _now(), method, query, json.dumps(headers), body, status),
        )
        return _rowid(cursor)

    def requests(self, name: str | None = None) -> list[HookRequest]:
        """One hook's requests, or every hook's when `name` is None; oldest first."""
        # A NULL name matches every hook.
        rows = self._db.execute(
            "SELECT id, name, received_at, method, query, headers, body, status FROM requests"
            " WHERE ?1 IS NULL OR name = ?1 ORDER BY id",
            (name,),
        )
        return [
            HookRequest(i, hook, at, method, query, _pairs(headers), body, status)
            for i, hook, at, method, query, headers, body, status in rows
        ]

    def clear_requests(self, name: str | None = None) -> None:
        """Forget one hook's requests, or every hook's when `name` is None."""
        if name is None:
            self._db.execute("DELETE FROM requests")
        else:
            self._db.execute("DELETE FROM requests WHERE name = ?", (name,))


def _parse(raw: bytes) -> EmailMessage:
    # policy.default gives an EmailMessage (get_body, decoded headers) rather than the legacy API.
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)  # what policy.default always builds
    return message


def _body(message: EmailMessage, subtype: str) -> str | None:
    """The text of the message's `text/<subtype>` body, or None if it has none."""
    part = message.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken transfer encoding
        payload = part.get_payload(decode=True)
        content = payload.decode(errors="replace") if isinstance(payload, bytes) else ""
    # SMTP carries CRLF line ends; a reader (and a test) expects Python's "\n".
    return content.replace("\r\n", "\n") if isinstance(content, str) else None


def _header_dict(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Headers by lowercased name; a repeated header's values joined with ", " (as HTTP does)."""
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _pairs(headers: str) -> list[tuple[str, str]]:
    return [(name, value) for name, value in json.loads(headers)]


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _rowid(cursor: sqlite3.Cursor) -> int:
    assert cursor.lastrowid is not None  # set by every INSERT
    return cursor.lastrowid


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
