"""The one small interface every connector implements, and the health it reports.

    read(entity, key)                 -> Record | None
    read_many(entity, keys)           -> {key: Record}        one round-trip
    page(entity, filters, search, limit, after) -> Page        one round-trip
    ping()                            -> None, or raises SourceError
    unit()                            -> a write's unit of work (a transaction, for SQL)

A connector is built once per system of record with the mappings of the entities it owns,
and it times out every call. Every round-trip passes through `SourceStats.call`, which counts
it and guards it with the source's circuit breaker (sources/breaker.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from sources.breaker import Breaker
from sources.errors import SourceError
from sources.records import Record

_tracer = trace.get_tracer("gatehouse.sources")
# Under "gatehouse", so the gateway's JSON formatter (and its redaction) writes these lines.
log = logging.getLogger("gatehouse.sources")

Filters = Mapping[str, object]  # field (or "child.field") -> value, or a list of values (IN)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: records in order, each with its position, and whether more follow."""

    records: list[Record]
    positions: list[str]  # opaque to the gateway; `after=` takes one back
    has_more: bool


@dataclass(slots=True)
class SourceStats:
    """Counters a connector keeps about its own calls: health at a glance."""

    calls: int = 0
    errors: int = 0
    last_ok_at: datetime | None = None
    last_error_at: datetime | None = None
    last_error: str | None = None  # what callers may be told (SourceError.public)
    last_error_detail: str | None = None  # the infrastructure's own words: operators only
    seconds: float = 0.0
    by_operation: dict[str, int] = field(default_factory=dict)
    breaker: Breaker = field(default_factory=Breaker)

    @asynccontextmanager
    async def call(self, operation: str, source: str = "") -> AsyncIterator[None]:
        """Count and trace one round-trip to the system, and its outcome; while the
        source's breaker is open, raise SourceCircuitOpen without calling it."""
        with self.breaker.guard(source):
            async with self._counted(operation, source):
                yield

    @asynccontextmanager
    async def _counted(self, operation: str, source: str) -> AsyncIterator[None]:
        self.calls += 1
        self.by_operation[operation] = self.by_operation.get(operation, 0) + 1
        started = time.perf_counter()
        # The span names the system and the operation only: never keys, SQL or values.
        # A failure is recorded by its code or type, never its message: that quotes SQL,
        # hosts and values.
        with _tracer.start_as_current_span(
            f"source {operation}",
            attributes={"gatehouse.source": source, "gatehouse.source.operation": operation},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except SourceError as exc:
                self.errors += 1
                self.last_error_at = datetime.now(UTC)
                self.last_error, self.last_error_detail = exc.public, str(exc)
                span.set_status(Status(StatusCode.ERROR, exc.code))
                log.warning(
                    "source call failed",
                    extra={
                        "source": source,
                        "operation": operation,
                        "code": exc.code,
                        "detail": exc.detail,
                    },
                )
                raise
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            else:
                self.last_ok_at = datetime.now(UTC)
            finally:
                self.seconds += time.perf_counter() - started

    @property
    def healthy(self) -> bool | None:
        """True after a success, False after a failure, None before any call."""
        if self.last_error_at is None:
            return None if self.last_ok_at is None else True
        return self.last_ok_at is not None and self.last_ok_at > self.last_error_at


class Named(Protocol):
    """An entity's mapping onto a system: what `Mapped` keys it by."""

    @property
    def name(self) -> str:
        """The entity's name, or a copy's."""
        ...


M = TypeVar("M", bound=Named)


class Mapped(Generic[M]):
    """A connector's mapped entities by name, and the copies mapped beside them: copies of
    fields whose system of record is elsewhere are read like entities (`page`, `read_many`)
    but not listed as entities of this system."""

    def __init__(self, entities: Iterable[M]) -> None:
        self._entities = {entity.name: entity for entity in entities}
        self._copies: set[str] = set()

    def entities(self) -> Sequence[str]:
        """The entities this connector is mapped to."""
        return [name for name in self._entities if name not in self._copies]

    def map_copies(self, copies: Iterable[M]) -> None:
        """Map copies of fields held in this system for another's records."""
        for mapping in copies:
            self._entities[mapping.name] = mapping
            self._copies.add(mapping.name)

    def copies(self) -> Sequence[str]:
        """The names of the copies mapped on this connector."""
        return sorted(self._copies)


class Connector(Protocol):
    """What the gateway needs from a system of record."""

    name: str
    kind: str
    stats: SourceStats

    def entities(self) -> Sequence[str]:
        """The entities this connector is mapped to."""
        ...

    async def read(self, entity: str, key: str) -> Record | None:
        """One record by key, or None when the system has no such record."""
        ...

    async def read_many(self, entity: str, keys: Sequence[str]) -> dict[str, Record]:
        """The records that exist among `keys`, in one round-trip."""
        ...

    async def page(
        self,
        entity: str,
        *,
        filters: Filters,
        search: str | None,
        limit: int,
        after: str | None,
    ) -> Page:
        """A page of records in key order, after a position from an earlier page."""
        ...

    async def ping(self) -> None:
        """Check the system answers; raise a SourceError when it does not."""
        ...

    def unit(self) -> AbstractAsyncContextManager[Any]:
        """A write's unit of work on this system: what an action plans and executes in
        (one transaction for SQL; each call on its own, under its idempotency key, for HTTP).
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
