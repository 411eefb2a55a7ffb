"""Console sessions: a signed-in person, held in the gateway's database, not in the process.

    sign in   API key -> principal (humans only) -> random token; the row keeps only its
              SHA-256, the principal, a CSRF token and an expiry 8 h on
    request   cookie token -> sha256 -> row still unexpired -> the session
    sign out  the row is deleted: the cookie is worthless from then on
    ended     an expired row is kept `KEPT_ENDED` longer, worthless for signing in, so that
              a form posted after it ended still proves whose it was (drafts.py)

Rows live in the gateway's database, so every replica behind a load balancer knows them.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, String, Table, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.database import metadata

LIFETIME = timedelta(hours=8)
KEPT_ENDED = timedelta(days=3)  # a tab left open over a weekend still keeps its draft

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("principal", String(64), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """One signed-in person."""

    principal: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Opened:
    """A new session and the token its cookie carries (never stored)."""

    token: str
    session: ConsoleSession


def token_digest(token: str) -> str:
    """What the database holds instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _utc(value: datetime) -> datetime:
    # SQLite hands back the naive UTC wall time we stored; PostgreSQL an aware datetime.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def open_session(engine: AsyncEngine, principal: str, *, now: datetime) -> Opened:
    """Start a session for `principal`, clearing expired ones on the way."""
    token = secrets.token_urlsafe(32)
    session = ConsoleSession(principal, secrets.token_urlsafe(32), now, now + LIFETIME)
    async with engine.begin() as connection:
        await connection.execute(
            delete(console_sessions).where(console_sessions.c.expires_at < now - KEPT_ENDED)
        )
        await connection.execute(
            console_sessions.insert().values(
                token_sha256=token_digest(token),
                principal=session.principal,
                csrf_token=session.csrf_token,
                created_at=session.created_at,
                expires_at=session.expires_at,
            )
        )
    return Opened(token, session)


async def find_session(engine: AsyncEngine, token: str, *, now: datetime) -> ConsoleSession | None:
    """The unexpired session a cookie token names, or None."""
    session = await any_session(engine, token)
    return session if session is not None and session.expires_at > now else None


async def any_session(engine: AsyncEngine, token: str) -> ConsoleSession | None:
    """The session a cookie token names, ended or not (never to sign anyone in with)."""
    query = select(console_sessions).where(console_sessions.c.token_sha256 == token_digest(token))
    async with engine.connect() as connection:
        row = (await connection.execute(query)).first()
    if row is None:
        return None
    return ConsoleSession(row.principal, row.csrf_token, _utc(row.created_at), _utc(row.expires_at))


async def close_session(engine: AsyncEngine, token: str) -> None:
    """End a session: its row is deleted."""
    async with engine.begin() as connection:
        await connection.execute(
            delete(console_sessions).where(console_sessions.c.token_sha256 == token_digest(token))
        )
