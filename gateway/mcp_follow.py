"""Following an action to its end without polling: MCP `subscriptions/listen` on its resource.

    gatehouse://actions/{action_id}   the action as get_action answers it

    a write answers PENDING_APPROVAL, naming the action's resource in `follow`
      1. the client listens for updates of that resource (the SDK's `Client.listen`)
      2. while anyone listens, this process looks at the actions table every second and
         announces each action changed since it last looked (`notifications/resources/
         updated`): a decision taken in another worker, in the console or before a restart
         reaches the listener as well as one taken here
      3. the client reads the resource: APPLIED, REJECTED, EXPIRED or FAILED, with history

Nothing is replayed: a client whose stream dropped (a restart) listens again and reads the
resource once, which tells it whatever happened meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from mcp import types
from mcp.server import ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourceUpdated

from gateway.actions.store import changed_since
from gateway.services import Services

ACTION_PREFIX = "gatehouse://actions/"
TEMPLATE = types.ResourceTemplate(
    uri_template=ACTION_PREFIX + "{action_id}",
    name="action",
    title="An action of yours",
    description="A write you asked for, as get_action answers it; listen for its updates "
    "to learn when a pending one is decided.",
    mime_type="application/json",
)
# Changes stamped by another process's clock can land a little in the past: look back this
# far each time, and announce each (action, change) once.
_OVERLAP = timedelta(seconds=5)

log = logging.getLogger("gatehouse.mcp")


def action_uri(action_id: str) -> str:
    """The resource of one action."""
    return ACTION_PREFIX + action_id


def action_id(uri: str) -> str | None:
    """The action a resource URI names, or None when it names none."""
    found = uri.removeprefix(ACTION_PREFIX)
    return found if found != uri and found else None


def _aware(at: datetime) -> datetime:
    # SQLite gives back the UTC times it was given without their zone.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class ActionFeed:
    """Serves `subscriptions/listen`, announcing changed actions while anyone listens."""

    def __init__(self, services: Callable[[], Services], every: float = 1.0) -> None:
        self._services = services
        self._every = every
        self._bus = InMemorySubscriptionBus()
        self._handler = ListenHandler(self._bus)
        self._listening = 0
        self._watcher: asyncio.Task[None] | None = None

    async def listen(
        self, context: ServerRequestContext[Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        """One listen stream, for as long as the client keeps it open."""
        async with self._watching():
            return await self._handler(context, params)

    @contextlib.asynccontextmanager
    async def _watching(self) -> AsyncIterator[None]:
        self._listening += 1
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch())
        try:
            yield
        finally:
            self._listening -= 1
            if self._listening == 0 and self._watcher is not None:
                self._watcher.cancel()

    async def _watch(self) -> None:
        since = datetime.now(UTC)
        # What changed before anyone listened is no news: a listener reads the resource once.
        announced = await self._changes(since)
        while True:
            await asyncio.sleep(self._every)
            try:
                changes = await self._changes(since)
            except Exception:  # the database is away for a moment: look again next time
                log.warning("could not read changed actions for listeners", exc_info=True)
                continue
            for action, _ in changes - announced:
                await self._bus.publish(ResourceUpdated(action_uri(action)))
            announced = changes
            since = max([since, *(at for _, at in changes)])

    async def _changes(self, since: datetime) -> set[tuple[str, datetime]]:
        """The (action, change time) pairs from a little before `since` on."""
        async with self._services().engine.connect() as connection:
            changes = await changed_since(connection, since - _OVERLAP)
        return {(action, _aware(at)) for action, at in changes}
