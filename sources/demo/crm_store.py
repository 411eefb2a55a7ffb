"""The CRM's storage: customers in one SQLite file, and the idempotency keys of its writes.

    seed_crm(db_path, estate)        (re)create the file with the estate's customers
    CustomerStore(db_path)
    ├── get_many(ids)                the customers asked for, in that order
    ├── search(q, limit, offset)     a page of matches and their total
    └── patch(id, fields, ...)       BEGIN IMMEDIATE -> replay by key? -> If-Match -> update
                                     -> remember the key's response -> COMMIT

Every write bumps `updated_at` and a revision; the ETag is a digest of the record and revision.
Only applied writes are remembered by key: after a 412 or 404 the same key may be retried.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

from sources.demo.data import Customer, Estate

Json = dict[str, Any]

_SCHEMA = """
DROP TABLE IF EXISTS customers;
DROP TABLE IF EXISTS idempotency_keys;
CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    phone TEXT NOT NULL,
    region TEXT NOT NULL,
    segment TEXT NOT NULL,
    contacts TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    revision INTEGER NOT NULL
);
CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    body TEXT NOT NULL,
    etag TEXT,
    created_at TEXT NOT NULL
);
"""
_INSERT = (
    "INSERT INTO customers"
    " (id, name, email, phone, region, segment, contacts, updated_at, revision)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)"
)
_SELECT_IDS = (
    "SELECT id, name, email, phone, region, segment, contacts, updated_at, revision"
    " FROM customers WHERE id IN (SELECT value FROM json_each(:ids))"
)
# Matches ids, names and e-mails case-insensitively, Unicode included (SQLite's lower() is ASCII).
_COUNT_MATCHES = (
    "SELECT COUNT(*) FROM customers"
    " WHERE instr(casefold(id), :q) OR instr(casefold(name), :q) OR instr(casefold(email), :q)"
)
_SELECT_MATCHES = (
    "SELECT id, name, email, phone, region, segment, contacts, updated_at, revision"
    " FROM customers"
    " WHERE instr(casefold(id), :q) OR instr(casefold(name), :q) OR instr(casefold(email), :q)"
    " ORDER BY id LIMIT :limit OFFSET :offset"
)
# A PATCH never sets a field to null (validation refuses it), so NULL here means "unchanged".
_UPDATE = (
    "UPDATE customers SET name = coalesce(:name, name), email = coalesce(:email, email),"
    " phone = coalesce(:phone, phone), region = coalesce(:region, region),"
    " segment = coalesce(:segment, segment), contacts = coalesce(:contacts, contacts),"
    " updated_at = :updated_at, revision = revision + 1"
    " WHERE id = :id"
)
_PATCHABLE = ("name", "email", "phone", "region", "segment", "contacts")


@dataclass(frozen=True)
class Outcome:
    """A response the store decided on, kept verbatim for idempotent replays."""

    status: int
    body: Json
    etag: str | None = None
    replayed: bool = False


def seed_crm(db_path: Path, estate: Estate) -> None:
    """Create (or re-create) the CRM's SQLite file with the estate's customers."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with _connect(db_path) as connection:
        # WAL lets readers go on while a PATCH writes; it is a property of the file, set once.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(_SCHEMA)
        connection.execute("BEGIN")
        connection.executemany(_INSERT, [_customer_row(customer) for customer in estate.customers])
        connection.execute("COMMIT")


class CustomerStore:
    """Customers in the SQLite file; one short-lived connection per call, so any thread may call."""

    def __init__(self, db_path: Path) -> None:
        self._db_path = db_path

    def get_many(self, ids: Sequence[str]) -> list[Json]:
        """The customers with these ids, in the order asked, skipping unknown ones."""
        if not ids:
            return []
        with _connect(self._db_path) as connection:
            rows = connection.execute(_SELECT_IDS, {"ids": json.dumps(list(ids))}).fetchall()
        by_id = {row["id"]: _customer_json(row) for row in rows}
        return [by_id[customer_id] for customer_id in ids if customer_id in by_id]

    def search(self, q: str, *, limit: int, offset: int) -> tuple[list[Json], int]:
        """One page of the customers matching `q`, ordered by id, and how many match in all."""
        params = {"q": q.casefold(), "limit": limit, "offset": offset}
        with _connect(self._db_path) as connection:
            total = connection.execute(_COUNT_MATCHES, params).fetchone()[0]
            rows = connection.execute(_SELECT_MATCHES, params).fetchall()
        return [_customer_json(row) for row in rows], int(total)

    def patch(
        self, customer_id: str, fields: Json, if_match: str | None, idempotency_key: str | None
    ) -> Outcome:
        """Apply `fields` once per idempotency key, only if the If-Match tag is still current."""
        request_hash = _digest({"customer_id": customer_id, "fields": fields})
        with _connect(self._db_path) as connection, _immediate(connection):
            if idempotency_key is not None:
                earlier = _recall(connection, idempotency_key, request_hash)
                if earlier is not None:
                    return earlier
            outcome = _apply(connection, customer_id, fields, if_match)
            # A refused write changed nothing, so its key stays free for a corrected retry.
            if idempotency_key is not None and outcome.status == HTTPStatus.OK:
                _remember(connection, idempotency_key, request_hash, outcome)
            return outcome


def _apply(
    connection: sqlite3.Connection, customer_id: str, fields: Json, if_match: str | None
) -> Outcome:
    found = _fetch(connection, customer_id)
    if found is None:
        return Outcome(HTTPStatus.NOT_FOUND, {"error": "not_found"})
    if if_match is not None and not _matches(if_match, found["etag"]):
        body = {"error": "precondition_failed", "etag": found["etag"]}
        return Outcome(HTTPStatus.PRECONDITION_FAILED, body, etag=found["etag"])
    values: dict[str, object] = {name: fields.get(name) for name in _PATCHABLE}
    if "contacts" in fields:
        values["contacts"] = json.dumps(fields["contacts"])
    values |= {"updated_at": _next_update_time(found["updated_at"]), "id": customer_id}
    connection.execute(_UPDATE, values)
    updated = _fetch(connection, customer_id)
    assert updated is not None  # the row was read in this same write transaction
    return Outcome(HTTPStatus.OK, updated, etag=updated["etag"])


def _fetch(connection: sqlite3.Connection, customer_id: str) -> Json | None:
    row = connection.execute(_SELECT_IDS, {"ids": json.dumps([customer_id])}).fetchone()
    return None if row is None else _customer_json(row)


def _recall(connection: sqlite3.Connection, key: str, request_hash: str) -> Outcome | None:
    """The stored outcome for a key; a key reused for a different request is refused."""
    row = connection.execute(
        "SELECT request_hash, status_code, body, etag FROM idempotency_keys WHERE key = ?", (key,)
    ).fetchone()
    if row is None:
        return None
    if row["request_hash"] != request_hash:
        body = {"error": "idempotency_key_reused", "detail": "the key was used for another request"}
        return Outcome(HTTPStatus.UNPROCESSABLE_ENTITY, body)
    return Outcome(row["status_code"], json.loads(row["body"]), etag=row["etag"], replayed=True)


def _remember(
    connection: sqlite3.Connection, key: str, request_hash: str, outcome: Outcome
) -> None:
    connection.execute(
        "INSERT INTO idempotency_keys (key, request_hash, status_code, body, etag, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            key,
            request_hash,
            int(outcome.status),
            json.dumps(outcome.body),
            outcome.etag,
            datetime.now(UTC).isoformat(),
        ),
    )


def _customer_row(customer: Customer) -> tuple[str, ...]:
    contacts = [vars(contact) for contact in customer.contacts]
    return (
        customer.id,
        customer.name,
        customer.email,
        customer.phone,
        customer.region,
        customer.segment,
        json.dumps(contacts),
        customer.updated_at.astimezone(UTC).isoformat(),
    )


def _customer_json(row: sqlite3.Row) -> Json:
    customer: Json = {
        "id": row["id"],
        "name": row["name"],
        "email": row["email"],
        "phone": row["phone"],
        "region": row["region"],
        "segment": row["segment"],
        "contacts": json.loads(row["contacts"]),
        "updated_at": row["updated_at"],
    }
    # The revision makes the tag change on every write, even one that restores old values.
    customer["etag"] = _digest({**customer, "revision": row["revision"]})[:20]
    return customer


def _matches(if_match: str, etag: str) -> bool:
    """Whether an If-Match header names the current tag (quoted or not, weak or strong, or *)."""
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")}
    return "*" in tags or etag in tags


def _next_update_time(previous: str) -> str:
    """Now, in UTC, but always later than the previous value, so every write moves the clock."""
    now = datetime.now(UTC)
    earlier = datetime.fromisoformat(previous)
    return max(now, earlier + timedelta(microseconds=1)).isoformat()


def _digest(value: Json) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@contextmanager
def _connect(db_path: Path) -> Iterator[sqlite3.Connection]:
    # Autocommit mode: transactions are opened explicitly where a call needs one.
    connection = sqlite3.connect(db_path, timeout=10, isolation_level=None)
    try:
        connection.row_factory = sqlite3.Row
        connection.create_function("casefold", 1, _casefold, deterministic=True)
        yield connection
    finally:
        connection.close()


@contextmanager
def _immediate(connection: sqlite3.Connection) -> Iterator[None]:
    """A write transaction taken up front, so two PATCHes with one key cannot both apply."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _casefold(value: object) -> str:
    return str(value).casefold()
