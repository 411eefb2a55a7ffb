"""Cache eviction across replicas: a write on one evicts the cached record on every one.

    replica A, a write APPLIED
      1. evicts the changed records from its own cache at once (pipeline.py)
      2. announces them in the statement that saves the outcome (`announcing`):
         pg_notify('gatehouse_evict', '<entity>:<key>') per record, delivered on commit
    every replica, A too: a listener on a connection of its own
      3. evicts each announced record from its cache
      4. if the connection drops: reconnects with backoff, then drops its whole cache,
         since whatever was announced meanwhile was missed

On SQLite the gateway is one process: step 1 is all there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import bindparam, column, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import Text

from gateway.audit import Prelude
from gateway.reads import Reads

CHANNEL = "gatehouse_evict"

log = logging.getLogger("gatehouse.invalidation")

# pg_notify for each announced record, evaluated once per row the statement changes.
_RECORDS = bindparam("announced", type_=ARRAY(Text))
_ANNOUNCE = (
    select(func.count(func.pg_notify(CHANNEL, column("record", Text))))
    .select_from(func.unnest(_RECORDS).alias("record"))
    .scalar_subquery()
)


def announcing(change: Prelude, records: Sequence[tuple[str, str]], dialect: str) -> Prelude:
    """`change`, which also has every replica evict (entity, key) `records` when committed."""
    if not records or dialect != "postgresql":
        return change
    payloads = [f"{entity}:{key}" for entity, key in records]
    return Prelude(_announcing(change.statement), {**change.params, "announced": payloads})


@functools.cache
def _announcing(statement: UpdateBase) -> UpdateBase:
    return statement.returning(_ANNOUNCE)


class Listener:
    """Evicts the records other replicas announce, over one dedicated connection."""

    def __init__(
        self,
        engine: AsyncEngine,
        reads: Reads,
        *,
        backoff: tuple[float, float] = (0.5, 30.0),
        keepalive: float = 30.0,
    ) -> None:
        self._engine = engine
        self._reads = reads
        self._backoff = backoff
        self._keepalive = keepalive
        self._listening = asyncio.Event()

    @contextlib.asynccontextmanager
    async def running(self, *, ready_within: float = 10.0) -> AsyncIterator[None]:
        """Listen while the block runs (on PostgreSQL); it starts once listening began."""
        if self._engine.dialect.name != "postgresql":
            yield
            return
        task = asyncio.create_task(self._run(), name="gatehouse-evict-listener")
        try:
            try:
                await asyncio.wait_for(self._listening.wait(), ready_within)
            except TimeoutError:
                log.warning("not listening for evictions yet; serving, and retrying meanwhile")
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        delay = self._backoff[0]
        while True:
            try:
                await self._listen()
                delay = self._backoff[0]  # it was listening: the backoff starts afresh
                log.warning("the eviction listener lost its connection; reconnecting")
            except Exception as exc:
                log.warning("the eviction listener failed (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])

    async def _listen(self) -> None:
        """Listen until the connection is lost; raises if it cannot listen or fails a ping."""
        async with self._engine.connect() as connection:
            try:
                driver: Any = (await connection.get_raw_connection()).driver_connection
                lost = asyncio.Event()
                driver.add_termination_listener(lambda _: lost.set())
                await driver.add_listener(CHANNEL, self._on_notification)
                # Anything announced while nobody listened was missed: start from nothing.
                self._reads.clear()
                self._listening.set()
                await self._until_lost(driver, lost)
            finally:
                # A listening connection never goes back to the pool; closing it unlistens.
                await connection.invalidate()

    async def _until_lost(self, driver: Any, lost: asyncio.Event) -> None:
        # A connection cut without a word (a dead peer, a dropped route) only shows when
        # it is used: ping it whenever it has been quiet for a while.
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), self._keepalive)
            except TimeoutError:
                await asyncio.wait_for(driver.fetchval("SELECT 1"), self._keepalive)

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        entity, _, key = payload.partition(":")
        self._reads.evict(entity, [key])
