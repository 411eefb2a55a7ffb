"""The audit trail for compliance: filter, page, see the chain verified, download.

GET /console/audit          filters (from, until, principal, people vs agents, action
                            kind, outcome, one action), 50 events a page newest first
                            (Older: before the last seq, Newer: after the first), each
                            action's status now beside the one its event recorded, the
                            chain's verification (re-checked at most once a minute: it
                            reads the whole trail)
GET /console/audit/export   the same filtered view as CSV or JSONL, through
                            `AuditTrail.export`; the filters it lacks (principal kind,
                            outcome, action) are applied here to what it wrote. The
                            download is itself audited (`audit.exported`)
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

from gateway.actions import ledger
from gateway.actions.store import Status
from gateway.audit import (
    EXPORTED,
    AuditTrail,
    ExportFormat,
    StoredEvent,
    Verification,
    export_event,
)
from gateway.console.access import Page, Viewer, names
from gateway.console.pages import ConsoleRoute, Refused, render
from gateway.console.signin import ServicesDep, allowed
from gateway.services import Services
from gateway.telemetry import current_trace_id

PAGE_SIZE = 50
VERIFY_EVERY = 60.0  # seconds a verification result is shown before the chain is read again
OUTCOMES = (*(s.value for s in Status), "RELOADED", "READ", EXPORTED)
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
    action_id: str = ""

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
        return moment(self.since, "From", end=False), moment(self.until, "Until", end=True)

    def equal(self) -> dict[str, str | None]:
        """The filters that match one column exactly."""
        return {
            "principal": self.principal or None,
            "principal_kind": self.principal_kind or None,
            "action_kind": self.action_kind or None,
            "outcome": self.outcome or None,
            "action_id": self.action_id or None,
        }

    def chosen(self) -> dict[str, str]:
        """The filters set, by name: what an export's audit event records."""
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name))}


class BadFilter(ValueError):
    """A filter that cannot be read; says which, in words."""


def moment(text: str, label: str, *, end: bool) -> datetime | None:
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
    older: Annotated[int | None, Query(ge=0)] = None,
    newer: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """One page of the filtered trail, newest first, with the chain's status."""
    filters = Filters.of(request.query_params)
    events: list[StoredEvent] = []
    more, error = False, None
    try:
        since, until = filters.window()
        events, more = await services.audit.query(
            since=since,
            until=until,
            **filters.equal(),
            limit=PAGE_SIZE,
            after_seq=newer,
            before_seq=None if newer is not None else older,
            newest_first=newer is None,
        )
    except BadFilter as bad:
        error = str(bad)
    if newer is not None:  # read oldest first from `newer` on; shown newest first
        events.reverse()
    has_newer = more if newer is not None else older is not None
    has_older = more if newer is None else True
    return render(
        "audit.html",
        viewer=viewer,
        status=400 if error else 200,
        active=Page.AUDIT.value,
        filters=filters,
        events=events,
        now_status=await ledger.current_statuses(
            services.engine, (e.action_id for e in events if e.action_id)
        ),
        names=names(services),
        newer_query=filters.query(newer=events[0].seq) if has_newer and events else None,
        older_query=filters.query(older=events[-1].seq) if has_older and events else None,
        paged=older is not None or newer is not None,
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
    await record_export(
        services, viewer, what="events", fmt=fmt, filters=filters.chosen(), rows=rows(body, fmt)
    )
    return download(body, fmt, "audit")


def rows(body: str, fmt: ExportFormat) -> int:
    """How many records an export holds: JSONL lines, or CSV rows but the header (a CSV
    value may span lines inside its quotes, so rows are read, not lines counted)."""
    if fmt == "jsonl":
        return sum(1 for line in body.split("\n") if line)
    return max(sum(1 for _ in csv.reader(io.StringIO(body, newline=""))) - 1, 0)


def download(body: str, fmt: ExportFormat, name: str) -> Response:
    """An export as a file named for what and when."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        body,
        media_type=MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="gatehouse-{name}-{stamp}.{fmt}"'},
    )


async def record_export(
    services: Services,
    viewer: Viewer,
    *,
    what: str,
    fmt: ExportFormat,
    filters: Mapping[str, str],
    rows: int,
) -> None:
    """Audit a download: who took which view of what, in which format, how many records."""
    principal = viewer.principal
    await services.audit.append(
        export_event(
            principal=principal.id,
            principal_kind=principal.kind.value,
            on_behalf_of=principal.on_behalf_of,
            channel="console",
            trace_id=current_trace_id(),
            export=what,
            format=fmt,
            filters=filters,
            rows=rows,
        )
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
    narrower = {
        k: v for k in ("principal_kind", "outcome", "action_id") if (v := equal[k]) is not None
    }
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
