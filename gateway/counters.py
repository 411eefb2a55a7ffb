"""Rate windows: sliding-window counters in this process, or in Redis for every replica.

    [limits] counters = "memory://"               each process counts its own (the default)
    [limits] counters = "redis://host:6379/0"     one count across replicas and workers
                                                  ("rediss://" for TLS; ${VAR} for a password)

The per-principal rate limits (rates.py) and the notification channels' pacing (sender.py)
count here, under `counters_prefix` so deployments can share one Redis. A Redis that cannot
be reached does not stop the gateway: its windows are not counted (they fail open, as API
gateways' shared limits usually do) and a warning says so; after a failure Redis is left
alone for RETRY_AFTER seconds, so requests do not each wait out a connection timeout.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from purgatory.domain.model import Context, OpenedState
from redis.asyncio import ConnectionPool

log = logging.getLogger("gatehouse.counters")

RETRY_AFTER = 5.0  # seconds an unreachable Redis is left alone
TIMEOUT = 0.25  # seconds a Redis call may take before its window goes uncounted
SCHEMES = ("memory://", "redis://", "rediss://")

T = TypeVar("T")


class Windows:
    """Sliding-window counters: `hit` spends, `test` looks, `reset_in` says when it frees."""

    def __init__(self, uri: str = "memory://", *, prefix: str = "gatehouse") -> None:
        # Our own pool, so that closing the gateway closes its connections.
        self._pool = None if uri == "memory://" else _pool(uri)
        self._limiter = SlidingWindowCounterRateLimiter(_storage(self._pool, prefix))
        self._breaker = Context("rate-windows", threshold=1, ttl=RETRY_AFTER)

    async def close(self) -> None:
        """Close the connections to Redis, if any."""
        if self._pool is not None:
            await self._pool.aclose()

    async def hit(self, item: RateLimitItem, *key: str, cost: int = 1) -> bool:
        """Spend `cost` of the window; False when it was spent already (nothing spent)."""
        return await self._counted(lambda: self._limiter.hit(item, *key, cost=cost), True)

    async def test(self, item: RateLimitItem, *key: str, cost: int = 1) -> bool:
        """Whether `cost` would fit in the window now, spending nothing."""
        return await self._counted(lambda: self._limiter.test(item, *key, cost=cost), True)

    async def reset_in(self, item: RateLimitItem, *key: str) -> int:
        """Whole seconds, at least 1, until the window has room again."""
        stats = await self._counted(lambda: self._limiter.get_window_stats(item, *key), None)
        return 1 if stats is None else max(1, math.ceil(stats.reset_time - time.time()))

    async def _counted(self, call: Callable[[], Awaitable[T]], uncounted: T) -> T:
        """`call`'s answer, or `uncounted` while the counters cannot be reached."""
        try:
            self._breaker.handle_new_request()
        except OpenedState:
            return uncounted
        finally:
            self._breaker.messages.clear()  # events for purgatory's bus, which we do not run
        try:
            answer = await call()
        except StorageError as error:
            self._breaker.handle_exception(error)
            self._breaker.messages.clear()
            # The error's words may hold the URL; its type and the cause's type do not.
            cause = type(error.storage_error).__name__
            log.warning("rate windows unreachable; not counting", extra={"error": cause})
            return uncounted
        self._breaker.handle_end_request()
        self._breaker.messages.clear()
        return answer


def _pool(uri: str) -> ConnectionPool:
    return ConnectionPool.from_url(
        uri, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, max_connections=32
    )


def _storage(pool: ConnectionPool | None, prefix: str) -> Storage:
    if pool is None:
        # The asyncio storage expires its counters in a task of the loop, where the threaded
        # one starts a timer thread every few milliseconds under load.
        return MemoryStorage()
    return RedisStorage(
        "async+redis://",  # the pool says where
        implementation="redispy",
        key_prefix=prefix,
        wrap_exceptions=True,
        # Documented (":param connection_pool:"), though its options' annotation is narrower.
        connection_pool=pool,  # type: ignore[arg-type]
    )
