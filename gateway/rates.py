"""Per-principal rate limits, counted in GraphQL operations rather than HTTP requests.

A batch of twenty operations costs twenty; an MCP tool call costs one. The windows are
`limits`' sliding window counters (a moving window's answer, at a cost that does not grow
with the limit), one set of limits per principal kind (`[limits.rate]`), counted where
`[limits] counters` says (counters.py): in this process, or in Redis for all replicas.
"""

from __future__ import annotations

from dataclasses import dataclass

from limits import RateLimitItem, parse_many

from gateway.config import PrincipalKind, RateLimits
from gateway.counters import Windows
from gateway.errors import RateLimited
from gateway.principals import Principal


@dataclass(frozen=True, slots=True)
class _Limit:
    setting: str  # the configuration key, named in the refusal
    item: RateLimitItem


class Rates:
    """Charges operations to a principal's window, or says when to come back."""

    def __init__(self, rates: RateLimits, windows: Windows) -> None:
        self._limits = {
            kind: [
                _Limit(f"rate.{kind.value}", item)
                for item in parse_many(getattr(rates, kind.value))
            ]
            for kind in PrincipalKind
        }
        self._windows = windows

    async def charge(self, principal: Principal, operations: int = 1) -> None:
        """Count `operations` against the principal's limits; RateLimited if any is spent.

        A refused request is not charged: it ran nothing.
        """
        limits = self._limits[principal.kind]
        for limit in limits:
            if not await self._windows.test(limit.item, "principal", principal.id, cost=operations):
                wait = await self._windows.reset_in(limit.item, "principal", principal.id)
                raise RateLimited(limit.setting, str(limit.item), wait)
        for limit in limits:
            await self._windows.hit(limit.item, "principal", principal.id, cost=operations)
