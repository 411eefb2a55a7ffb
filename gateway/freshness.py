"""How fresh an answer is, against its entity's SLA (dbt-style warn_after / error_after).

age = now - fetched_at          how long ago the gateway read it from its system
FRESH   age <= warn_after
AGING   warn_after < age <= error_after
STALE   age > error_after, or served from cache because the source failed
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sources.records import Record


class FreshnessStatus(StrEnum):
    """Where an answer stands against its SLA."""

    FRESH = "FRESH"
    AGING = "AGING"
    STALE = "STALE"


@dataclass(frozen=True, slots=True)
class Sla:
    """An entity's freshness SLA, in seconds."""

    warn_after: float
    error_after: float


@dataclass(frozen=True, slots=True)
class Freshness:
    """Provenance of one answer: which system, when read, which version, and any failure."""

    system: str
    fetched_at: datetime
    record: Record
    cached: bool
    sla: Sla
    error: str | None = None

    @property
    def source_updated_at(self) -> datetime | None:
        """The record's own last-modified time in its system, when it keeps one."""
        return self.record.updated_at

    @property
    def version(self) -> str:
        """The record's version: what a write names as the version it saw."""
        return self.record.version

    def age_seconds(self, now: datetime) -> float:
        """Seconds since the gateway read this from its system of record."""
        return max(0.0, (now - self.fetched_at).total_seconds())

    def status(self, now: datetime) -> FreshnessStatus:
        """FRESH, AGING or STALE at `now`."""
        age = self.age_seconds(now)
        if self.error is not None or age > self.sla.error_after:
            return FreshnessStatus.STALE
        if age > self.sla.warn_after:
            return FreshnessStatus.AGING
        return FreshnessStatus.FRESH
