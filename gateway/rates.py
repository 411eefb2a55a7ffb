"""Per-principal rate limits, counted in GraphQL operations rather than HTTP requests.

A batch of twenty operations costs twenty; an MCP tool call costs one. The windows are
`limits`' sliding window counters in this process's memory (a moving window's answer, at a
cost that does not grow with the limit), one set of limits per principal kind
(`[limits.rate]`); behind several replicas or workers each one counts its own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from gateway.config import PrincipalKind, RateLimits
from gateway.errors import RateLimited
from gateway.principals import Principal


@dataclass(frozen=True, slots=True)
class _Limit:
    setting: str  # the configuration key, named in the refusal
    item: RateLimitItem


class Rates:
    """Charges operations to a principal's window, or says when to come back."""

    def __init__(self, rates: RateLimits) -> None:
        self._limits = {
            kind: [
                _Limit(f"rate.{kind.value}", item)
                for item in parse_many(getattr(rates, kind.value))
            ]
            for kind in PrincipalKind
        }
        # The asyncio storage expires its counters in a task of the loop, where the threaded
        # one starts a timer thread every few milliseconds under load.
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    async def charge(self, principal: Principal, operations: int = 1) -> None:
        """Count `operations` against the principal's limits; RateLimited if any is spent.

        A refused request is not charged: it ran nothing.
        """
        limits = self._limits[principal.kind]
        for limit in limits:
            if not await self._limiter.test(limit.item, principal.id, cost=operations):
                wait = await self._wait(limit, principal)
                raise RateLimited(limit.setting, str(limit.item), wait)
        for limit in limits:
            await self._limiter.hit(limit.item, principal.id, cost=operations)

    async def _wait(self, limit: _Limit, principal: Principal) -> int:
        stats = await self._limiter.get_window_stats(limit.item, principal.id)
        return max(1, math.ceil(stats.reset_time - time.time()))
