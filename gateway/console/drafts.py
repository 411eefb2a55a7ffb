"""A comment being typed when the session ended, kept until its author signs in again.

    POST approve | reject, the session ended, the form that session's own (its CSRF token)
      -> the text kept: a row with the SHA-256 of a random token, the person, the action,
         the verb, the text, an expiry `LIFETIME` on -> cookie gatehouse_draft (HttpOnly,
         SameSite=Strict, Path=/console) -> "Your session ended; sign in again to continue"
    sign in again (API key or single sign-on) as the same person -> the action page, the
      text back in its box, once: the row is deleted as it is shown

A form from no session, or from another session, keeps nothing: a page elsewhere cannot
plant words in someone's comment box.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Column, DateTime, String, Table, Text, delete
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.console.sessions import token_digest
from gateway.database import metadata

COOKIE = "gatehouse_draft"
LIFETIME = timedelta(hours=1)  # time enough to sign in again, at the provider too
# The forms whose text is kept, and the field each one's text is in.
FIELDS = {"approve": "comment", "reject": "reason"}
DECISION = re.compile(r"^/console/actions/([^/]{1,64})/(approve|reject)$")

console_drafts = Table(
    "console_drafts",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("principal", String(64), nullable=False),
    Column("action_id", String(64), nullable=False),
    Column("verb", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)


@dataclass(frozen=True, slots=True)
class Draft:
    """What someone had typed into one of an action's forms."""

    verb: str  # approve | reject
    text: str


async def keep(
    engine: AsyncEngine, *, principal: str, action_id: str, draft: Draft, now: datetime
) -> str:
    """Keep `draft` for `principal`; the token its cookie carries (never stored)."""
    token = secrets.token_urlsafe(32)
    async with engine.begin() as connection:
        await connection.execute(delete(console_drafts).where(console_drafts.c.expires_at < now))
        await connection.execute(
            console_drafts.insert().values(
                token_sha256=token_digest(token),
                principal=principal,
                action_id=action_id,
                verb=draft.verb,
                text=draft.text,
                expires_at=now + LIFETIME,
            )
        )
    return token


async def take(
    engine: AsyncEngine, token: str, *, principal: str, action_id: str, now: datetime
) -> Draft | None:
    """The draft `token` names for this person and action, deleted as it is taken."""
    table = console_drafts.c
    taken = (
        delete(console_drafts)
        .where(table.token_sha256 == token_digest(token))
        .where(table.principal == principal)
        .where(table.action_id == action_id)
        .where(table.expires_at > now)
        .returning(table.verb, table.text)
    )
    async with engine.begin() as connection:
        row = (await connection.execute(taken)).first()
    return None if row is None else Draft(row.verb, row.text)
