"""The sender: delivers what the outbox holds, paced per channel, retried with backoff.

Each round: claim due notifications (outbox.claim, a lease per row), send them (channels
in parallel, each channel's own in order, at most its `rate`), record each outcome. A
failure is retried after `backoff` doubling per attempt (with jitter, so receivers coming
back are not hit by every sender at once) up to `attempts`, then FAILED, and the channel
is marked failing, which opens an alert (alerts.py). A 410 Gone fails it at once and turns
the channel off until an operator turns it on again (`gatehouse notifications retry`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime, timedelta
from itertools import groupby

from limits import parse
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway import outbox
from gateway.channels import Channel, Parcel, Send, Undelivered
from gateway.config import NotifyConfig
from gateway.counters import Windows
from gateway.database import channel_states
from gateway.outbox import Notification

log = logging.getLogger("gatehouse.notifications")

BATCH = 100  # notifications claimed per round
GONE = "turned off: the receiver answered 410 Gone"


class Sender:
    """Delivers due notifications; any number of replicas may run one."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        channels: dict[str, Channel],
        rates: dict[str, str],
        config: NotifyConfig,
        windows: Windows,
        clock: Callable[[], datetime],
        on_delivery: Callable[[str, str], None] = lambda channel, outcome: None,
    ) -> None:
        self._engine = engine
        self._channels = channels
        self._rates = {name: parse(rate) for name, rate in rates.items()}
        self._windows = windows
        self._config = config
        self._clock = clock
        self._on_delivery = on_delivery
        # A sender that dies mid-send leaves its rows to the next after this long; each row's
        # claim is renewed just before it is sent, so a long batch keeps what it claimed.
        self._lease = config.timeout * 3 + 5

    async def deliver_due(self) -> int:
        """One round: claim, send, record. How many were delivered."""
        async with self._engine.connect() as connection:
            if not await outbox.any_due(connection, self._clock()):
                return 0
        async with self._engine.begin() as connection:
            claimed = await outbox.claim(connection, self._clock(), lease=self._lease, limit=BATCH)
            disabled = await _disabled(connection)
        by_channel = groupby(sorted(claimed, key=lambda n: n.channel), key=lambda n: n.channel)
        results = await asyncio.gather(
            *(self._send_all(name, list(batch), name in disabled) for name, batch in by_channel)
        )
        return sum(results)

    async def _send_all(self, name: str, batch: list[Notification], disabled: bool) -> int:
        sent = 0
        channel = self._channels.get(name)
        async with channel.session() if channel is not None else nullcontext() as send:
            for notification in batch:
                if disabled:
                    await self._record(notification, GONE, final=True)
                elif (wait := await self._paced(name)) is not None:
                    async with self._engine.begin() as connection:
                        await outbox.later(connection, notification, wait, None)
                elif (held := await self._hold(notification)) is not None:
                    sent += await self._send_one(held, send)
        return sent

    async def _hold(self, notification: Notification) -> Notification | None:
        until = self._clock() + timedelta(seconds=self._lease)
        async with self._engine.begin() as connection:
            return await outbox.hold(connection, notification, until)

    async def _paced(self, channel: str) -> datetime | None:
        """When the channel may take the next one, if its rate is spent now."""
        rate = self._rates.get(channel)
        if rate is None or await self._windows.hit(rate, "channel", channel):
            return None
        wait = await self._windows.reset_in(rate, "channel", channel)
        return self._clock() + timedelta(seconds=wait)

    async def _send_one(self, notification: Notification, send: Send | None) -> int:
        if send is None:  # the configuration no longer has its channel
            await self._record(notification, "no such channel in the configuration", final=True)
            return 0
        parcel = Parcel(
            notification.id, notification.message, notification.address, notification.created_at
        )
        try:
            async with asyncio.timeout(self._config.timeout + 1):
                await send(parcel)
        except Undelivered as undelivered:
            await self._record(
                notification, undelivered.reason, final=undelivered.gone, gone=undelivered.gone
            )
            return 0
        except TimeoutError:
            await self._record(notification, "the receiver did not answer in time", final=False)
            return 0
        async with self._engine.begin() as connection:
            await outbox.delivered(connection, notification, self._clock())
            await _healthy(connection, notification.channel)
        self._on_delivery(notification.channel, "delivered")
        return 1

    async def _record(
        self, notification: Notification, error: str, *, final: bool, gone: bool = False
    ) -> None:
        """A delivery that did not land: later, or FAILED when out of attempts or gone."""
        now = self._clock()
        out_of_attempts = notification.attempts >= self._config.attempts
        log.warning(
            "notification not delivered",
            extra={
                "notification_id": notification.id,
                "channel": notification.channel,
                "attempt": notification.attempts,
                "error": error,
            },
        )
        async with self._engine.begin() as connection:
            if final or out_of_attempts:
                await outbox.failed(connection, notification, error)
                await _failing(connection, notification.channel, now, error, gone=gone)
            else:
                await outbox.later(
                    connection, notification, now + self._backoff(notification), error
                )
        self._on_delivery(notification.channel, "failed" if final or out_of_attempts else "retry")

    def _backoff(self, notification: Notification) -> timedelta:
        """Exponential, capped, with full jitter over its upper half."""
        ceiling = min(
            self._config.backoff_max, self._config.backoff * 2 ** (notification.attempts - 1)
        )
        return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - jitter


async def _disabled(connection: AsyncConnection) -> set[str]:
    found = await connection.execute(
        select(channel_states.c.channel).where(channel_states.c.disabled_at.is_not(None))
    )
    return set(found.scalars())


async def _failing(
    connection: AsyncConnection, channel: str, now: datetime, error: str, *, gone: bool
) -> None:
    """The channel failed a notification for good: failing since now (if not already)."""
    insert = (postgresql if connection.dialect.name == "postgresql" else sqlite).insert
    values = {"channel": channel, "failing_since": now, "last_error": error}
    if gone:
        values["disabled_at"] = now
    changes = {"last_error": error, **({"disabled_at": now} if gone else {})}
    statement = insert(channel_states).values(values)
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=["channel"],
            set_={**changes, "failing_since": func.coalesce(channel_states.c.failing_since, now)},
        )
    )


async def _healthy(connection: AsyncConnection, channel: str) -> None:
    """A delivery landed: the channel is no longer failing (a 410 stays until re-enabled)."""
    await connection.execute(
        update(channel_states)
        .where(channel_states.c.channel == channel, channel_states.c.disabled_at.is_(None))
        .values(failing_since=None, last_error=None)
    )


async def enable(connection: AsyncConnection, channel: str, now: datetime) -> int:
    """An operator turns a channel back on and its FAILED notifications are tried again."""
    await connection.execute(
        update(channel_states)
        .where(channel_states.c.channel == channel)
        .values(disabled_at=None, failing_since=None, last_error=None)
    )
    return await outbox.requeue(connection, now, channel=channel)
