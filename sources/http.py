"""The `http` connector: a JSON REST API (CRM, billing), entities mapped to endpoints.

    read       GET {one}                       404 -> None
    read_many  GET {many}?{many_param}=a,b,c   -> {items: [...]}
    page       GET {list}?limit=&offset=&q=    -> {items: [...]}

Fields are dotted JSON paths. Every call has a timeout; transport failures, 5xx, refusals
and undecodable bodies become the matching SourceError, naming the source and the field.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast
from urllib.parse import quote

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from sources.breaker import Breaker
from sources.connector import Filters, Mapped, Page, SourceStats
from sources.errors import (
    InvalidPosition,
    SourceConflict,
    SourceDataError,
    SourceError,
    SourceRejected,
    SourceTimeout,
    SourceUnavailable,
    transient,
)
from sources.records import ChildMapping, ConversionError, FieldMapping, Record, convert


@dataclass(frozen=True, slots=True)
class HttpEntity:
    """How one entity is served: its endpoints, key, fields and JSON layout."""

    name: str
    key: str
    fields: tuple[FieldMapping, ...]
    one: str  # path with {key}
    many: str
    list: str
    children: tuple[ChildMapping, ...] = ()
    items: str = "data"
    many_param: str = "ids"
    max_batch: int = 100
    search_param: str | None = "q"
    limit_param: str = "limit"
    offset_param: str = "offset"
    filter_params: Mapping[str, str] = field(default_factory=dict)
    updated_at: str | None = None
    version: str | None = None  # a field holding the system's own version tag (an ETag)
    total: str | None = "total"  # where a list answer says how many records match in all


class HttpConnector(Mapped[HttpEntity]):
    """Reads entities from a JSON REST API over one pooled httpx client."""

    kind = "http"

    def __init__(
        self,
        name: str,
        *,
        url: str,
        entities: Iterable[HttpEntity],
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        write_attempts: int = 3,
        breaker: Breaker | None = None,
    ) -> None:
        self.name = name
        self.write_attempts = write_attempts
        self.url = url
        self.timeout = timeout
        self.stats = SourceStats(breaker=breaker or Breaker())
        Mapped.__init__(self, entities)
        self.client = httpx.AsyncClient(
            base_url=url, timeout=timeout, headers=dict(headers or {}), transport=transport
        )

    async def read(self, entity: str, key: str) -> Record | None:
        """One record by key, or None on 404."""
        mapping = self._entities[entity]
        body = await self._get(
            "read", _path(mapping.one, key), {}, lambda b: self._record(mapping, b), missing_ok=True
        )
        return cast(Record | None, body)

    async def read_many(self, entity: str, keys: Sequence[str]) -> dict[str, Record]:
        """The records that exist among `keys`: one request per `max_batch` keys."""
        mapping = self._entities[entity]
        found: dict[str, Record] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), mapping.max_batch):
            batch = unique[start : start + mapping.max_batch]
            params = {mapping.many_param: ",".join(batch)}
            records = await self._get(
                "read_many", mapping.many, params, lambda b: self._records(mapping, b)
            )
            found |= {record.key: record for record in records}
        return found

    async def page(
        self,
        entity: str,
        *,
        filters: Filters,
        search: str | None,
        limit: int,
        after: str | None,
    ) -> Page:
        """A page in the API's order; positions are offsets.

        With a `total` in the answer, exactly `limit` records are asked for (APIs cap the
        page size); without one, one more, to learn whether another page follows.
        """
        mapping = self._entities[entity]
        offset = _offset_after(after)
        ask = limit if mapping.total else limit + 1
        params = _list_params(mapping, filters, search)
        params |= {mapping.limit_param: str(ask), mapping.offset_param: str(offset)}
        records, total = await self._get(
            "page", mapping.list, params, lambda b: (self._records(mapping, b), _total(mapping, b))
        )
        page = records[:limit]
        positions = [str(offset + index) for index in range(len(page))]
        more = offset + len(page) < total if total is not None else len(records) > limit
        return Page(page, positions, has_more=more)

    async def ping(self) -> None:
        """GET the API's root list with limit 1."""
        mapping = next(iter(self._entities.values()))
        await self._get("ping", mapping.list, {mapping.limit_param: "1"})

    async def close(self) -> None:
        """Close the pooled client."""
        await self.client.aclose()

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[HttpConnector]:
        """A write's unit of work: each call stands alone (its idempotency key makes it safe)."""
        yield self

    async def update(
        self,
        entity: str,
        key: str,
        changes: Mapping[str, Any],
        *,
        idempotency_key: str,
        if_version: str | None = None,
    ) -> Record:
        """PATCH one record; retried on transport failures with the same idempotency key.

        The system sees the key on every attempt, so a retry after a lost response does
        not apply the change twice. A stale `if_version` raises SourceConflict.
        """
        mapping = self._entities[entity]
        headers = {"Idempotency-Key": idempotency_key}
        if if_version is not None:
            headers["If-Match"] = f'"{if_version}"'
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.write_attempts),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            retry=retry_if_exception(transient),  # an open breaker fails fast, unretried
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                path = _path(mapping.one, key)
                record: Record = await self._send(
                    "update",
                    "PATCH",
                    path,
                    json=dict(changes),
                    headers=headers,
                    parse=lambda b: self._record(mapping, b),
                )
        return record

    async def _get(
        self,
        operation: str,
        path: str,
        params: Mapping[str, str],
        parse: Callable[[Any], Any] = lambda body: body,
        *,
        missing_ok: bool = False,
    ) -> Any:
        return await self._send(
            operation, "GET", path, params=params, parse=parse, missing_ok=missing_ok
        )

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        parse: Callable[[Any], Any] = lambda body: body,
        missing_ok: bool = False,
    ) -> Any:
        # Parsing happens inside the counted call, so malformed data counts as an error.
        async with self.stats.call(operation, self.name), self._translated_errors():
            response = await self.client.request(
                method, path, params=params, json=json, headers=headers
            )
            if missing_ok and response.status_code == 404:
                return None
            self._check_status(response)
            try:
                body = jsonlib.loads(response.content, parse_float=Decimal)
            except ValueError as exc:
                raise SourceDataError(self.name, f"{operation}: response is not JSON") from exc
            return parse(body)

    def _check_status(self, response: httpx.Response) -> None:
        if response.status_code == 412:
            raise SourceConflict(
                self.name, "the record changed since it was read", current_version=_etag(response)
            )
        if response.status_code >= 500:
            raise SourceUnavailable(self.name, f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise SourceRejected(self.name, f"HTTP {response.status_code}")

    @asynccontextmanager
    async def _translated_errors(self) -> AsyncIterator[None]:
        try:
            yield
        except SourceError:
            raise
        except httpx.TimeoutException as exc:
            raise SourceTimeout(self.name, f"no answer within {self.timeout:g}s") from exc
        except httpx.HTTPError as exc:
            raise SourceUnavailable(self.name, type(exc).__name__) from exc

    def _records(self, mapping: HttpEntity, body: Any) -> list[Record]:
        items = body.get(mapping.items) if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise SourceDataError(
                self.name, f"{mapping.name}: expected a list under '{mapping.items}'"
            )
        return [self._record(mapping, item) for item in items]

    def _record(self, mapping: HttpEntity, body: Any) -> Record:
        if not isinstance(body, dict):
            raise SourceDataError(self.name, f"{mapping.name}: expected a JSON object")
        data = self._fields(mapping.name, mapping.fields, body)
        for child in mapping.children:
            data[child.name] = self._children(mapping.name, child, body)
        updated_at = data.get(mapping.updated_at) if mapping.updated_at else None
        version = str(data[mapping.version]) if mapping.version else ""
        return Record(
            key=str(data[mapping.key]), data=data, updated_at=updated_at, stated_version=version
        )

    def _children(self, entity: str, child: ChildMapping, body: dict[str, Any]) -> list[Any]:
        rows = _at(body, child.at)
        if rows is None:
            return []
        if not isinstance(rows, list):
            raise SourceDataError(
                self.name,
                f"field {entity}.{child.name}: expected a list",
                field=f"{entity}.{child.name}",
            )
        return [self._fields(f"{entity}.{child.name}", child.fields, row) for row in rows]

    def _fields(self, where: str, fields: Iterable[FieldMapping], body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise SourceDataError(self.name, f"{where}: expected a JSON object")
        data: dict[str, Any] = {}
        for mapping in fields:
            try:
                data[mapping.name] = convert(_at(body, mapping.at), mapping)
            except ConversionError as exc:
                name = f"{where}.{mapping.name}"
                raise SourceDataError(self.name, f"field {name}: {exc}", field=name) from exc
        return data


def _at(body: Mapping[str, Any], path: str) -> Any:
    value: Any = body
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _total(mapping: HttpEntity, body: Any) -> int | None:
    value = body.get(mapping.total) if mapping.total and isinstance(body, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _path(template: str, key: str) -> str:
    # A key is data: "/" or "?" in it must not change which resource is asked for.
    return template.format(key=quote(key, safe=""))


def _etag(response: httpx.Response) -> str | None:
    tag = response.headers.get("etag")
    return tag.removeprefix("W/").strip('"') if tag else None


def _offset_after(after: str | None) -> int:
    if after is None:
        return 0
    if not (after.isascii() and after.isdecimal()):
        raise InvalidPosition(after)
    return int(after) + 1


def _list_params(mapping: HttpEntity, filters: Filters, search: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in filters.items():
        if name not in mapping.filter_params:
            raise ValueError(f"{mapping.name} cannot be filtered by '{name}' over HTTP")
        params[mapping.filter_params[name]] = _param(value)
    if search:
        if mapping.search_param is None:
            raise ValueError(f"{mapping.name} does not support search")
        params[mapping.search_param] = search
    return params


def _param(value: object) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
