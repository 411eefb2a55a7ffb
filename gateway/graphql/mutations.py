"""Mutations (one per governed action, generated from the action kinds) and the queries
that follow actions: `action`, `actions`, `can`, `auditEvents`.

Every mutation hands its input to `pipeline.Writes.submit`; nothing here decides anything.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Optional, cast

import strawberry
from pydantic_core import to_jsonable_python
from strawberry.scalars import JSON

from gateway.actions.store import Status
from gateway.audit import StoredEvent
from gateway.errors import ConfigError, Forbidden, InvalidArgument
from gateway.graphql.context import Info
from gateway.graphql.types import Connection, Edge, PageInfo
from gateway.graphql.writes import (
    ActionNode,
    CanResult,
    WriteResultNode,
    can_result,
    graphql_input,
    write_result,
)
from gateway.outcomes import WriteRequest
from gateway.pagination import page_size
from sources.actions import ActionKind, control_character


def _mutation(kind: ActionKind) -> Any:
    """The mutation of one action kind: its input type comes from the kind's pydantic model."""

    async def resolve(
        info: Info,
        input: Any,
        idempotency_key: str | None = None,
        dry_run: bool = False,
        expected_version: str | None = None,
    ) -> WriteResultNode:
        request = WriteRequest(
            kind=kind.kind,
            # As JSON, as the other front doors send it: an input that does not parse is
            # kept and echoed as it came, and a Decimal is no JSON value.
            input=to_jsonable_python(strawberry.asdict(input)),
            channel="graphql",
            idempotency_key=idempotency_key,
            dry_run=dry_run,
            expected_version=expected_version,
        )
        result = await info.context.services.writes.submit(request, info.context.principal)
        return write_result(result, info)

    # Strawberry reads the argument types from the annotations; the input type is made
    # at import time from the model, so the annotations are set here rather than written.
    resolve.__annotations__ = {
        "info": Info,
        "input": graphql_input(kind.Input),
        "idempotency_key": Optional[str],  # noqa: UP045 - a runtime annotation object
        "dry_run": bool,
        "expected_version": Optional[str],  # noqa: UP045 - a runtime annotation object
        "return": WriteResultNode,
    }
    return strawberry.mutation(
        resolver=resolve,
        name=kind.mutation,
        description=f"{kind.summary} Governed: policy, validation, optional approval, audit. "
        "dryRun runs every step but the write; a stale expectedVersion is a CONFLICT.",
    )


def untypeable_input(kinds: Sequence[ActionKind]) -> ConfigError | None:
    """Which kind's Input GraphQL cannot type, found by giving each a schema of its own:
    Strawberry only meets a field's type when the whole schema is built.
    """
    for kind in kinds:

        def probe(input: Any) -> bool:
            return True

        probe.__annotations__ = {"input": graphql_input(kind.Input), "return": bool}
        probe_query = strawberry.type(type("Probe", (), {"probe": strawberry.field(probe)}))
        try:
            strawberry.Schema(query=probe_query)
        except TypeError as exc:  # Strawberry's word for an annotation it cannot map
            reference = f"{type(kind).__module__}:{type(kind).__qualname__}"
            return ConfigError(
                f"action '{kind.kind}' ('{reference}'): its Input cannot be a GraphQL input "
                f"({exc}); use str, int, bool, Decimal, a date, a list, an Enum or a model"
            )
    return None


def free_text(argument: str, value: str) -> str:
    """A multi-line text argument (a comment, a reason), refused if it holds control
    characters other than tab and line feed."""
    if (found := control_character(value, multiline=True)) is not None:
        raise InvalidArgument(argument, f"control characters are not allowed (found {found})")
    return value


def _approval_mutations() -> dict[str, Any]:
    async def approve_action(info: Info, id: strawberry.ID, comment: str = "") -> WriteResultNode:
        """Approve a pending action; the last approval needed executes it."""
        comment = free_text("comment", comment)
        writes = info.context.services.writes
        return write_result(await writes.approve(str(id), info.context.principal, comment), info)

    async def reject_action(info: Info, id: strawberry.ID, reason: str) -> WriteResultNode:
        """Reject a pending action with a reason."""
        if len(free_text("reason", reason).strip()) < 3:
            raise InvalidArgument("reason", "say why, in a few words")
        writes = info.context.services.writes
        return write_result(await writes.reject(str(id), info.context.principal, reason), info)

    async def retry_action(info: Info, id: strawberry.ID) -> WriteResultNode:
        """Replay a FAILED action: policy and validation run again before the write."""
        writes = info.context.services.writes
        return write_result(await writes.retry(str(id), info.context.principal), info)

    async def resolve_action(
        info: Info, id: strawberry.ID, applied: bool, note: str
    ) -> WriteResultNode:
        """Settle an IN_DOUBT action as you found it at the system of record (operators)."""
        if len(free_text("note", note).strip()) < 3:
            raise InvalidArgument("note", "say what you found, in a few words")
        writes = info.context.services.writes
        result = await writes.resolve(str(id), info.context.principal, applied=applied, note=note)
        return write_result(result, info)

    return {
        "approve_action": strawberry.mutation(resolver=approve_action),
        "reject_action": strawberry.mutation(resolver=reject_action),
        "retry_action": strawberry.mutation(resolver=retry_action),
        "resolve_action": strawberry.mutation(resolver=resolve_action),
    }


def build_mutation(kinds: Sequence[ActionKind]) -> type:
    """The Mutation type: one mutation per configured action, and the moves of actions."""
    return strawberry.type(
        type(
            "Mutation",
            (),
            {
                "__doc__": "Governed writes into the systems of record.",
                **{kind.kind.replace(".", "_"): _mutation(kind) for kind in kinds},
                **_approval_mutations(),
            },
        )
    )


@strawberry.type
class AuditEventNode:
    """One event of the tamper-evident audit trail."""

    seq: int
    id: strawberry.ID
    at: datetime
    trace_id: str
    event: str
    principal: str
    principal_kind: str
    on_behalf_of: str | None
    channel: str
    action_id: str | None
    action_kind: str | None
    target: str | None
    outcome: str
    payload: JSON
    prev_hash: str
    hash: str


@strawberry.input
class AuditFilter:
    """Which audit events to list."""

    since: datetime | None = None
    until: datetime | None = None
    principal: str | None = None
    principal_kind: str | None = None
    action_kind: str | None = None
    outcome: str | None = None
    action_id: str | None = None


def _cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def _uncursor(cursor: str | None, argument: str = "after") -> str | None:
    if cursor is None:
        return None
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise InvalidArgument(argument, "malformed cursor") from exc


def _action_position(cursor: str | None) -> tuple[datetime, str] | None:
    raw = _uncursor(cursor)
    if raw is None:
        return None
    created, _, action_id = raw.partition("|")
    try:
        return datetime.fromisoformat(created), action_id
    except ValueError as exc:
        raise InvalidArgument("after", "not a cursor of the actions list") from exc


def _sees_everything(info: Info, kind: str = "*") -> bool:
    policy, principal = info.context.services.policy, info.context.principal
    return (
        policy.decide(principal, "audit", "read").allowed
        or policy.decide(principal, kind, "approve").allowed
    )


@strawberry.type
class ActionQueries:
    """Follow governed writes: one action, the list (FAILED is the exception queue), `can`."""

    @strawberry.field(description="One action: its decision, approvals, diff and outcome.")
    async def action(self, info: Info, id: strawberry.ID) -> ActionNode | None:
        writes = info.context.services.writes
        await writes.expire_due()
        found = await writes.get(str(id))
        if found is None:
            return None
        mine = info.context.principal.id in (found.principal, found.on_behalf_of)
        if not mine and not _sees_everything(info, found.kind):
            raise Forbidden(f"{info.context.principal.id} may not see action {id}")
        return ActionNode(stored=found)

    @strawberry.field(
        description="Actions newest first; status: FAILED is the exception "
        "queue. Approvers and compliance see all; others their own."
    )
    async def actions(
        self,
        info: Info,
        status: Status | None = None,
        principal: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[ActionNode]:
        limits = info.context.services.config.limits
        size = page_size(first, default=limits.default_page_size, maximum=limits.max_page_size)
        visible_to = None if _sees_everything(info) else info.context.principal.id
        found, more = await info.context.services.writes.page(
            status=status,
            principal=principal,
            visible_to=visible_to,
            limit=size,
            after=_action_position(after),
        )
        edges = [
            Edge(node=ActionNode(stored=a), cursor=_cursor(f"{a.created_at.isoformat()}|{a.id}"))
            for a in found
        ]
        end = edges[-1].cursor if edges else None
        return Connection(edges=edges, page_info=PageInfo(has_next_page=more, end_cursor=end))

    @strawberry.field(
        description="What would happen to this write, without side effects: "
        "the decision, its rule and reason code, and who could approve."
    )
    def can(self, info: Info, action: str, input: JSON) -> CanResult:
        by_name = {k.mutation: k.kind for k in info.context.services.catalog.kinds()}
        kind = by_name.get(action, action)
        raw = cast(dict[str, Any], input) if isinstance(input, dict) else {}
        verdict = info.context.services.writes.can(kind, raw, info.context.principal)
        return can_result(verdict)

    @strawberry.field(description="The audit trail, oldest first (compliance only).")
    async def audit_events(
        self,
        info: Info,
        filter: AuditFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[AuditEventNode]:
        require_audit_reader(info)
        limits = info.context.services.config.limits
        size = page_size(first, default=limits.default_page_size, maximum=limits.max_page_size)
        raw = _uncursor(after)
        if raw is not None and not raw.isdecimal():
            raise InvalidArgument("after", "not a cursor of the audit trail")
        f = filter or AuditFilter()
        require_aware_period(f.since, f.until)
        events, more = await info.context.services.audit.query(
            since=f.since,
            until=f.until,
            principal=f.principal,
            action_kind=f.action_kind,
            outcome=f.outcome,
            principal_kind=f.principal_kind,
            action_id=f.action_id,
            limit=size,
            after_seq=None if raw is None else int(raw),
        )
        edges = [Edge(node=_event(e), cursor=_cursor(str(e.seq))) for e in events]
        end = edges[-1].cursor if edges else None
        return Connection(edges=edges, page_info=PageInfo(has_next_page=more, end_cursor=end))


def require_audit_reader(info: Info) -> None:
    """Raise Forbidden unless policy lets the caller read the audit trail (compliance)."""
    if not info.context.services.policy.decide(info.context.principal, "audit", "read").allowed:
        raise Forbidden(f"{info.context.principal.id} may not read the audit trail")


def require_aware_period(since: datetime | None, until: datetime | None) -> None:
    """Refuse a `filter.since` or `filter.until` without a time zone: whose 10:00 is it?"""
    for name, value in (("filter.since", since), ("filter.until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidArgument(name, "give a time zone, e.g. 2026-11-23T10:00:00Z")


def _event(event: StoredEvent) -> AuditEventNode:
    return AuditEventNode(
        seq=event.seq,
        id=strawberry.ID(event.id),
        at=event.at,
        trace_id=event.trace_id,
        event=event.event,
        principal=event.principal,
        principal_kind=event.principal_kind,
        on_behalf_of=event.on_behalf_of,
        channel=event.channel,
        action_id=event.action_id,
        action_kind=event.action_kind,
        target=event.target,
        outcome=event.outcome,
        payload=cast(JSON, event.payload),
        prev_hash=event.prev_hash,
        hash=event.hash,
    )
