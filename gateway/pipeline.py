"""The write path: every write, from GraphQL, MCP or the console, runs through `submit`.

    submit(request, principal)
      1. idempotency   same key + same input -> the first result, never a second execution
                       (the key is claimed while steps 2 to 4 run: _Claiming)
      2. shape         pydantic: field-level messages                     -> INVALID
      3. policy        Casbin: allow | deny | review, with the rule        -> DENIED
      4. plan          fresh state via the connector, business rules, diff -> INVALID
      5. precondition  expectedVersion still current                       -> CONFLICT
      6. dry run       everything but the execution                        -> DRY_RUN
      7. approval      review: a pending action a human must approve       -> PENDING_APPROVAL
      8. execution     on the system of record; failure leaves it FAILED   -> APPLIED | FAILED
    Steps 4 to 8 of a write that executes run in one ERP transaction (WriteEnv.unit): its
    plan is read where it writes. Each outcome is saved after that, with its audit event,
    as one (audit.Prelude: one statement on PostgreSQL). An APPLIED write evicts the
    changed records from this process's cache at once, and announces them in that same
    statement for every other replica to evict (invalidation.py).

approve / reject / retry / expire move existing actions on, with the same steps.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import approvals, idempotency, invalidation
from gateway.actions import KINDS, ActionKind, Plan, Problem, WriteEnv, store
from gateway.actions.base import ActionInput, Invalid
from gateway.actions.store import FINAL, SETTLED, Action, Approval, Status
from gateway.audit import AuditEvent, AuditTrail
from gateway.authz import Decision, Outcome, Policy
from gateway.config import GatewayConfig
from gateway.errors import GatehouseError, InvalidArgument
from gateway.freshness import Freshness, Sla
from gateway.principals import Authenticator, Principal
from gateway.reads import Reads
from gateway.telemetry import current_trace_id, tracer
from sources.errors import SourceConflict, SourceError
from sources.sql import single_statement_engine

MASK = "***"

log = logging.getLogger("gatehouse.writes")


class _KeyHeld(Exception):
    """The request's idempotency key is held by an earlier action, whose result it gets."""

    def __init__(self, action_id: str) -> None:
        super().__init__(action_id)
        self.action_id = action_id


class _ClaimFailed(Exception):
    """The claim itself failed, in the gateway's database.

    Raised as this through the ERP transaction it unwinds, so that the ERP's connector
    does not count it as a failure of its own system; `submit` raises the original.
    """


class _Claiming:
    """A request's idempotency key being claimed while its write decides and reads.

    The claim stores the action as its first revision; `held` waits for it, and is
    where the write learns whether the key is its own.
    """

    def __init__(self, claim: Coroutine[Any, Any, tuple[idempotency.Claim, Action]] | None):
        self._task = None if claim is None else asyncio.ensure_future(claim)

    async def held(self, action: Action) -> Action:
        """`action` as its won claim stored it; _KeyHeld when an earlier action holds the key."""
        if self._task is None:
            return action
        try:
            claim, stored = await self._task
        except GatehouseError:
            raise  # a verdict on the request (a key reused), not a failure
        except Exception as exc:
            raise _ClaimFailed from exc
        if not claim.won:
            raise _KeyHeld(claim.action_id)
        if action.revision == stored.revision:  # held already: before execution, now saving
            return action
        return replace(
            action,
            revision=stored.revision,
            request_digest=stored.request_digest,
            key_held_until=stored.key_held_until,
        )

    async def settled(self) -> None:
        """Wait for the claim to end, whatever became of the write; its error is the write's."""
        if self._task is not None:
            if not self._task.done():
                await asyncio.wait([self._task])
            if not self._task.cancelled():
                self._task.exception()  # seen, when the write failed before it asked


_UNKEYED = _Claiming(None)  # a write that claims no key: approvals, retries, dry runs


class ActionError(GatehouseError):
    """A request about an existing action that cannot be done (not found, not pending...)."""

    status = 409

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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
class _Found:
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


class Writes:
    """The governed write service."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        audit: AuditTrail,
        policy: Policy,
        reads: Reads,
        env: WriteEnv,
        authenticator: Authenticator,
        config: GatewayConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_outcome: Callable[[Action], None] = lambda action: None,
    ) -> None:
        self._on_outcome = on_outcome  # metrics
        self._engine = engine
        self._single_statements = single_statement_engine(engine)
        self._audit = audit
        self._policy = policy
        self._reads = reads
        self._env = env
        self._principals = authenticator
        self._config = config
        self._clock = clock

    # ---- the write path --------------------------------------------------------------

    async def submit(self, request: WriteRequest, principal: Principal) -> WriteResult:
        """Run one write through every step."""
        kind = _kind(request.kind)
        data, problems = _parse(kind, request.input)  # judged at step 2
        action = self._new_action(request, principal, data)
        # 1. idempotency. The claim's round trip overlaps steps 2 to 4; nothing executes
        #    and no outcome is saved before it is won. A dry run changes nothing, so it
        #    claims no key: the same key may then submit it.
        keyed = request.idempotency_key is not None and not request.dry_run
        claiming = _Claiming(self._claim(action, request)) if keyed else _UNKEYED
        try:
            if self._engine.dialect.name != "postgresql":
                # aiosqlite runs each database's statements on a thread of its own: run
                # side by side, the two threads cost more than the overlap saves.
                action = await claiming.held(action)
            return await self._decide(request, principal, kind, data, problems, action, claiming)
        except _KeyHeld as held:
            return await self._replay(held.action_id)
        except _ClaimFailed as failed:
            error = failed.__cause__ or failed  # the database's own error, as it came
            raise error from error.__cause__
        finally:
            await claiming.settled()

    async def _decide(
        self,
        request: WriteRequest,
        principal: Principal,
        kind: ActionKind,
        data: ActionInput | None,
        problems: list[Problem],
        action: Action,
        claiming: _Claiming,
    ) -> WriteResult:
        """Steps 2 and 3, then on to the rest."""
        # 2. shape
        if data is None:
            return await self._finish(
                action, Status.INVALID, validation=problems, claiming=claiming
            )
        # 3. policy
        with tracer().start_as_current_span("write policy"):
            decision = self._policy.decide(principal, kind.kind, "write", kind.policy_input(data))
        action = _decided(action, decision)
        if decision.outcome is Outcome.DENY:
            return await self._finish(action, Status.DENIED, claiming=claiming)
        if request.expected_version is not None and kind.creates:
            problem = Problem(
                "expectedVersion applies to writes to an existing record", "expectedVersion"
            )
            return await self._finish(
                action, Status.INVALID, validation=[problem], claiming=claiming
            )
        return await self._proceed(action, kind, data, dry_run=request.dry_run, claiming=claiming)

    async def _proceed(
        self,
        action: Action,
        kind: ActionKind,
        data: ActionInput,
        *,
        dry_run: bool,
        claiming: _Claiming = _UNKEYED,
    ) -> WriteResult:
        """Steps 4 to 8, then the outcome saved (after the system of record committed)."""
        found = await self._run(action, kind, data, dry_run=dry_run, claiming=claiming)
        return await self._finish(
            found.action,
            found.status,
            validation=found.validation,
            errors=found.errors,
            error=found.error,
            result=found.result,
            expires_at=found.expires_at,
            freshness=found.freshness,
            evicted=found.evicted,
            claiming=claiming,
        )

    async def _run(
        self,
        action: Action,
        kind: ActionKind,
        data: ActionInput,
        *,
        dry_run: bool,
        claiming: _Claiming,
    ) -> _Found:
        """Steps 4 to 8: plan, precondition, dry run, approval, execution; nothing saved.

        A write that goes on to execute plans inside the transaction it writes in.
        """
        writes = not dry_run and not approvals.awaited(action)
        try:
            async with self._env.unit(kind.entity, writes=writes) as env:
                # 4. plan
                with tracer().start_as_current_span("write validation"):
                    plan = await kind.plan(data, env)
                diff = {"before": _masked(plan.before, kind), "after": _masked(plan.after, kind)}
                action, freshness = replace(action, diff=diff), self._freshness(kind, plan)
                # 5. precondition
                if (conflict := self._conflict(action, plan)) is not None:
                    return _Found(action, Status.CONFLICT, errors=[conflict], freshness=freshness)
                if plan.problems:
                    return _Found(
                        action, Status.INVALID, validation=plan.problems, freshness=freshness
                    )
                # 6. dry run
                if dry_run:
                    return _Found(action, Status.DRY_RUN, freshness=freshness)
                # 7. approval
                if approvals.awaited(action):
                    expires = self._clock() + timedelta(seconds=self._config.writes.approval_ttl)
                    return _Found(
                        action, Status.PENDING_APPROVAL, expires_at=expires, freshness=freshness
                    )
                # 8. execution, once the key is ours (else _KeyHeld rolls the unit back)
                action = await claiming.held(action)
                key = action.idempotency_key or action.id
                with tracer().start_as_current_span("write execution"):
                    result = await kind.execute(data, plan, env, idempotency_key=key)
        except Invalid as invalid:
            return _Found(action, Status.INVALID, validation=invalid.problems)
        except SourceConflict as error:
            message = f"{error}; current version {error.current_version}"
            conflict = WriteError("CONFLICT", message, "expectedVersion")
            return _Found(action, Status.CONFLICT, error=message, errors=[conflict])
        except SourceError as error:
            failure = WriteError(error.code, str(error))
            return _Found(action, Status.FAILED, error=str(error), errors=[failure])
        evicted = self._evict(kind, data, plan)
        return _Found(action, Status.APPLIED, result=result, evicted=evicted)

    def _conflict(self, action: Action, plan: Plan) -> WriteError | None:
        expected = action.expected_version
        if expected is None or plan.target_record is None or expected == plan.target_version:
            return None
        return WriteError(
            "CONFLICT",
            f"{action.target} changed since version {expected}; it is now at version "
            f"{plan.target_version}: read it again and decide on the current record",
            "expectedVersion",
        )

    def _evict(self, kind: ActionKind, data: ActionInput, plan: Plan) -> list[tuple[str, str]]:
        """Forget the changed records here, at once; which they were, to announce."""
        changed = list(dict.fromkeys([(kind.entity, kind.target(data)), *_touched(data, plan)]))
        for entity, key in changed:
            self._reads.evict(entity, [key])
        return changed

    # ---- policy --------------------------------------------------------------------------

    async def refresh_policy(self) -> None:
        """Reload the policy files if they changed, and audit the reload."""
        previous = self._policy.reload_if_changed()
        if previous is None:
            return
        event = AuditEvent(
            event="policy.reloaded",
            principal="gatehouse",
            principal_kind="system",
            on_behalf_of=None,
            channel="system",
            outcome="RELOADED",
            trace_id=current_trace_id(),
            payload={
                "previous_version": previous,
                "version": self._policy.version,
                "files": [str(self._policy.model_path), str(self._policy.policy_path)],
            },
        )
        await self._audit.append(event)

    # ---- existing actions ------------------------------------------------------------

    async def approve(
        self, action_id: str, approver: Principal, comment: str, *, channel: str = "graphql"
    ) -> WriteResult:
        """Approve a pending action; the last approval needed executes it."""
        await self.refresh_policy()
        action = await self._pending(action_id)
        kind = _kind(action.kind)
        data = kind.Input.model_validate(action.input)
        if (
            why := approvals.refusal(
                approver, action, amount=kind.amount(data), policy=self._policy
            )
        ) is not None:
            raise ActionError("APPROVAL_REFUSED", why)
        await self._check_binding(action, kind, data)
        verdict = Approval(
            approver.id,
            "approve",
            comment,
            action.input_digest,
            action.policy_version,
            self._clock(),
        )
        action = await self._record_verdict(action, verdict)
        if approvals.awaited(action):
            await self._audit_event(
                action,
                "action.approval_recorded",
                approver,
                {"approval": _verdict_payload(verdict), "channel": channel},
            )
            return self._result(action)
        executing = await self._save(
            action,
            replace(action, status=Status.EXECUTING),
            "action.approved",
            approver,
            {"approval": _verdict_payload(verdict), "channel": channel},
        )
        if executing is None:
            raise ActionError(
                "ACTION_NOT_PENDING", f"action {action_id} was just decided by someone else"
            )
        return await self._proceed(executing, kind, data, dry_run=False)

    async def reject(
        self, action_id: str, approver: Principal, reason: str, *, channel: str = "graphql"
    ) -> WriteResult:
        """Reject a pending action with a reason."""
        action = await self._pending(action_id)
        kind = _kind(action.kind)
        amount = kind.amount(kind.Input.model_validate(action.input))
        if (
            why := approvals.refusal(approver, action, amount=amount, policy=self._policy)
        ) is not None:
            raise ActionError("APPROVAL_REFUSED", why)
        verdict = Approval(
            approver.id, "reject", reason, action.input_digest, action.policy_version, self._clock()
        )
        action = await self._record_verdict(action, verdict)
        return await self._finish(
            action,
            Status.REJECTED,
            actor=approver,
            error=reason,
            extra={"approval": _verdict_payload(verdict), "channel": channel},
        )

    async def retry(
        self, action_id: str, principal: Principal, *, channel: str = "graphql"
    ) -> WriteResult:
        """Replay a FAILED action: policy, validation and execution run again."""
        action = await self.get(action_id)
        if action is None:
            raise ActionError("NOT_FOUND", f"no action {action_id}")
        if action.status is not Status.FAILED:
            raise ActionError(
                "NOT_FAILED",
                f"action {action_id} is {action.status.value}; only FAILED actions are retried",
            )
        if principal.id not in (action.principal, action.on_behalf_of) and not (
            self._policy.decide(principal, action.kind, "approve").allowed
        ):
            raise ActionError("RETRY_REFUSED", f"{principal.id} may not retry {action_id}")
        requester = self._principals.principal(action.principal)
        if requester is None:
            raise ActionError("RETRY_REFUSED", f"requester {action.principal} no longer exists")
        kind = _kind(action.kind)
        data = kind.Input.model_validate(action.input)
        decision = self._policy.decide(requester, kind.kind, "write", kind.policy_input(data))
        retried = replace(_decided(action, decision), status=Status.EXECUTING, error=None)
        executing = await self._save(
            action, retried, "action.retried", principal, {"channel": channel}
        )
        if executing is None:
            raise ActionError("NOT_FAILED", f"action {action_id} is already being retried")
        if decision.outcome is Outcome.DENY:
            return await self._finish(executing, Status.DENIED)
        return await self._proceed(executing, kind, data, dry_run=False)

    async def expire_due(self) -> int:
        """Move pending actions past their expiry to EXPIRED; how many this call moved."""
        async with self._engine.connect() as connection:
            due = await store.due_for_expiry(connection, self._clock())
        moved = 0
        for action_id in due:
            action = await self.get(action_id)
            if action is None or action.status is not Status.PENDING_APPROVAL:
                continue
            try:
                await self._finish(action, Status.EXPIRED, error="approval window passed")
            except ActionError:  # another request or replica moved it meanwhile
                continue
            moved += 1
        return moved

    async def get(self, action_id: str) -> Action | None:
        """One action with its approvals."""
        async with self._engine.connect() as connection:
            return await store.get(connection, action_id)

    async def page(
        self,
        *,
        status: Status | None,
        principal: str | None,
        visible_to: str | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> tuple[list[Action], bool]:
        """Actions newest first."""
        await self.expire_due()
        async with self._engine.connect() as connection:
            return await store.page(
                connection,
                status=status,
                principal=principal,
                visible_to=visible_to,
                limit=limit,
                after=after,
            )

    def approvers_for(self, action: Action) -> list[str]:
        """Who could approve `action` now."""
        kind = _kind(action.kind)
        try:
            amount = kind.amount(kind.Input.model_validate(action.input))
        except ValidationError:
            return []
        return approvals.eligible(
            self._principals.all(), action, amount=amount, policy=self._policy
        )

    def can(self, kind_name: str, raw: Mapping[str, Any], principal: Principal) -> Verdict:
        """What would happen to this write, without any side effect."""
        kind = _kind(kind_name)
        data, problems = _parse(kind, raw)
        inputs = {} if data is None else kind.policy_input(data)
        try:
            decision = self._policy.decide(principal, kind.kind, "write", inputs)
        except Exception:  # a condition on an input that did not parse
            decision = Decision(
                Outcome.DENY, "INPUT_INVALID", "The input is invalid", self._policy.version
            )
        approvers: tuple[str, ...] = ()
        if decision.outcome is Outcome.REVIEW and data is not None:
            request = WriteRequest(kind_name, raw)
            probe = _decided(self._new_action(request, principal, data), decision)
            approvers = tuple(
                approvals.eligible(
                    self._principals.all(), probe, amount=kind.amount(data), policy=self._policy
                )
            )
        return Verdict(decision, tuple(problems), approvers)

    # ---- steps -------------------------------------------------------------------------

    def _new_action(
        self, request: WriteRequest, principal: Principal, data: ActionInput | None
    ) -> Action:
        now = self._clock()
        raw = _normalized(data, request.input)
        return Action(
            id=str(uuid.uuid4()),
            kind=request.kind,
            status=Status.RECEIVED,
            principal=principal.id,
            on_behalf_of=principal.on_behalf_of,
            channel=request.channel,
            input=raw,
            input_digest=input_digest(request.kind, raw),
            target=_target(request.kind, raw),
            expected_version=request.expected_version,
            decision="",
            rule="",
            reason="",
            policy_version=self._policy.version,
            approvals_required=0,
            validation=[],
            diff=None,
            result=None,
            error=None,
            idempotency_key=request.idempotency_key,
            trace_id=current_trace_id(),
            revision=0,
            created_at=now,
            updated_at=now,
            expires_at=None,
        )

    async def _claim(
        self, action: Action, request: WriteRequest
    ) -> tuple[idempotency.Claim, Action]:
        """Take the key; a won claim stores the action with it, as its first revision."""
        assert request.idempotency_key is not None  # only keyed requests are claimed
        request_digest = _digest(
            {
                "digest": action.input_digest,
                "dry_run": request.dry_run,
                "expected": request.expected_version,
            }
        )
        now = self._clock()
        stored = replace(
            action,
            revision=1,
            request_digest=request_digest,
            key_held_until=now + timedelta(seconds=self._config.writes.idempotency_ttl),
        )
        async with self._single_statements.connect() as connection:
            claim = await idempotency.claim(connection, store.row(stored), now=now)
        return claim, stored

    async def _replay(self, action_id: str) -> WriteResult:
        """The first request's result; wait while it is still running elsewhere."""
        for _ in range(600):
            action = await self.get(action_id)
            if action is not None and action.status in SETTLED:
                return self._result(action, replayed=True)
            await asyncio.sleep(0.05)
        raise ActionError(
            "IDEMPOTENCY_IN_PROGRESS",
            f"the first request with this key (action {action_id}) is still running; retry later",
        )

    async def _pending(self, action_id: str) -> Action:
        await self.expire_due()
        action = await self.get(action_id)
        if action is None:
            raise ActionError("NOT_FOUND", f"no action {action_id}")
        if action.status is not Status.PENDING_APPROVAL:
            raise ActionError(
                "ACTION_NOT_PENDING",
                f"action {action_id} is {action.status.value}, not pending approval",
            )
        return action

    async def _check_binding(self, action: Action, kind: ActionKind, data: ActionInput) -> None:
        """An approval is bound to the exact input and the policy version that decided it."""
        if input_digest(action.kind, action.input) != action.input_digest:
            await self._audit_event(
                action, "action.tampered", None, {"problem": "input digest mismatch"}
            )
            raise ActionError(
                "INPUT_CHANGED",
                f"the input of action {action.id} no longer "
                "matches what was decided; it cannot be approved",
            )
        if action.policy_version == self._policy.version:
            return
        requester = self._principals.principal(action.principal)
        decision = (
            self._policy.decide(requester, kind.kind, "write", kind.policy_input(data))
            if requester
            else None
        )
        if decision is None or decision.outcome is Outcome.DENY:
            await self._finish(action, Status.DENIED, error="denied under the new policy")
        else:
            redecided = _decided(action, decision)
            await self._save(action, redecided, "action.redecided", None, {})
        raise ActionError(
            "POLICY_CHANGED",
            f"the policy changed since action {action.id} was "
            "decided; it has been decided again: approve it again if it is "
            "still pending",
        )

    async def _record_verdict(self, action: Action, verdict: Approval) -> Action:
        try:
            async with self._engine.begin() as connection:
                await store.add_approval(connection, action.id, verdict)
        except IntegrityError as exc:
            raise ActionError(
                "APPROVAL_REFUSED", f"{verdict.approver} has already decided on {action.id}"
            ) from exc
        return replace(action, approvals=(*action.approvals, verdict))

    def _freshness(self, kind: ActionKind, plan: Plan) -> Freshness | None:
        record = plan.target_record
        if record is None:
            return None
        contract = self._config.entities[kind.entity]
        return Freshness(
            system=contract.source,
            fetched_at=self._clock(),
            source_updated_at=record.updated_at,
            version=record.version,
            cached=False,
            sla=Sla(contract.warn_after, contract.error_after),
        )

    # ---- saving outcomes ---------------------------------------------------------------

    async def _finish(
        self,
        action: Action,
        status: Status,
        *,
        validation: Sequence[Problem] = (),
        errors: Sequence[WriteError] = (),
        error: str | None = None,
        result: dict[str, Any] | None = None,
        expires_at: datetime | None = None,
        freshness: Freshness | None = None,
        actor: Principal | None = None,
        extra: Mapping[str, Any] | None = None,
        evicted: Sequence[tuple[str, str]] = (),
        claiming: _Claiming = _UNKEYED,
    ) -> WriteResult:
        action = await claiming.held(action)  # no outcome is saved before the key is ours
        finished = replace(
            action,
            status=status,
            updated_at=self._clock(),
            error=error,
            validation=[p.as_dict() for p in validation] or action.validation,
            result=result,
            expires_at=expires_at or action.expires_at,
        )
        event = f"action.{status.value.lower()}"
        saved = await self._save(action, finished, event, actor, dict(extra or {}), evicted)
        if saved is None:
            raise ActionError("ACTION_CHANGED", f"action {action.id} was changed concurrently")
        finished = saved
        self._on_outcome(finished)
        log.info(
            "write",
            extra={
                "action_id": finished.id,
                "kind": finished.kind,
                "status": status.value,
                "principal": finished.principal,
                "on_behalf_of": finished.on_behalf_of,
                "channel": finished.channel,
                "rule": finished.rule,
            },
        )
        approvers = (
            tuple(self.approvers_for(finished))
            if status in (Status.PENDING_APPROVAL, Status.DRY_RUN) and finished.decision == "review"
            else ()
        )
        found = [*errors, *(WriteError("INVALID", p.message, p.field) for p in validation)]
        if status is Status.DENIED:
            found.append(WriteError("DENIED", f"{finished.rule}: {finished.reason}"))
        if status is Status.PENDING_APPROVAL and len(approvers) < finished.approvals_required:
            # Said now, not discovered when the action quietly expires.
            found.append(
                WriteError(
                    "NOT_ENOUGH_APPROVERS",
                    f"{finished.approvals_required} approvals are needed but only "
                    f"{len(approvers)} configured principal(s) may give one; it will expire "
                    "unless an administrator adds approvers",
                )
            )
        return WriteResult(status, finished, tuple(found), freshness, approvers)

    async def _save(
        self,
        before: Action,
        after: Action,
        event: str,
        actor: Principal | None,
        extra: dict[str, Any],
        evicted: Sequence[tuple[str, str]] = (),
    ) -> Action | None:
        """Store the change and its audit event together, or neither; None if it lost a race.

        Revision 0 is an action not stored yet (no idempotency key claimed it). The change,
        its announcement to other replicas and the audit event go to the database as one
        (audit.Prelude): on PostgreSQL, one statement.
        """
        saved = replace(after, revision=before.revision + 1)
        audited = self._event(saved, event, actor, extra)
        change = store.inserting(saved) if before.revision == 0 else store.saving(before, saved)
        change = invalidation.announcing(change, evicted, self._engine.dialect.name)
        with tracer().start_as_current_span("write audit", attributes={"gatehouse.event": event}):
            appended = await self._audit.append(audited, prelude=change)
        return None if appended is None else saved

    async def _audit_event(
        self, action: Action, event: str, actor: Principal | None, extra: dict[str, Any]
    ) -> None:
        await self._audit.append(self._event(action, event, actor, extra))

    def _event(
        self, action: Action, event: str, actor: Principal | None, extra: dict[str, Any]
    ) -> AuditEvent:
        """The audit event of one change, with classified input values masked."""
        kind = KINDS.get(action.kind)
        principal = actor or self._principals.principal(action.principal)
        extra = dict(extra)
        channel = extra.pop("channel", None)
        payload = {
            "input": _masked(action.input, kind),
            "decision": {
                "outcome": action.decision,
                "rule": action.rule,
                "reason": action.reason,
                "policy_version": action.policy_version,
            },
            "validation": action.validation,
            "diff": action.diff,
            "expected_version": action.expected_version,
            "result": action.result,
            "error": action.error,
            "approvals": [_verdict_payload(a) for a in action.approvals],
            "requested_by": action.principal,
            **extra,
        }
        return AuditEvent(
            event=event,
            principal=principal.id if principal else action.principal,
            principal_kind=principal.kind.value if principal else "unknown",
            on_behalf_of=principal.on_behalf_of if principal else action.on_behalf_of,
            channel=channel or (action.channel if actor is None else "graphql"),
            outcome=action.status.value,
            trace_id=action.trace_id,
            action_id=action.id,
            action_kind=action.kind,
            target=action.target,
            payload=payload,
        )

    def _result(self, action: Action, *, replayed: bool = False) -> WriteResult:
        errors: list[WriteError] = [
            WriteError("INVALID", str(p.get("message")), p.get("field")) for p in action.validation
        ]
        if action.status is Status.DENIED:
            errors.append(WriteError("DENIED", f"{action.rule}: {action.reason}"))
        elif action.error and action.status in FINAL:
            errors.append(WriteError(action.status.value, action.error))
        approvers = (
            tuple(self.approvers_for(action)) if (action.status is Status.PENDING_APPROVAL) else ()
        )
        return WriteResult(action.status, action, tuple(errors), None, approvers)


def _kind(name: str) -> ActionKind:
    if name not in KINDS:
        raise InvalidArgument("action", f"unknown action '{name}'; one of {sorted(KINDS)}")
    return KINDS[name]


def _snake_keys(value: Any) -> Any:
    """JSON from GraphQL clients arrives camelCased (customerId); the models are snake_case."""
    if isinstance(value, Mapping):
        return {_snake(str(k)): _snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_keys(item) for item in value]
    return value


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _parse(kind: ActionKind, raw: Mapping[str, Any]) -> tuple[ActionInput | None, list[Problem]]:
    try:
        return kind.Input.model_validate(_snake_keys(raw)), []
    except ValidationError as exc:
        return None, [
            Problem(error["msg"], _field_path(error["loc"]), "SHAPE") for error in exc.errors()
        ]


def _field_path(loc: Sequence[int | str]) -> str:
    parts = [str(part) for part in loc]
    return ".".join(_camel(part) for part in parts) if parts else "input"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _decided(action: Action, decision: Decision) -> Action:
    return replace(
        action,
        decision=decision.outcome.value,
        rule=decision.rule,
        reason=decision.reason,
        policy_version=decision.policy_version,
        approvals_required=decision.approvals_required,
    )


def _target(kind: str, raw: Mapping[str, Any]) -> str:
    found = KINDS.get(kind)
    if found is None:
        return kind
    for name in ("sku", "order_id", "customer_id"):
        if isinstance(raw.get(name), str):
            return f"{found.entity}:{raw[name]}"
    return found.entity


def _touched(data: ActionInput, plan: Plan) -> list[tuple[str, str]]:
    """Records besides the target whose cached copies a write makes stale."""
    touched: list[tuple[str, str]] = []
    values = data.model_dump()
    if "customer_id" in values:
        touched += [("Balance", values["customer_id"]), ("Customer", values["customer_id"])]
    if "order_id" in values:
        touched.append(("Order", values["order_id"]))
    for line in values.get("lines") or []:
        touched.append(("InventoryItem", line["sku"]))
    if plan.target_record is not None:
        for line in plan.target_record.data.get("lines") or []:
            touched.append(("InventoryItem", line["sku"]))
    return touched


def _normalized(data: ActionInput | None, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The input as its model dumps it, so equal inputs digest equally from any front door.

    An input that did not parse is kept as it came, for the record.
    """
    if data is not None:
        dumped: dict[str, Any] = data.model_dump(mode="json")
        return dumped
    return {key: value for key, value in raw.items() if value is not None}


def input_digest(kind: str, raw: Mapping[str, Any]) -> str:
    """The digest an approval is bound to."""
    return _digest({"kind": kind, "input": raw})


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _masked(values: Mapping[str, Any] | None, kind: ActionKind | None) -> dict[str, Any] | None:
    if values is None:
        return None
    hidden = kind.pii_fields if kind is not None else frozenset()
    return {k: (MASK if k in hidden and v is not None else v) for k, v in values.items()}


def _verdict_payload(verdict: Approval) -> dict[str, Any]:
    return {
        "approver": verdict.approver,
        "verdict": verdict.verdict,
        "comment": verdict.comment,
        "at": verdict.at.isoformat(),
        "input_digest": verdict.input_digest,
        "policy_version": verdict.policy_version,
    }


def money(value: Decimal | None) -> str | None:
    """A Decimal as its exact string."""
    return None if value is None else str(value)
