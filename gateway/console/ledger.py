"""The action ledger for compliance: one row per action, whoever asked and whoever decided.

GET /console/ledger          filters (search by action id, trace id or target; requester
                             or the person an agent acted for; approver; kind; status
                             now; period), totals of the whole view (count by status,
                             money by status, kind and currency), 50 rows a page newest
                             first, paged both ways (gateway/actions/ledger.py)
GET /console/ledger/export   every row of the view as CSV or JSONL; audited
                             (`audit.exported`, as the events' download is)

Who may open it is the audit page's rule. Inputs are never shown, and an export holds
them with personal data masked, whatever the reader is granted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response

from gateway.actions import ledger
from gateway.actions.ledger import BadCursor, Cursor, Entry
from gateway.actions.store import Status
from gateway.audit import ExportFormat
from gateway.catalog import Catalog
from gateway.console.access import Page, Viewer, names
from gateway.console.pages import ConsoleRoute, Refused, render
from gateway.console.signin import ServicesDep, allowed
from gateway.console.trail import BadFilter, download, moment, record_export
from gateway.services import Services

PAGE_SIZE = 50
LedgerDep = Annotated[Viewer, Depends(allowed(Page.LEDGER))]  # the audit page's rule


@dataclass(frozen=True, slots=True)
class Filters:
    """The ledger view a reviewer asked for, as typed into the form."""

    q: str = ""
    who: str = ""
    approver: str = ""
    kind: str = ""
    status: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def of(cls, params: Mapping[str, str]) -> Filters:
        """The filters from a query string (unknown parameters are ignored)."""
        return cls(**{f.name: params.get(f.name, "").strip()[:100] for f in fields(cls)})

    def query(self, **extra: str) -> str:
        """This view as a query string, for links (paging, downloads)."""
        return urlencode({k: v for k, v in {**self.chosen(), **extra}.items() if v != ""})

    def chosen(self) -> dict[str, str]:
        """The filters set, by name: what an export's audit event records."""
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name))}

    def ledger_query(self) -> ledger.Query:
        """The view as the ledger's query; BadFilter names a filter that cannot be read."""
        if self.status and self.status not in Status.__members__:
            raise BadFilter(f"Status: '{self.status}' is not a status")
        return ledger.Query(
            search=self.q or None,
            who=self.who or None,
            approver=self.approver or None,
            kind=self.kind or None,
            status=self.status or None,
            since=moment(self.since, "From", end=False),
            until=moment(self.until, "Until", end=True),
        )


def router() -> APIRouter:
    """The ledger page and its download."""
    routes = APIRouter(route_class=ConsoleRoute)
    routes.add_api_route("/ledger", show, methods=["GET"], include_in_schema=False)
    routes.add_api_route("/ledger/export", export, methods=["GET"], include_in_schema=False)
    return routes


async def show(
    request: Request,
    services: ServicesDep,
    viewer: LedgerDep,
    after: Annotated[str | None, Query(max_length=80)] = None,
    before: Annotated[str | None, Query(max_length=80)] = None,
) -> Response:
    """One page of the ledger, with the totals of the whole view."""
    filters = Filters.of(request.query_params)
    try:
        query = filters.ledger_query()
        older, newer = _cursor(after, "after"), _cursor(before, "before")
    except BadFilter as bad:
        return _page(services, viewer, filters, error=str(bad))
    if older is not None and newer is not None:
        return _page(services, viewer, filters, error="Page: ask for older or newer, not both")
    found = await ledger.page(services.engine, query, limit=PAGE_SIZE, after=older, before=newer)
    totals = await ledger.totals(services.engine, query, catalog=services.catalog)
    return _page(
        services,
        viewer,
        filters,
        rows=[row_of(entry, services.catalog) for entry in found.entries],
        totals=totals,
        newer_query=filters.query(before=found.newer.token()) if found.newer else None,
        older_query=filters.query(after=found.older.token()) if found.older else None,
        paged=older is not None or newer is not None,
    )


def _cursor(token: str | None, name: str) -> Cursor | None:
    if not token:
        return None
    try:
        return Cursor.parse(token)
    except BadCursor as bad:
        raise BadFilter(f"Page ({name}): {bad}; start again from the newest") from bad


def _page(
    services: Services, viewer: Viewer, filters: Filters, *, error: str | None = None, **page: Any
) -> Response:
    defaults: dict[str, Any] = {
        "rows": [],
        "totals": None,
        "newer_query": None,
        "older_query": None,
        "paged": False,
    }
    return render(
        "ledger.html",
        viewer=viewer,
        status=400 if error else 200,
        active=Page.LEDGER.value,
        filters=filters,
        error=error,
        names=names(services),
        principals=sorted(p.id for p in services.authenticator.all()),
        kinds=sorted(services.catalog),
        catalog=services.catalog,
        statuses=[s.value for s in Status],
        sum_limit=ledger.SUM_LIMIT,
        **{**defaults, **page},
    )


@dataclass(frozen=True, slots=True)
class Row:
    """One action as a ledger row shows it (nothing of its input)."""

    entry: Entry
    money: ledger.Money | None

    @property
    def amount(self) -> str:
        """The amount with its currency, or a dash for an action with no money."""
        if self.money is None:
            return "—"
        return f"{self.money.amount:,} {self.money.currency or '(currency not recorded)'}"


def row_of(entry: Entry, catalog: Catalog) -> Row:
    """An entry as its row shows it."""
    return Row(entry, ledger.money_of(entry, catalog))


async def export(
    request: Request,
    services: ServicesDep,
    viewer: LedgerDep,
    format: Annotated[str, Query(pattern="^(csv|jsonl)$")] = "csv",
) -> Response:
    """Every row of the view, newest first, as a file to download."""
    filters = Filters.of(request.query_params)
    fmt: ExportFormat = "jsonl" if format == "jsonl" else "csv"
    try:
        query = filters.ledger_query()
    except BadFilter as bad:
        raise Refused(400, "Cannot download this view", str(bad), viewer) from bad
    records = [
        ledger.record(e, services.catalog) async for e in ledger.every(services.engine, query)
    ]
    await record_export(
        services, viewer, what="ledger", fmt=fmt, filters=filters.chosen(), rows=len(records)
    )
    return download(ledger.written(records, fmt), fmt, "ledger")
