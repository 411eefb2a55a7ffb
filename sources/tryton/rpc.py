"""An async client for Tryton's JSON-RPC, on one pooled httpx client.

    login     POST /{db}/rpc/ common.db.login [user, {password}, language] -> [uid, token]
              then model.res.user.get_preferences [true, context] -> the user's context
    call      POST /{db}/rpc/ {id, method, params: [*params, context]}
              Authorization: Session base64(user:uid:token)
              401/403 (session expired or ended) -> log in again, once, and retry

Tryton answers a refusal with HTTP 200 and {"error": [name, args]}; the name picks the
error: UserError and UserWarning -> SourceRefused (a business rule said no; an access
rule, which Tryton also sends as UserError, -> SourceRejected), ConcurrencyException ->
SourceConflict, anything else -> SourceRejected. Transport failures -> SourceUnavailable,
timeouts -> SourceTimeout, 5xx -> SourceUnavailable, a body that is not Tryton's JSON ->
SourceDataError. Decimal, date, datetime, time, timedelta and bytes travel as Tryton's
{"__class__": ...} objects both ways; datetimes are UTC (naive on the wire, aware here).

The password and the session token are never logged nor put in an error message.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any, Self

import httpx

from sources.errors import (
    SourceConflict,
    SourceDataError,
    SourceError,
    SourceRefused,
    SourceRejected,
    SourceTimeout,
    SourceUnavailable,
)

Domain = Sequence[Any]
Context = Mapping[str, Any]
# Tryton sends access rules as UserError; their messages (ir/message.xml) start so.
_ACCESS_MESSAGE = "You are not allowed to"
_EXPIRED = (401, 403)


class TrytonRpc:
    """One Tryton database's JSON-RPC, logged in as one user; use `async with` or `close`."""

    def __init__(
        self,
        name: str,
        *,
        url: str,
        database: str,
        user: str,
        password: str,
        timeout: float = 10.0,
        language: str = "en",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.database = database
        self.user = user
        self.timeout = timeout
        self._password = password
        self._language = language
        self._authorization: str | None = None
        self._context: dict[str, Any] = {}
        self._login_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"), timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:
        return f"TrytonRpc({self.name!r}, database={self.database!r}, user={self.user!r})"

    @property
    def context(self) -> dict[str, Any]:
        """A copy of the user's context sent with every call (empty before login)."""
        return dict(self._context)

    async def login(self) -> None:
        """Log in with the user and password, then fetch the user's context."""
        async with self._login_lock:
            await self._login()

    async def call(self, method: str, *params: Any, context: Context | None = None) -> Any:
        """Call `method` with `params` and the user's context (updated with `context`)."""
        authorization = self._authorization or await self._renew(None)
        full = {**self._context, **(context or {})}
        response = await self._post(method, [*params, full], authorization)
        if response.status_code in _EXPIRED:
            authorization = await self._renew(authorization)
            response = await self._post(method, [*params, full], authorization)
        return self._result(method, response)

    async def search_read(
        self,
        model: str,
        domain: Domain,
        fields: Sequence[str],
        *,
        limit: int | None = None,
        offset: int = 0,
        order: Sequence[tuple[str, str]] | None = None,
        context: Context | None = None,
    ) -> list[dict[str, Any]]:
        """The records of `model` matching `domain`, with `fields` ("id" always included)."""
        ordering = [list(pair) for pair in order] if order is not None else None
        params = (list(domain), offset, limit, ordering, list(fields))
        method = f"model.{model}.search_read"
        return _rows(self.name, method, await self.call(method, *params, context=context))

    async def search(
        self,
        model: str,
        domain: Domain,
        *,
        limit: int | None = None,
        offset: int = 0,
        order: Sequence[tuple[str, str]] | None = None,
        context: Context | None = None,
    ) -> list[int]:
        """The ids of the records of `model` matching `domain`."""
        ordering = [list(pair) for pair in order] if order is not None else None
        params = (list(domain), offset, limit, ordering)
        ids = await self.call(f"model.{model}.search", *params, context=context)
        return [int(record_id) for record_id in ids]

    async def read(
        self,
        model: str,
        ids: Sequence[int],
        fields: Sequence[str],
        *,
        context: Context | None = None,
    ) -> list[dict[str, Any]]:
        """`fields` of the records `ids` (those that exist; Tryton refuses unknown ids)."""
        method = f"model.{model}.read"
        rows = await self.call(method, list(ids), list(fields), context=context)
        return _rows(self.name, method, rows)

    async def create(
        self, model: str, values: Sequence[Mapping[str, Any]], *, context: Context | None = None
    ) -> list[int]:
        """Create one record per mapping in `values`; return their ids."""
        ids = await self.call(f"model.{model}.create", [dict(v) for v in values], context=context)
        return [int(record_id) for record_id in ids]

    async def write(
        self,
        model: str,
        ids: Sequence[int],
        values: Mapping[str, Any],
        *,
        timestamps: Mapping[int, str] | None = None,
        context: Context | None = None,
    ) -> None:
        """Write `values` to the records `ids`.

        With `timestamps` (each record's `_timestamp` as read), Tryton refuses the write
        with SourceConflict if a record changed since; without, the last write wins.
        """
        extra = _with_timestamps(model, timestamps, context)
        await self.call(f"model.{model}.write", list(ids), dict(values), context=extra)

    async def delete(
        self,
        model: str,
        ids: Sequence[int],
        *,
        timestamps: Mapping[int, str] | None = None,
        context: Context | None = None,
    ) -> None:
        """Delete the records `ids` (refused with SourceConflict if `timestamps` are stale)."""
        extra = _with_timestamps(model, timestamps, context)
        await self.call(f"model.{model}.delete", list(ids), context=extra)

    async def execute(
        self,
        model: str,
        method: str,
        ids: Sequence[int],
        *args: Any,
        timestamps: Mapping[int, str] | None = None,
        context: Context | None = None,
    ) -> Any:
        """Run a method on records, such as a workflow button (sale.sale `confirm`)."""
        extra = _with_timestamps(model, timestamps, context)
        return await self.call(f"model.{model}.{method}", list(ids), *args, context=extra)

    async def ping(self) -> None:
        """Log in if needed and fetch the user's preferences: the database answers."""
        await self.call("model.res.user.get_preferences", True)

    async def close(self) -> None:
        """Close the pooled client (the session lapses on the server by itself)."""
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _login(self) -> str:
        """Log in; the session is kept only once the user's context is known too."""
        self._authorization = None
        params = [self.user, {"password": self._password}, self._language]
        try:
            response = await self._post("common.db.login", params, None)
        except SourceTimeout as exc:
            # trytond over PostgreSQL waits 30 s for a database that does not exist.
            raise SourceTimeout(
                self.name,
                f"login to database '{self.database}' as user '{self.user}': no answer "
                f"within {self.timeout:g}s (does the database exist?)",
            ) from exc
        if response.status_code != 200:
            raise self._login_refused(response.status_code)
        result = self._result("common.db.login", response)
        if not (isinstance(result, list) and len(result) >= 2 and isinstance(result[0], int)):
            raise SourceDataError(self.name, "common.db.login: unexpected answer")
        credentials = f"{self.user}:{result[0]}:{result[1]}".encode()
        authorization = "Session " + base64.b64encode(credentials).decode()
        method = "model.res.user.get_preferences"
        context = self._result(method, await self._post(method, [True, {}], authorization))
        if not isinstance(context, dict):
            raise SourceDataError(self.name, f"{method}: expected the user's context")
        self._context, self._authorization = context, authorization
        return authorization

    async def _renew(self, sent_with: str | None) -> str:
        """Log in again unless another call already replaced the session `sent_with`."""
        async with self._login_lock:
            if self._authorization is None or self._authorization == sent_with:
                return await self._login()
            return self._authorization

    def _login_refused(self, status: int) -> SourceError:
        where = f"database '{self.database}' as user '{self.user}'"
        if status in (401, 403):
            return SourceRejected(self.name, f"login to {where} failed: wrong user or password")
        if status == 404:
            return SourceRejected(
                self.name, f"login to {where} failed: database '{self.database}' does not exist"
            )
        if status == 429:
            return SourceRejected(self.name, f"login to {where} refused: too many attempts")
        if status >= 500:
            return SourceUnavailable(self.name, f"login to {where}: HTTP {status}")
        return SourceRejected(
            self.name,
            f"login to {where} failed with HTTP {status}: "
            f"database '{self.database}' does not exist or login failed",
        )

    async def _post(
        self, method: str, params: list[Any], authorization: str | None
    ) -> httpx.Response:
        body = {"id": next(self._ids), "method": method, "params": params}
        headers = {"Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        try:
            return await self._client.post(
                f"/{self.database}/rpc/", content=_encode(body), headers=headers
            )
        except httpx.TimeoutException as exc:
            raise SourceTimeout(self.name, f"{method}: no answer within {self.timeout:g}s") from exc
        except httpx.HTTPError as exc:
            raise SourceUnavailable(self.name, f"{method}: {type(exc).__name__}") from exc

    def _result(self, method: str, response: httpx.Response) -> Any:
        status = response.status_code
        if status == 504:
            raise SourceTimeout(self.name, f"{method}: Tryton's own time limit was reached")
        if status >= 500:
            raise SourceUnavailable(self.name, f"{method}: HTTP {status}")
        if status in _EXPIRED:
            raise SourceRejected(
                self.name, f"{method}: HTTP {status}, not allowed or the login was refused"
            )
        if status != 200:
            raise SourceRejected(self.name, f"{method}: HTTP {status}{_text_hint(response)}")
        try:
            body = json.loads(response.content, object_hook=_decode)
        except ValueError as exc:
            raise SourceDataError(self.name, f"{method}: the answer is not JSON") from exc
        if not isinstance(body, dict) or not ({"result", "error"} & body.keys()):
            raise SourceDataError(self.name, f"{method}: not a JSON-RPC answer")
        if body.get("error") is not None:
            raise self._error(method, body["error"])
        return body["result"]

    def _error(self, method: str, error: Any) -> SourceError:
        name, args = _error_parts(error)
        if name == "UserError":
            message = _message(args, 0, 1)
            if message.startswith(_ACCESS_MESSAGE):
                return SourceRejected(self.name, message)
            return SourceRefused(self.name, message)
        if name == "UserWarning":
            return SourceRefused(self.name, _message(args, 1, 2))
        if name == "ConcurrencyException":
            text = args if isinstance(args, str) else "the record changed since it was read"
            return SourceConflict(self.name, text.strip(), current_version=None)
        if name == "LoginException":
            return SourceRejected(self.name, f"{method}: {_message(args, 1, 2) or 'login needed'}")
        # Any other exception: Tryton sends (str(exception), traceback); keep the first line.
        return SourceRejected(self.name, f"{method}: {(name or 'error').splitlines()[0]}")


def _with_timestamps(
    model: str, timestamps: Mapping[int, str] | None, context: Context | None
) -> dict[str, Any]:
    extra = dict(context or {})
    if timestamps:
        extra["_timestamp"] = {f"{model},{key}": value for key, value in timestamps.items()}
    return extra


def _rows(source: str, method: str, result: Any) -> list[dict[str, Any]]:
    if not isinstance(result, list) or not all(isinstance(row, dict) for row in result):
        raise SourceDataError(source, f"{method}: expected a list of records")
    return result


def _error_parts(error: Any) -> tuple[str, Any]:
    if isinstance(error, list | tuple) and error:
        return str(error[0]), error[1] if len(error) > 1 else None
    return str(error), None


def _message(args: Any, message_at: int, description_at: int) -> str:
    """Tryton's message and description, stripped, without empty parts or separators."""
    if not isinstance(args, list | tuple):
        return str(args or "").strip()
    parts = [args[i] for i in (message_at, description_at) if i < len(args)]
    texts = [part.strip().rstrip(" -") for part in parts if isinstance(part, str)]
    return " ".join(text for text in texts if text)


def _text_hint(response: httpx.Response) -> str:
    # Tryton's plain aborts (422 "Missing context argument") say why in a short text body.
    if response.headers.get("content-type", "").startswith("text/html"):
        return ""
    text = response.text.strip().splitlines()
    return f": {text[0][:200]}" if text else ""


def _encode(body: Any) -> bytes:
    return json.dumps(body, default=_encode_value, separators=(",", ":")).encode()


def _encode_value(value: Any) -> Any:
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        raise TypeError(f"cannot send {type(value).__name__} to Tryton")
    return encoder(value)


def _encode_datetime(value: dt.datetime) -> dict[str, Any]:
    # Tryton keeps datetimes as naive UTC.
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    fields = ("year", "month", "day", "hour", "minute", "second", "microsecond")
    return {"__class__": "datetime", **{name: getattr(value, name) for name in fields}}


def _encode_bytes(value: bytes | bytearray) -> dict[str, Any]:
    return {"__class__": "bytes", "base64": base64.b64encode(value).decode()}


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    Decimal: lambda value: {"__class__": "Decimal", "decimal": str(value)},
    dt.datetime: _encode_datetime,
    dt.date: lambda v: {"__class__": "date", "year": v.year, "month": v.month, "day": v.day},
    dt.time: lambda v: {
        "__class__": "time",
        "hour": v.hour,
        "minute": v.minute,
        "second": v.second,
        "microsecond": v.microsecond,
    },
    dt.timedelta: lambda value: {"__class__": "timedelta", "seconds": value.total_seconds()},
    bytes: _encode_bytes,
    bytearray: _encode_bytes,
    set: list,
    frozenset: list,
}


def _decode(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind is None:
        return obj
    try:
        return _decode_value(kind, obj)
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise ValueError(f"malformed {kind}") from exc


def _decode_value(kind: Any, obj: dict[str, Any]) -> Any:
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "datetime":
        date = dt.date(obj["year"], obj["month"], obj["day"])
        time = dt.time(obj["hour"], obj["minute"], obj["second"], obj["microsecond"])
        return dt.datetime.combine(date, time, tzinfo=dt.UTC)
    if kind == "time":
        return dt.time(obj["hour"], obj["minute"], obj["second"], obj["microsecond"])
    if kind == "timedelta":
        return dt.timedelta(seconds=obj["seconds"])
    if kind == "bytes":
        return base64.b64decode(obj["base64"])
    return obj
