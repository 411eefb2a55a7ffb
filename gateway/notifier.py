"""Owners and approvers in the loop: the notices, the sender and the alerts, run together.

Every `[notify] every` seconds: owe the notices of new audit events, then deliver what is
due. Every ALERT_EVERY seconds: warn approvers of windows about to close, and look at the
alert conditions. Each part is safe on any number of replicas (see their modules).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.actions.store import Action
from gateway.alerts import Alerts, Condition
from gateway.catalog import Catalog
from gateway.channels import EMAIL, build_channels
from gateway.config import GatewayConfig
from gateway.counters import Windows
from gateway.notices import Notices
from gateway.reads import Reads
from gateway.sender import Sender
from sources.connector import Connector

log = logging.getLogger("gatehouse.notifications")

ALERT_EVERY = 15.0  # seconds between looks at the alert conditions and expiring approvals
EMAIL_RATE = "120/minute"  # people's own addresses, through the one mail server
COALESCE = 0.05  # seconds a woken round waits for the writes right behind the first


class Notifier:
    """Notices, sender and alerts of one process."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        config: GatewayConfig,
        catalog: Catalog,
        reads: Reads,
        connectors: dict[str, Connector],
        approvers_for: Callable[[Action], list[str]],
        clock: Callable[[], datetime],
        windows: Windows,
        on_delivery: Callable[[str, str], None] = lambda channel, outcome: None,
        conditions: list[Condition] | None = None,
    ) -> None:
        notify = config.notify
        self._client = httpx.AsyncClient(timeout=notify.timeout, follow_redirects=False)
        channels = build_channels(
            config.channels, notify.smtp, self._client, timeout=notify.timeout
        )
        rates = {name: channel.rate for name, channel in config.channels.items()}
        rates[EMAIL] = EMAIL_RATE
        self.notices = Notices(
            engine=engine,
            config=config,
            catalog=catalog,
            approvers_for=approvers_for,
            reads=reads,
            clock=clock,
        )
        self.sender = Sender(
            engine=engine,
            channels=channels,
            rates=rates,
            config=notify,
            windows=windows,
            clock=clock,
            on_delivery=on_delivery,
        )
        self.alerts = Alerts(
            engine=engine,
            config=config,
            catalog=catalog,
            reads=reads,
            connectors=connectors,
            clock=clock,
            conditions=conditions,
        )
        self._every = notify.every
        self._woken = asyncio.Event()

    async def start(self) -> None:
        """Before the first round: where reading the audit trail begins."""
        await self.notices.start()

    async def round(self) -> None:
        """Owe, then deliver: what a write just caused goes out in this same round."""
        await self.notices.fan_out()
        await self.sender.deliver_due()

    async def watch(self) -> None:
        """Warn of closing approval windows and keep the alerts."""
        await self.notices.warn_expiring()
        await self.alerts.round()

    def wake(self) -> None:
        """A write of this process changed an action: go round now rather than at the next
        tick (another replica's writes are seen at the tick)."""
        self._woken.set()

    async def run_forever(self) -> None:
        """The rounds, until cancelled; a failing round is logged and the next one runs."""
        last_watch = 0.0
        while True:
            self._woken.clear()
            await _logged(self.round, "notifications round")
            if time.monotonic() - last_watch >= ALERT_EVERY:
                last_watch = time.monotonic()
                await _logged(self.watch, "alerts round")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout=self._every)
                # A burst of writes is told in one round, not one round per write.
                await asyncio.sleep(COALESCE)

    async def close(self) -> None:
        """Release the HTTP client and the alerts' lead."""
        await self.alerts.close()
        await self._client.aclose()


async def _logged(chore: Callable[[], Awaitable[object]], name: str) -> None:
    try:
        await chore()
    except Exception:
        log.exception("%s failed", name)
