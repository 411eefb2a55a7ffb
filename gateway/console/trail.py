"""The audit trail for compliance: filter, page, see the chain verified, download.

GET /console/audit          filters (from, until, principal, people vs agents, action
                            kind, outcome), 50 events a page oldest first (Next: after
                            the last seq), the chain's verification (re-checked at most
                            once a minute: it reads the whole trail)
GET /console/audit/export   the same filtered view as CSV or JSONL, through
                            `AuditTrail.export`; the two filters it lacks (principal kind,
                            outcome) are applied here to what it wrote
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Annotated, Any
from urllib.parse import urlencode
from weakref import WeakKeyDictionary

from fastapi import APIRouter, Depends, Query, Request, Response

from gateway.actions.store import Status
from gateway.audit import AuditTrail, ExportFormat, Verification
from gateway.console.access import Page, Viewer, names
from gateway.console.pages import ConsoleRoute, Refused, render
from gateway.console.signin import ServicesDep, allowed
from gateway.services import Services

PAGE_SIZE = 50
VERIFY_EVERY = 60.0  # seconds a verification result is shown before the chain is read again
OUTCOMES = (*(s.value for s in Status), "RELOADED", "READ")
MEDIA = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}
ComplianceDep = Annotated[Viewer, Depends(allowed(Page.AUDIT))]

# per trail: when verified (monotonic, and UTC to show) and what was found
_verified: WeakKeyDictionary[AuditTrail, tuple[float, datetime, Verification]] = WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class Filters:
    """The audit view a reviewer asked for, as typed into the form."""

    since: str = ""
    until: str = ""
    principal: str = ""
    principal_kind: str = ""
    action_kind: str = ""
    outcome: str = ""

    @classmethod
    def of(cls, params: Mapping[str, str]) -> Filters:
        """The filters from a query string (unknown parameters are ignored)."""
        return cls(**{f.name: params.get(f.name, "").strip()[:100] for f in fields(cls)})

    def query(self, **extra: str | int) -> str:
        """This view as a query string, for links (paging, downloads)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return urlencode({k: v for k, v in {**values, **extra}.items() if v != ""})

    def window(self) -> tuple[datetime | None, datetime | None]:
        """The period as UTC times: from inclusive, until inclusive of a whole date."""
        return _moment(self.since, "From", end=False), _moment(self.until, "Until", end=True)

    def equal(self) -> dict[str, str | None]:
        """The filters that match one column exactly."""
        return {
            "principal": self.principal or None,
            "principal_kind": self.principal_kind or None,
            "action_kind": self.action_kind or None,
            "outcome": self.outcome or None,
        }


class BadFilter(ValueError):
    """A filter that cannot be read; says which, in words."""


def _moment(text: str, label: str, *, end: bool) -> datetime | None:
    """`2026-11-23` (a whole day) or `2026-11-23T10:00` (UTC unless a zone is given)."""
    if not text:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
            return datetime.combine(day, clock(0), tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadFilter(f"{label}: '{text}' is not a date like 2026-11-23") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def router() -> APIRouter:
    """The audit trail page and its download."""
    routes = APIRouter(route_class=ConsoleRoute)
    routes.add_api_route("/audit", trail, methods=["GET"], include_in_schema=False)
    routes.add_api_route("/audit/export", export, methods=["GET"], include_in_schema=False)
    return routes


async def trail(
    request: Request,
    services: ServicesDep,
    viewer: ComplianceDep,
    after: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """One page of the filtered trail, with the chain's status."""
    filters = Filters.of(request.query_params)
    events: list[Any] = []
    more, error = False, None
    try:
        since, until = filters.window()
        events, more = await services.audit.query(
            since=since, until=until, **filters.equal(), limit=PAGE_SIZE, after_seq=after
        )
    except BadFilter as bad:
        error = str(bad)
    return render(
        "audit.html",
        viewer=viewer,
        status=400 if error else 200,
        active=Page.AUDIT.value,
        filters=filters,
        events=events,
        names=names(services),
        next_query=filters.query(after=events[-1].seq) if more and events else None,
        paged=after is not None,
        error=error,
        chain=await chain_status(services.audit),
        principals=sorted(p.id for p in services.authenticator.all()),
        kinds=sorted(services.catalog),
        catalog=services.catalog,
        outcomes=OUTCOMES,
    )


async def chain_status(audit: AuditTrail) -> tuple[Verification, datetime]:
    """The chain's verification and when it ran, at most a minute old."""
    cached = _verified.get(audit)
    if cached is None or time.monotonic() - cached[0] > VERIFY_EVERY:
        cached = (time.monotonic(), datetime.now(UTC), await audit.verify())
        _verified[audit] = cached
    return cached[2], cached[1]


async def export(
    request: Request,
    services: ServicesDep,
    viewer: ComplianceDep,
    format: Annotated[str, Query(pattern="^(csv|jsonl)$")] = "csv",
) -> Response:
    """The filtered view as a file to download."""
    filters = Filters.of(request.query_params)
    fmt: ExportFormat = "jsonl" if format == "jsonl" else "csv"
    try:
        body = await exported(services, filters, fmt)
    except BadFilter as bad:
        raise Refused(400, "Cannot download this view", str(bad), viewer) from bad
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        body,
        media_type=MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="gatehouse-audit-{stamp}.{fmt}"'},
    )


async def exported(services: Services, filters: Filters, fmt: ExportFormat) -> str:
    """What `AuditTrail.export` writes for the view, narrowed by the filters it lacks."""
    since, until = filters.window()
    equal = filters.equal()
    out = io.StringIO()
    await services.audit.export(
        out,
        format=fmt,
        since=since,
        until=until,
        principal=equal["principal"],
        action_kind=equal["action_kind"],
    )
    narrower = {k: v for k in ("principal_kind", "outcome") if (v := equal[k]) is not None}
    return _narrowed(out.getvalue(), fmt, narrower) if narrower else out.getvalue()


def _narrowed(text: str, fmt: ExportFormat, wanted: Mapping[str, str]) -> str:
    """Keep the lines (or CSV rows) whose columns hold the wanted values, bytes unchanged."""
    if fmt == "jsonl":
        # split on "\n" only: an event's text may hold other characters Python treats as breaks
        lines = [line for line in text.split("\n") if line]
        return "".join(f"{line}\n" for line in lines if _matches(json.loads(line), wanted))
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(row for row in rows if _matches(dict(zip(header, row, strict=True)), wanted))
    return out.getvalue()


def _matches(record: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    return all(record.get(name) == value for name, value in wanted.items())
