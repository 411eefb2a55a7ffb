"""Leases on in-flight actions: how a crash is told from a write that is still working.

The claim that stores an action (RECEIVED, or EXECUTING once approved or retried) gives it
`lease_until`; while this process works on it, `Leases.renew` pushes that on, for all its
in-flight actions in one statement, every third of the lease. A process that dies stops
renewing: once the lease has passed, recovery on any replica (or a replay of the key)
takes the action over. No write pays a commit for this; the claim is the marker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.database import actions

log = logging.getLogger("gatehouse.leases")

_RENEW = (
    update(actions)
    .where(
        and_(actions.c.id.in_(bindparam("ids", expanding=True)), actions.c.lease_until.is_not(None))
    )
    .values(lease_until=bindparam("until"))
)


class Leases:
    """The actions this process is working on, and their renewal."""

    def __init__(self, engine: AsyncEngine, *, seconds: float, clock: Callable[[], datetime]):
        self._engine = engine
        self.seconds = seconds
        self._clock = clock
        self._held: set[str] = set()

    def until(self) -> datetime:
        """When a lease taken now runs out."""
        return self._clock() + timedelta(seconds=self.seconds)

    def hold(self, action_id: str) -> None:
        """This process works on `action_id` now."""
        self._held.add(action_id)

    def release(self, action_id: str) -> None:
        """This process is done with `action_id`."""
        self._held.discard(action_id)

    async def renew(self) -> int:
        """Push every held lease on; how many actions this process holds."""
        held = list(self._held)
        if held:
            async with self._engine.begin() as connection:
                await connection.execute(_RENEW, {"ids": held, "until": self.until()})
        return len(held)

    async def renew_forever(self) -> None:
        """Renew every third of the lease until cancelled; a failed renewal is tried again."""
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                await self.renew()
            except Exception:
                log.exception("renewing leases failed")
