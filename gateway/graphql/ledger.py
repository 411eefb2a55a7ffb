"""The action ledger as GraphQL, for compliance: `ledger(filter, first, after, last, before)`.

    filter (LedgerFilter)          ->  actions.ledger.Query (aware times only)
    first/after  older than after  ->  ledger.page, keyset both ways, newest first
    last/before  newer than before
    totals (when selected)         ->  ledger.totals: counts by status; sums by status,
                                       kind and currency, null past SUM_LIMIT

Who may read it is who may read the audit trail (policy: `audit`, `read`), refused as
`auditEvents` refuses. An entry's input is shown as `Action.input` shows it (writes.py):
personal data masked unless the caller is granted it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import strawberry
from strawberry.scalars import JSON

from gateway.actions import ledger
from gateway.actions.ledger import BadCursor, Cursor, Entry
from gateway.actions.store import Status
from gateway.catalog import Catalog
from gateway.errors import InvalidArgument
from gateway.graphql.context import Info
from gateway.graphql.mutations import require_audit_reader, require_aware_period
from gateway.graphql.types import Edge, PageInfo
from gateway.graphql.writes import ApprovalVerdict, PolicyDecision, shown_input
from gateway.pagination import decode_cursor, encode_cursor, page_size

_LIST = "ledger"  # the cursors' list name: another list's cursor is refused


@strawberry.input
class LedgerFilter:
    """Which actions the ledger holds; every filter given must match."""

    search: str | None = strawberry.field(
        default=None, description="An action id, a trace id, or part of a target (SKU-0001)."
    )
    who: str | None = strawberry.field(
        default=None, description="The requester, or the person an agent acted for."
    )
    approver: str | None = strawberry.field(
        default=None, description="Someone who approved or rejected it."
    )
    kind: str | None = strawberry.field(default=None, description="inventory.adjust, ...")
    status: Status | None = strawberry.field(default=None, description="Its status now.")
    since: datetime | None = strawberry.field(
        default=None, description="Requested at or after (with a time zone)."
    )
    until: datetime | None = strawberry.field(
        default=None, description="Requested before (with a time zone)."
    )


@strawberry.type
class LedgerAmount:
    """What an action's contract says is at stake: an exact decimal string and its currency."""

    amount: Decimal
    currency: str | None = strawberry.field(description="Null when the action recorded none.")


@strawberry.type
class LedgerApproval(ApprovalVerdict):
    """One approver's verdict, and whether it still counts."""

    counted: bool = strawberry.field(
        description="Given on this input under this policy; false once a change voided it."
    )


@strawberry.type
class LedgerEntry:
    """One action as compliance reads it: who asked, for whom, what policy and people decided."""

    entry: strawberry.Private[Entry]  # its input unmasked: for `input` to mask
    id: strawberry.ID
    kind: str
    mutation: str | None = strawberry.field(description="Null when the kind is not configured.")
    status: Status = strawberry.field(description="Its status now.")
    requester: str
    on_behalf_of: str | None
    channel: str
    target: str
    decision: PolicyDecision
    approvals: list[LedgerApproval]
    created_at: datetime
    settled_at: datetime | None = strawberry.field(
        description="When it reached its final status; null while it may still change."
    )
    expires_at: datetime | None
    trace_id: str

    @strawberry.field(description="The money at stake; null when the action carries none.")
    def amount(self, info: Info) -> LedgerAmount | None:
        money = ledger.money_of(self.entry, info.context.services.catalog)
        return None if money is None else LedgerAmount(amount=money.amount, currency=money.currency)

    @strawberry.field(description="The input; personal data masked unless you are granted it.")
    def input(self, info: Info) -> JSON:
        return shown_input(info, self.entry.kind, self.entry.input)


@strawberry.type
class LedgerStatusCount:
    """How many actions of the view are in one status now."""

    status: Status
    count: int


@strawberry.type
class LedgerSum:
    """The money of one status, kind and currency: never euros added to francs."""

    status: Status
    kind: str
    currency: str | None
    amount: Decimal
    actions: int = strawberry.field(description="How many actions the sum adds up.")


@strawberry.type
class LedgerTotals:
    """The whole view's totals, not the page's."""

    count: int
    by_status: list[LedgerStatusCount]
    sums: list[LedgerSum] | None = strawberry.field(
        description=f"Null when the view holds more than {ledger.SUM_LIMIT:,} actions: "
        "not summed at all rather than summed in part."
    )


@strawberry.type
class LedgerPageInfo(PageInfo):
    """Relay page info, both ways: `endCursor` as `after` walks older, `startCursor` as
    `before` walks newer."""

    has_previous_page: bool
    start_cursor: str | None


@strawberry.type
class Ledger:
    """A page of the ledger, newest first, and the totals of the whole view."""

    query: strawberry.Private[ledger.Query]
    edges: list[Edge[LedgerEntry]]
    page_info: LedgerPageInfo

    @strawberry.field(description="Counts by status, and money by status, kind and currency.")
    async def totals(self, info: Info) -> LedgerTotals:
        services = info.context.services
        return _totals(await ledger.totals(services.engine, self.query, catalog=services.catalog))


@strawberry.type
class LedgerQueries:
    """The action ledger, for compliance."""

    @strawberry.field(
        description="One entry per action, newest first (compliance only): first/after "
        "walk older, last/before walk newer."
    )
    async def ledger(
        self,
        info: Info,
        filter: LedgerFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Ledger | None:  # nullable: a refusal leaves the document's other fields answering
        require_audit_reader(info)
        query = _query(filter or LedgerFilter())
        window = _window(info, first=first, after=after, last=last, before=before)
        found = await ledger.page(
            info.context.services.engine,
            query,
            limit=window.size,
            after=window.after,
            before=window.before,
        )
        return _connection(query, found, info.context.services.catalog)


def _query(f: LedgerFilter) -> ledger.Query:
    require_aware_period(f.since, f.until)
    return ledger.Query(
        search=f.search,
        who=f.who,
        approver=f.approver,
        kind=f.kind,
        status=None if f.status is None else f.status.value,
        since=f.since,
        until=f.until,
    )


@dataclass(frozen=True, slots=True)
class _Window:
    """The page asked for: `size` entries older than `after`, newer than `before`, or the
    newest."""

    size: int
    after: Cursor | None = None
    before: Cursor | None = None


def _window(
    info: Info, *, first: int | None, after: str | None, last: int | None, before: str | None
) -> _Window:
    # One direction per page: a Relay client sends first/after or last/before. `last`
    # alone would be the oldest page, which the ledger's keyset does not start from.
    if after is not None and before is not None:
        raise InvalidArgument("before", "page after a cursor or before one, not both")
    if before is None:
        if last is not None:
            raise InvalidArgument("last", "pages newer than `before`: give both, or use first")
        return _Window(_size(info, first, "first"), after=_place(after, "after"))
    if first is not None:
        raise InvalidArgument("first", "with `before`, the page's size is `last`")
    return _Window(_size(info, last, "last"), before=_place(before, "before"))


def _size(info: Info, asked: int | None, argument: str) -> int:
    limits = info.context.services.config.limits
    return page_size(
        asked, default=limits.default_page_size, maximum=limits.max_page_size, argument=argument
    )


def _place(token: str | None, argument: str) -> Cursor | None:
    position = decode_cursor(_LIST, token, argument=argument)
    if position is None:
        return None
    try:
        return Cursor.parse(position)
    except BadCursor as bad:
        raise InvalidArgument(argument, "not a place in the ledger") from bad


def _connection(query: ledger.Query, found: ledger.LedgerPage, catalog: Catalog) -> Ledger:
    edges = [
        Edge(node=_node(entry, catalog), cursor=encode_cursor(_LIST, entry.cursor.token()))
        for entry in found.entries
    ]
    page_info = LedgerPageInfo(
        has_next_page=found.older is not None,
        end_cursor=edges[-1].cursor if edges else None,
        has_previous_page=found.newer is not None,
        start_cursor=edges[0].cursor if edges else None,
    )
    return Ledger(query=query, edges=edges, page_info=page_info)


def _node(entry: Entry, catalog: Catalog) -> LedgerEntry:
    kind = catalog.get(entry.kind)
    return LedgerEntry(
        entry=entry,
        id=strawberry.ID(entry.id),
        kind=entry.kind,
        mutation=None if kind is None else kind.mutation,
        status=entry.status,
        requester=entry.principal,
        on_behalf_of=entry.on_behalf_of,
        channel=entry.channel,
        target=entry.target,
        decision=PolicyDecision(
            outcome=entry.decision,
            rule=entry.rule,
            reason=entry.reason,
            policy_version=entry.policy_version,
            approvals_required=entry.approvals_required,
        ),
        approvals=[
            LedgerApproval(
                approver=v.approver,
                verdict=v.verdict,
                comment=v.comment,
                at=v.at,
                counted=entry.counts(v),
            )
            for v in entry.approvals
        ],
        created_at=entry.created_at,
        settled_at=entry.settled_at,
        expires_at=entry.expires_at,
        trace_id=entry.trace_id,
    )


def _totals(found: ledger.Totals) -> LedgerTotals:
    sums = None
    if found.sums is not None:
        sums = [
            LedgerSum(
                status=Status(status),
                kind=kind,
                currency=currency,
                amount=amount,
                actions=actions,
            )
            for (status, kind, currency), (amount, actions) in found.sums.items()
        ]
    return LedgerTotals(
        count=found.count,
        by_status=[
            LedgerStatusCount(status=Status(status), count=count)
            for status, count in sorted(found.by_status.items())
        ],
        sums=sums,
    )
