"""The read path below GraphQL and MCP: cache, connector, freshness.

    get_many(entity, keys, max_age)
      1. cached entries young enough for max_age (or the entity's cache TTL) are served
         (`cached` answers one such key without awaiting anything)
      2. the rest are read from the system of record in one round-trip, and cached; a
         transport failure or timeout is tried again (jittered backoff, a few attempts).
         A key already being read, for any request, joins that read (single flight): however
         many requests miss or outlive one record at once, its source is asked once
      3. if the system fails, each key's last good value is served STALE with the error;
         a key with nothing cached gets SourceFailed, naming the source (while the source's
         breaker is open, that is at once, without calling it); every request that joined
         the read gets the same, and the next miss reads again

A record that breaks its contract (a required field missing, a number out of its range)
fails the read with SOURCE_DATA_ERROR naming the field, and is never cached.

Lists always go to the source (membership cannot be served from cache) and refresh the
cache with every record they return.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from cachetools import TTLCache
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from gateway.config import EntityConfig, ReadRetryConfig
from gateway.errors import InvalidArgument, SourceFailed
from gateway.freshness import Freshness, FreshnessStatus, Sla
from gateway.pagination import decode_cursor, encode_cursor
from sources.connector import Connector, Filters
from sources.errors import InvalidPosition, SourceError, transient
from sources.records import Record

Clock = Callable[[], datetime]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Entry:
    """A record with the provenance of this answer."""

    entity: str
    record: Record
    freshness: Freshness


@dataclass(frozen=True, slots=True)
class EntryPage:
    """One page of a list, with cursors."""

    entries: list[Entry]
    cursors: list[str]
    has_next_page: bool


Served = Entry | SourceFailed | None  # an entry, its source's failure, or no such record


@dataclass(slots=True)
class Staleness:
    """An entity served from last good values since its system began to fail (alerts.py)."""

    since: datetime
    error: str
    records: int  # stale answers served since
    oldest: datetime  # when the oldest value served was read from the system


class Reads:
    """Serves entities from cache or their system of record, with freshness."""

    def __init__(
        self,
        *,
        entities: Mapping[str, EntityConfig],
        connectors: Mapping[str, Connector],
        clock: Clock = lambda: datetime.now(UTC),
        on_lookup: Callable[[str, bool], None] = lambda entity, hit: None,
        read_retry: Mapping[str, ReadRetryConfig] | None = None,
    ) -> None:
        self._entities = entities
        self._connectors = connectors
        self._read_retry = read_retry or {}  # by source; the defaults where one is not named
        self._clock = clock
        self._on_lookup = on_lookup  # (entity, hit): for the cache metrics
        # Each record as a later request is served it from cache: built once, when read.
        self._caches: dict[str, TTLCache[str, Entry]] = {
            name: TTLCache(maxsize=cfg.cache_size, ttl=cfg.keep_stale_for, timer=self._timestamp)
            for name, cfg in entities.items()
        }
        # The read under way for each (entity, key): whoever else misses the key awaits it.
        self._flights: dict[tuple[str, str], asyncio.Task[dict[str, Served]]] = {}
        # Entities whose reads are failing over to last good values now, until one succeeds.
        self.stale: dict[str, Staleness] = {}

    def _timestamp(self) -> float:
        return self._clock().timestamp()

    def connector(self, entity: str) -> Connector:
        """The connector of the entity's system of record."""
        return self._connectors[self._entities[entity].source]

    async def get(self, entity: str, key: str, *, max_age: float | None = None) -> Entry | None:
        """One entry, or None for an unknown key; raises SourceFailed."""
        (result,) = await self.get_many(entity, [key], max_age=max_age)
        if isinstance(result, SourceFailed):
            raise result
        return result

    async def get_many(
        self, entity: str, keys: Sequence[str], *, max_age: float | None = None
    ) -> list[Served]:
        """Entries for `keys` in order: cache first, the rest in one round-trip."""
        check_max_age(max_age)
        served: dict[str, Served] = {}
        for key in keys:
            if (hit := self._young(entity, key, max_age)) is not None:
                served[key] = hit
        missing = [key for key in dict.fromkeys(keys) if key not in served]
        for key in keys:
            self._on_lookup(entity, key in served)
        if missing:
            served |= await self._fetch(entity, missing)
        return [served[key] for key in keys]

    def cached(self, entity: str, key: str, *, max_age: float | None = None) -> Entry | None:
        """The cached entry of `key` when it is young enough for `max_age`, else None (and
        then `get_many` reads it); counted as a cache hit when there is one."""
        check_max_age(max_age)
        hit = self._young(entity, key, max_age)
        if hit is not None:
            self._on_lookup(entity, True)
        return hit

    def _young(self, entity: str, key: str, max_age: float | None) -> Entry | None:
        limit = self._entities[entity].ttl if max_age is None else max_age
        hit = self._caches[entity].get(key)
        # maxAge 0 means "read through", even for a value fetched this very instant.
        if hit is None or limit <= 0:
            return None
        return hit if hit.freshness.age_seconds(self._clock()) <= limit else None

    async def _fetch(self, entity: str, keys: list[str]) -> dict[str, Served]:
        """Read `keys` from the source, joining the reads of keys already under way."""
        new = [key for key in keys if (entity, key) not in self._flights]
        if new:
            flight = asyncio.ensure_future(self._read_through(entity, new))
            for key in new:
                self._flights[(entity, key)] = flight
            flight.add_done_callback(lambda done: self._landed(entity, new, done))
        flights = {key: self._flights[(entity, key)] for key in keys}
        # Shielded: a caller that goes away (a cancelled request) leaves the read to the others.
        for flight in set(flights.values()):
            await asyncio.shield(flight)
        return {key: flight.result()[key] for key, flight in flights.items()}

    def _landed(self, entity: str, keys: list[str], flight: asyncio.Task[Any]) -> None:
        for key in keys:
            if self._flights.get((entity, key)) is flight:
                del self._flights[(entity, key)]

    async def _read_through(self, entity: str, keys: list[str]) -> dict[str, Served]:
        try:
            records = await self._retried(entity, lambda c: c.read_many(entity, keys))
        except SourceError as error:
            served: dict[str, Served] = {key: self._stand_in(entity, key, error) for key in keys}
            self._served_stale(entity, error, [e for e in served.values() if isinstance(e, Entry)])
            return served
        self.stale.pop(entity, None)
        fetched_at = self._clock()
        result: dict[str, Served] = {}
        for key in keys:
            record = records.get(key)
            result[key] = None if record is None else self._remember(entity, record, fetched_at)
        return result

    def _served_stale(self, entity: str, error: SourceError, entries: list[Entry]) -> None:
        if not entries:
            return
        oldest = min(entry.freshness.fetched_at for entry in entries)
        found = self.stale.setdefault(entity, Staleness(self._clock(), error.public, 0, oldest))
        found.error, found.records = error.public, found.records + len(entries)
        found.oldest = min(found.oldest, oldest)

    def _stand_in(self, entity: str, key: str, error: SourceError) -> Entry | SourceFailed:
        """stale-if-error: the last good value, marked STALE with the error."""
        last_good = self._caches[entity].get(key)
        if last_good is None:
            return SourceFailed(error)
        failed = dataclasses.replace(last_good.freshness, error=error.public)
        return dataclasses.replace(last_good, freshness=failed)

    async def page(
        self,
        entity: str,
        *,
        filters: Filters,
        search: str | None = None,
        first: int,
        after: str | None = None,
    ) -> EntryPage:
        """A page of entries read from the source; raises SourceFailed or InvalidArgument."""
        position = decode_cursor(entity, after)
        try:
            page = await self._retried(
                entity,
                lambda c: c.page(
                    entity, filters=filters, search=search, limit=first, after=position
                ),
            )
        except InvalidPosition as exc:
            raise InvalidArgument("after", "not a cursor of this list") from exc
        except SourceError as error:
            raise SourceFailed(error) from error
        fetched_at = self._clock()
        entries = [self._remember(entity, record, fetched_at) for record in page.records]
        cursors = [encode_cursor(entity, position) for position in page.positions]
        return EntryPage(entries, cursors, page.has_more)

    async def _retried(self, entity: str, read: Callable[[Connector], Awaitable[_T]]) -> _T:
        """An idempotent read of the entity's source, tried again on transport failures."""
        retry = self._read_retry.get(self._entities[entity].source, ReadRetryConfig())
        retrying = AsyncRetrying(
            stop=stop_after_attempt(retry.attempts),
            wait=wait_random_exponential(multiplier=retry.backoff, max=retry.backoff * 16),
            retry=retry_if_exception(transient),
            reraise=True,
        )
        connector = self.connector(entity)
        async for attempt in retrying:
            with attempt:
                return await read(connector)
        raise AssertionError("unreachable: the last attempt's error is reraised")

    def cache_status(self, entity: str) -> dict[FreshnessStatus, int]:
        """How many cached records of an entity are FRESH, AGING or STALE now."""
        counts = dict.fromkeys(FreshnessStatus, 0)
        now = self._clock()
        for hit in list(self._caches[entity].values()):
            counts[hit.freshness.status(now)] += 1
        return counts

    def evict(self, entity: str, keys: Sequence[str]) -> None:
        """Forget cached records (after a write changed them); an unknown entity has none."""
        cache = self._caches.get(entity)
        if cache is None:
            return
        for key in keys:
            cache.pop(key, None)

    def clear(self) -> None:
        """Forget every cached record (when evictions may have been missed)."""
        for cache in self._caches.values():
            cache.clear()

    def _remember(self, entity: str, record: Record, fetched_at: datetime) -> Entry:
        """Cache a record just read; the entry that answers this read (not `cached`)."""
        config = self._entities[entity]
        sla = Sla(config.warn_after, config.error_after)
        fresh = Freshness(config.source, fetched_at, record, cached=False, sla=sla)
        self._caches[entity][record.key] = Entry(
            entity, record, dataclasses.replace(fresh, cached=True)
        )
        return Entry(entity, record, fresh)


def check_max_age(max_age: float | None) -> None:
    """maxAge is seconds, zero or more."""
    if max_age is not None and max_age < 0:
        raise InvalidArgument("maxAge", f"must be 0 or more seconds, got {max_age:g}")
