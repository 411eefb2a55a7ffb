"""Console sessions: a signed-in person, held in the gateway's database, not in the process.

    sign in   API key -> principal (humans only) -> random token; the row keeps only its
              SHA-256, the principal, a CSRF token and an expiry 8 h on; a single sign-on
              keeps the provider's ID token beside it, for signing out there (signout.py)
    request   cookie token -> sha256 -> row still unexpired -> the session
    sign out  the row is deleted (its ID token with it, handed back): the cookie is
              worthless from then on
    ended     an expired row is kept `KEPT_ENDED` longer, worthless for signing in, so that
              a form posted after it ended still proves whose it was (drafts.py)

Rows live in the gateway's database, so every replica behind a load balancer knows them.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, ForeignKey, String, Table, Text, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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

# The ID token the provider issued when a single sign-on opened the session: its end-session
# endpoint asks for it back (id_token_hint, OpenID Connect RP-Initiated Logout 1.0). A table
# of its own rather than a column: create_schema adds a missing table to an existing
# database, where a missing column would refuse to start (SchemaOutdated).
console_id_tokens = Table(
    "console_id_tokens",
    metadata,
    Column(
        "token_sha256",
        String(64),
        ForeignKey("console_sessions.token_sha256", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("id_token", Text, nullable=False),
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


async def open_session(
    engine: AsyncEngine, principal: str, *, now: datetime, id_token: str | None = None
) -> Opened:
    """Start a session for `principal` (with the ID token of the single sign-on that opened
    it, if one did), clearing expired ones on the way."""
    token = secrets.token_urlsafe(32)
    session = ConsoleSession(principal, secrets.token_urlsafe(32), now, now + LIFETIME)
    async with engine.begin() as connection:
        await _clear_expired(connection, now)
        await connection.execute(
            console_sessions.insert().values(
                token_sha256=token_digest(token),
                principal=session.principal,
                csrf_token=session.csrf_token,
                created_at=session.created_at,
                expires_at=session.expires_at,
            )
        )
        if id_token is not None:
            await connection.execute(
                console_id_tokens.insert().values(
                    token_sha256=token_digest(token), id_token=id_token
                )
            )
    return Opened(token, session)


async def _clear_expired(connection: AsyncConnection, now: datetime) -> None:
    # An expired session is never signed out of: its ID token goes at once, while the row
    # stays `KEPT_ENDED` for the drafts (and takes any ID token left with it, by cascade).
    expired = select(console_sessions.c.token_sha256).where(console_sessions.c.expires_at < now)
    await connection.execute(
        delete(console_id_tokens).where(console_id_tokens.c.token_sha256.in_(expired))
    )
    await connection.execute(
        delete(console_sessions).where(console_sessions.c.expires_at < now - KEPT_ENDED)
    )


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


async def close_session(engine: AsyncEngine, token: str) -> str | None:
    """End a session: its row is deleted. The ID token kept with it, if a single sign-on
    opened it, comes back (and is gone from the database)."""
    digest = token_digest(token)
    taken = (
        delete(console_id_tokens)
        .where(console_id_tokens.c.token_sha256 == digest)
        .returning(console_id_tokens.c.id_token)
    )
    async with engine.begin() as connection:
        id_token: str | None = (await connection.execute(taken)).scalar_one_or_none()
        await connection.execute(
            delete(console_sessions).where(console_sessions.c.token_sha256 == digest)
        )
    return id_token
