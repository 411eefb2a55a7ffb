"""GraphQL types of the write path: WriteResult, Action, decisions, diffs, and `can`.

Mutation inputs are generated from the actions' pydantic models, so GraphQL, MCP and the
pipeline share one definition of every input.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

import strawberry
from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from strawberry.experimental.pydantic import input as pydantic_input
from strawberry.scalars import JSON

from gateway.actions.store import Action as StoredAction
from gateway.actions.store import Status
from gateway.graphql.context import Info
from gateway.graphql.types import Freshness
from gateway.outcomes import Verdict, WriteResult

strawberry.enum(Status, name="WriteStatus")

_INPUTS: dict[type[BaseModel], Any] = {}


def graphql_input(model: type[BaseModel]) -> Any:
    """The GraphQL input type of a pydantic model (nested models first)."""
    if model not in _INPUTS:
        for nested in _nested_models(model):
            graphql_input(nested)
        shell = type(model.__name__, (), {"__doc__": model.__doc__})
        _INPUTS[model] = pydantic_input(model=model, all_fields=True, name=model.__name__)(shell)
    return _INPUTS[model]


def _nested_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    found = []
    for field in model.model_fields.values():
        stack: list[Any] = [field.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                found.append(annotation)
            stack.extend(typing.get_args(annotation))
    return found


@strawberry.type
class PolicyDecision:
    """What policy decided, by which rule, and why."""

    outcome: str = strawberry.field(description="allow, deny or review")
    rule: str = strawberry.field(description="The rule's code: stable, for programs.")
    reason: str = strawberry.field(description="The rule's reason: for people.")
    policy_version: str
    approvals_required: int


@strawberry.type
class ValidationMessage:
    """One reason the input cannot be applied."""

    field: str | None
    message: str
    rule: str


@strawberry.type
class ApprovalVerdict:
    """One approver's verdict on an action."""

    approver: str
    verdict: str
    comment: str
    at: datetime


@strawberry.type
class Diff:
    """What the write changes on the record: before and after, and how fresh `before` is."""

    before: JSON | None
    after: JSON | None
    freshness: Freshness | None = None


@strawberry.type(name="Action")
class ActionNode:
    """One governed write and everything decided about it."""

    stored: strawberry.Private[StoredAction]
    diff_freshness: strawberry.Private[Freshness | None] = None

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.stored.id)

    @strawberry.field
    def kind(self) -> str:
        return self.stored.kind

    @strawberry.field
    def status(self) -> Status:
        return self.stored.status

    @strawberry.field
    def principal(self) -> str:
        return self.stored.principal

    @strawberry.field
    def on_behalf_of(self) -> str | None:
        return self.stored.on_behalf_of

    @strawberry.field
    def channel(self) -> str:
        return self.stored.channel

    @strawberry.field
    def target(self) -> str:
        return self.stored.target

    @strawberry.field(description="The input; personal data masked unless you are granted it.")
    def input(self, info: Info) -> JSON:
        return shown_input(info, self.stored.kind, self.stored.input)

    @strawberry.field
    def decision(self) -> PolicyDecision:
        s = self.stored
        return PolicyDecision(
            outcome=s.decision,
            rule=s.rule,
            reason=s.reason,
            policy_version=s.policy_version,
            approvals_required=s.approvals_required,
        )

    @strawberry.field
    def validation(self) -> list[ValidationMessage]:
        return [
            ValidationMessage(
                field=v.get("field"), message=str(v.get("message")), rule=str(v.get("rule"))
            )
            for v in self.stored.validation
        ]

    @strawberry.field
    def approvals(self) -> list[ApprovalVerdict]:
        return [
            ApprovalVerdict(approver=a.approver, verdict=a.verdict, comment=a.comment, at=a.at)
            for a in self.stored.approvals
        ]

    @strawberry.field(description="Who could approve it now (pending actions only).")
    def approvers(self, info: Info) -> list[str]:
        if self.stored.status is not Status.PENDING_APPROVAL:
            return []
        return info.context.services.writes.approvers_for(self.stored)

    @strawberry.field
    def diff(self) -> Diff | None:
        diff = self.stored.diff
        if diff is None:
            return None
        return Diff(
            before=_json(diff.get("before")),
            after=_json(diff.get("after")),
            freshness=self.diff_freshness,
        )

    @strawberry.field
    def expected_version(self) -> str | None:
        return self.stored.expected_version

    @strawberry.field
    def result(self) -> JSON | None:
        return _json(self.stored.result)

    @strawberry.field
    def error(self) -> str | None:
        return self.stored.error

    @strawberry.field
    def trace_id(self) -> str:
        return self.stored.trace_id

    @strawberry.field
    def created_at(self) -> datetime:
        return self.stored.created_at

    @strawberry.field
    def updated_at(self) -> datetime:
        return self.stored.updated_at

    @strawberry.field
    def expires_at(self) -> datetime | None:
        return self.stored.expires_at


def shown_input(info: Info, kind_name: str, values: Mapping[str, Any]) -> JSON:
    """An action's input as the caller may see it: personal data masked unless granted."""
    catalog = info.context.services.catalog
    kind = catalog.get(kind_name)
    if kind is not None and info.context.granted_classification(kind.entity, "pii"):
        return _json(values)
    return _json(catalog.masked(kind_name, values))


def _json(value: Any) -> JSON:
    # What an implementation or a front door put in (a Decimal, a datetime) as JSON values:
    # the response is JSON, and one value that is not must not fail the whole answer.
    return cast(JSON, to_jsonable_python(value, fallback=str))


@strawberry.type
class WriteError:
    """Why a write did not apply: a stable code, a message, and the field when there is one."""

    code: str
    message: str
    field: str | None


@strawberry.type(name="WriteResult")
class WriteResultNode:
    """The one shape every write returns."""

    status: Status
    action: ActionNode | None
    errors: list[WriteError]


def write_result(result: WriteResult, info: Info) -> WriteResultNode:
    """The GraphQL view of a pipeline result."""
    freshness = None if result.freshness is None else Freshness.of(result.freshness, info)
    action = (
        None
        if result.action is None
        else ActionNode(stored=result.action, diff_freshness=freshness)
    )
    errors = [WriteError(code=e.code, message=e.message, field=e.field) for e in result.errors]
    return WriteResultNode(status=result.status, action=action, errors=errors)


@strawberry.type
class CanResult:
    """What would happen to a write, without any side effect."""

    decision: PolicyDecision
    approvers: list[str] = strawberry.field(description="Who could approve it, if reviewed.")
    validation: list[ValidationMessage] = strawberry.field(
        description="Problems with the input's shape (business rules run on the real write)."
    )


def can_result(verdict: Verdict) -> CanResult:
    """The GraphQL view of `can`."""
    d = verdict.decision
    return CanResult(
        decision=PolicyDecision(
            outcome=d.outcome.value,
            rule=d.rule,
            reason=d.reason,
            policy_version=d.policy_version,
            approvals_required=d.approvals_required,
        ),
        approvers=list(verdict.approvers),
        validation=[
            ValidationMessage(field=p.field, message=p.message, rule=p.rule)
            for p in verdict.problems
        ],
    )
