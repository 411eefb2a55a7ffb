"""What a write comes to, and how it is kept: the write path's types and its last step.

    WriteRequest -> ... -> Found (steps 4 to 8, nothing saved) -> Outcomes.finish -> WriteResult
                                                                  │
                                  the action's new state, its announcement to other replicas
                                  and its audit event: one change (audit.Prelude), or none

Every step of the write path and every move of an existing action (moves.py) imports its
types from here, and saves through `Outcomes`, so an action is stored and audited one way.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NoReturn

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import approvals, invalidation
from gateway.actions import store
from gateway.actions.store import FINAL, Action, Status
from gateway.audit import AuditTrail, action_event
from gateway.authz import Decision, Policy
from gateway.catalog import Catalog
from gateway.errors import ActionError, InvalidArgument
from gateway.freshness import Freshness
from gateway.leases import Leases
from gateway.principals import Authenticator, Principal
from gateway.telemetry import tracer
from sources.actions import ActionKind, Problem

log = logging.getLogger("gatehouse.writes")


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One write, as any front door hands it over."""

    kind: str
    input: Mapping[str, Any]
    channel: str = "graphql"
    idempotency_key: str | None = None
    dry_run: bool = False
    expected_version: str | None = None


@dataclass(frozen=True, slots=True)
class WriteError:
    """Why a write did not apply, in a form a program can act on."""

    code: str
    message: str
    field: str | None = None
    current_version: str | None = None  # a CONFLICT's: the target's version now


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The one shape every write returns."""

    status: Status
    action: Action | None
    errors: tuple[WriteError, ...] = ()
    freshness: Freshness | None = None
    approvers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `can` answers: the decision, and who could approve."""

    decision: Decision
    problems: tuple[Problem, ...]
    approvers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Found:
    """What steps 4 to 8 came to, before it is saved."""

    action: Action
    status: Status
    validation: Sequence[Problem] = ()
    errors: Sequence[WriteError] = ()
    error: str | None = None
    result: dict[str, Any] | None = None
    expires_at: datetime | None = None
    freshness: Freshness | None = None
    evicted: Sequence[tuple[str, str]] = ()


class Outcomes:
    """Saves actions with their audit events, and answers in the one result shape."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        audit: AuditTrail,
        policy: Policy,
        catalog: Catalog,
        authenticator: Authenticator,
        leases: Leases,
        clock: Callable[[], datetime],
        on_outcome: Callable[[Action], None],
    ) -> None:
        self.engine = engine
        self.audit = audit
        self.policy = policy
        self.catalog = catalog
        self.principals = authenticator
        self.leases = leases
        self.clock = clock
        self._on_outcome = on_outcome  # metrics

    def kind(self, name: str) -> ActionKind:
        """The configured action of a kind, or BAD_ARGUMENT naming the ones there are."""
        found = self.catalog.get(name)
        if found is None:
            raise InvalidArgument(
                "action", f"unknown action '{name}'; one of {sorted(self.catalog)}"
            )
        return found

    async def finish(
        self,
        found: Found,
        *,
        actor: Principal | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> WriteResult:
        """Save what a write came to, with its audit event, and answer with it."""
        action = found.action
        finished = replace(
            action,
            status=found.status,
            updated_at=self.clock(),
            error=found.error,
            validation=[p.as_dict() for p in found.validation] or action.validation,
            result=found.result,
            expires_at=found.expires_at or action.expires_at,
            lease_until=None,
        )
        event = f"action.{found.status.value.lower()}"
        saved = await self.save(action, finished, event, actor, dict(extra or {}), found.evicted)
        self.leases.release(action.id)
        if saved is None:
            raise ActionError("ACTION_CHANGED", f"action {action.id} was changed concurrently")
        self._on_outcome(saved)
        _log(saved)
        return self._answer(saved, found)

    def _answer(self, action: Action, found: Found) -> WriteResult:
        status = found.status
        approvers = (
            tuple(self.approvers_for(action))
            if status in (Status.PENDING_APPROVAL, Status.DRY_RUN) and action.decision == "review"
            else ()
        )
        errors = [
            *found.errors,
            *(WriteError("INVALID", p.message, p.field) for p in found.validation),
        ]
        if status is Status.DENIED:
            errors.append(WriteError("DENIED", f"{action.rule}: {action.reason}"))
        if status is Status.PENDING_APPROVAL and len(approvers) < action.approvals_required:
            # Said now, not discovered when the action quietly expires.
            errors.append(
                WriteError(
                    "NOT_ENOUGH_APPROVERS",
                    f"{action.approvals_required} approvals are needed but only "
                    f"{len(approvers)} configured principal(s) may give one; it will expire "
                    "unless an administrator adds approvers",
                )
            )
        return WriteResult(status, action, tuple(errors), found.freshness, approvers)

    async def save(
        self,
        before: Action,
        after: Action,
        event: str,
        actor: Principal | None,
        extra: Mapping[str, Any],
        evicted: Sequence[tuple[str, str]] = (),
    ) -> Action | None:
        """Store the change and its audit event together, or neither; None if it lost a race.

        Revision 0 is an action not stored yet (a dry run). The change, its announcement to
        other replicas and the audit event go to the database as one (audit.Prelude): on
        PostgreSQL, one statement.
        """
        saved = replace(after, revision=before.revision + 1)
        audited = self.event(saved, event, actor, extra)
        change = store.inserting(saved) if before.revision == 0 else store.saving(before, saved)
        change = invalidation.announcing(change, evicted, self.engine.dialect.name)
        with tracer().start_as_current_span("write audit", attributes={"gatehouse.event": event}):
            appended = await self.audit.append(audited, prelude=change)
        return None if appended is None else saved

    async def refused(
        self, action: Action, actor: Principal, move: str, code: str, why: str
    ) -> NoReturn:
        """Audit a refused move on an action, then refuse it."""
        event = "approval.refused" if move in ("approve", "reject") else f"action.{move}_refused"
        await self.record(action, event, actor, {"move": move, "code": code, "why": why})
        raise ActionError(code, why)

    async def record(
        self, action: Action, event: str, actor: Principal | None, extra: Mapping[str, Any]
    ) -> None:
        """Audit something that happened to an action without changing it."""
        await self.audit.append(self.event(action, event, actor, extra))

    def event(
        self, action: Action, event: str, actor: Principal | None, extra: Mapping[str, Any]
    ) -> Any:
        """The audit event of one change, with classified input values masked."""
        return action_event(
            action,
            event,
            actor=actor,
            requester=None if actor else self.principals.principal(action.principal),
            masked_input=self.catalog.masked(action.kind, action.input),
            extra=extra,
        )

    def result(self, action: Action) -> WriteResult:
        """A stored action in the one result shape."""
        errors: list[WriteError] = [
            WriteError("INVALID", str(p.get("message")), p.get("field")) for p in action.validation
        ]
        if action.status is Status.DENIED:
            errors.append(WriteError("DENIED", f"{action.rule}: {action.reason}"))
        elif action.error and (action.status in FINAL or action.status is Status.IN_DOUBT):
            errors.append(WriteError(action.status.value, action.error))
        approvers = (
            tuple(self.approvers_for(action)) if (action.status is Status.PENDING_APPROVAL) else ()
        )
        return WriteResult(action.status, action, tuple(errors), None, approvers)

    async def get(self, action_id: str) -> Action | None:
        """One action with its approvals."""
        async with self.engine.connect() as connection:
            return await store.get(connection, action_id)

    def approvers_for(self, action: Action) -> list[str]:
        """Who could approve `action` now."""
        kind = self.catalog.get(action.kind)
        if kind is None:
            return []
        try:
            amount = kind.amount(kind.Input.model_validate(action.input))
        except ValidationError:
            return []
        return approvals.eligible(self.principals.all(), action, amount=amount, policy=self.policy)


def _log(action: Action) -> None:
    log.info(
        "write",
        extra={
            "action_id": action.id,
            "kind": action.kind,
            "status": action.status.value,
            "principal": action.principal,
            "on_behalf_of": action.on_behalf_of,
            "channel": action.channel,
            "rule": action.rule,
        },
    )


def decided(action: Action, decision: Decision) -> Action:
    """`action` with policy's decision on it."""
    return replace(
        action,
        decision=decision.outcome.value,
        rule=decision.rule,
        reason=decision.reason,
        policy_version=decision.policy_version,
        approvals_required=decision.approvals_required,
    )


def input_digest(kind: str, raw: Mapping[str, Any]) -> str:
    """The digest an approval is bound to."""
    return digest({"kind": kind, "input": raw})


def digest(value: Any) -> str:
    """SHA-256 of the canonical JSON of `value`."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def request_digest(action: Action, request: WriteRequest) -> str:
    """The digest that tells a replay of the same keyed request from a reuse of its key."""
    return digest(
        {
            "digest": action.input_digest,
            "dry_run": request.dry_run,
            "expected": request.expected_version,
        }
    )
