"""Per-principal rate limits, counted in GraphQL operations rather than HTTP requests.

A batch of twenty operations costs twenty; an MCP tool call costs one. The windows are
`limits`' moving windows in this process's memory, one set of limits per principal kind
(`[limits.rate]`); behind several replicas each replica counts its own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

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
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def charge(self, principal: Principal, operations: int = 1) -> None:
        """Count `operations` against the principal's limits; RateLimited if any is spent.

        A refused request is not charged: it ran nothing.
        """
        limits = self._limits[principal.kind]
        for limit in limits:
            if not self._limiter.test(limit.item, principal.id, cost=operations):
                raise RateLimited(limit.setting, str(limit.item), self._wait(limit, principal))
        for limit in limits:
            self._limiter.hit(limit.item, principal.id, cost=operations)

    def _wait(self, limit: _Limit, principal: Principal) -> int:
        stats = self._limiter.get_window_stats(limit.item, principal.id)
        return max(1, math.ceil(stats.reset_time - time.time()))
