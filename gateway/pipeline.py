"""The write path: every write, from GraphQL, MCP or the console, runs through `submit`.

    submit(request, principal)
      1. claim         the action stored, in flight under this process's lease; with a key,
                       same key + same input -> the first result, never a second execution
                       (the claim's round trip overlaps steps 2 to 4: idempotency.Claiming)
      2. shape         pydantic: field-level messages                     -> INVALID
      3. policy        Casbin: allow | deny | review, with the rule        -> DENIED
      4-8.             plan, precondition, dry run, approval, execution   (execution.py)
      9. outcome       saved with its audit event, the lease released      (outcomes.py)

The claim is the in-flight marker: if this process dies, recovery (recovery.py) finds the
action by its lapsed lease and asks its implementation whether its effect reached the
system. A replay of a key whose action is in flight on a dead process takes it over there.

approve / reject / retry / expire move existing actions on (moves.py); recover and resolve
settle those a crash left behind (recovery.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from gateway import approvals, idempotency
from gateway.actions import store
from gateway.actions.store import IN_FLIGHT, SETTLED, Action, Status
from gateway.authz import Decision, Outcome
from gateway.errors import ActionError
from gateway.execution import Execution
from gateway.idempotency import UNCLAIMED, ClaimFailed, Claiming, KeyHeld
from gateway.moves import Moves
from gateway.outcomes import (
    Found,
    Outcomes,
    Verdict,
    WriteRequest,
    WriteResult,
    decided,
    input_digest,
    request_digest,
)
from gateway.principals import Principal
from gateway.recovery import Now, Recovery
from gateway.telemetry import current_trace_id, tracer
from sources.actions import ActionInput, ActionKind, Problem
from sources.sql import single_statement_engine

_REPLAY_POLL = 0.05  # seconds between looks at a key's first action, while it runs


class Writes:
    """The governed write service: `submit`, and the moves of existing actions."""

    def __init__(
        self,
        *,
        outcomes: Outcomes,
        execution: Execution,
        moves: Moves,
        recovery: Recovery,
        idempotency_ttl: float,
    ) -> None:
        self._outcomes = outcomes
        self._execution = execution
        self.moves = moves
        self.recovery = recovery
        self._idempotency_ttl = idempotency_ttl
        self.leases = outcomes.leases
        self._single_statements = single_statement_engine(outcomes.engine)

    # ---- the write path --------------------------------------------------------------

    async def submit(self, request: WriteRequest, principal: Principal) -> WriteResult:
        """Run one write through every step."""
        kind = self._outcomes.kind(request.kind)
        data, problems = _parse(kind, request.input)
        action = self._new_action(request, principal, kind, data)
        # 1. claim. Its round trip overlaps steps 2 to 4; nothing executes and no outcome is
        #    saved before it is won. A dry run changes nothing: it is not stored first.
        claiming = UNCLAIMED if request.dry_run else Claiming(self._claim(action, request))
        try:
            if self._outcomes.engine.dialect.name != "postgresql":
                # aiosqlite runs each database's statements on a thread of its own: run
                # side by side, the two threads cost more than the overlap saves.
                action = await claiming.held(action)
            found = await self._decide(request, principal, kind, data, problems, action, claiming)
            # 9. outcome, once the claim is won
            return await self._outcomes.finish(
                replace(found, action=await claiming.held(found.action))
            )
        except KeyHeld as held:
            return await self._replay(held.action_id, principal)
        except ClaimFailed as failed:
            error = failed.__cause__ or failed  # the database's own error, as it came
            raise error from error.__cause__
        finally:
            await claiming.settled()
            self._outcomes.leases.release(action.id)

    async def _decide(
        self,
        request: WriteRequest,
        principal: Principal,
        kind: ActionKind,
        data: ActionInput | None,
        problems: list[Problem],
        action: Action,
        claiming: Claiming,
    ) -> Found:
        """Steps 2 and 3, then steps 4 to 8."""
        # 2. shape
        if data is None:
            return Found(action, Status.INVALID, validation=problems)
        # 3. policy
        with tracer().start_as_current_span("write policy"):
            decision = self._outcomes.policy.decide(
                principal, kind.kind, "write", kind.policy_input(data)
            )
        action = decided(action, decision)
        if decision.outcome is Outcome.DENY:
            return Found(action, Status.DENIED)
        if request.expected_version is not None and kind.creates:
            problem = Problem(
                "expectedVersion applies to writes to an existing record", "expectedVersion"
            )
            return Found(action, Status.INVALID, validation=[problem])
        # 4 to 8.
        return await self._execution.run(
            action, kind, data, dry_run=request.dry_run, claiming=claiming
        )

    # ---- claims and replays ----------------------------------------------------------

    async def _claim(
        self, action: Action, request: WriteRequest
    ) -> tuple[idempotency.Claim, Action]:
        """Store the action, in flight under a lease; with a key, only if the key is free."""
        now = self._outcomes.clock()
        keyed = request.idempotency_key is not None
        stored = replace(
            action,
            revision=1,
            lease_until=self._outcomes.leases.until(),
            request_digest=request_digest(action, request) if keyed else None,
            key_held_until=now + timedelta(seconds=self._idempotency_ttl) if keyed else None,
        )
        self._outcomes.leases.hold(action.id)
        async with self._single_statements.connect() as connection:
            claim = await idempotency.claim(connection, store.row(stored), now=now)
        return claim, stored

    async def _replay(self, action_id: str, principal: Principal) -> WriteResult:
        """The first request's result: waited for while it runs, taken over when its lease
        lapsed (its process died), retried when it FAILED; audited as a replay."""
        deadline = asyncio.get_running_loop().time() + self._outcomes.leases.seconds
        while True:
            action = await self._outcomes.get(action_id)
            if action is None:
                raise ActionError("NOT_FOUND", f"no action {action_id}")
            if action.status is Status.FAILED:
                if (
                    retried := await self._settling(
                        self.moves.retry(action_id, principal, channel=action.channel)
                    )
                ) is not None:
                    return retried
                continue
            if action.status in SETTLED:
                await self._outcomes.record(
                    action, "action.replayed", principal, {"replay_of": action.id}
                )
                return self._outcomes.result(action)
            lapsed = action.lease_until is not None and _passed(
                action.lease_until, self._outcomes.clock()
            )
            if action.status in IN_FLIGHT and lapsed:
                if (recovered := await self._settling(self.recovery.recover(action))) is not None:
                    return recovered
                continue
            if asyncio.get_running_loop().time() > deadline:
                raise ActionError(
                    "IDEMPOTENCY_IN_PROGRESS",
                    f"the first request with this key (action {action_id}) is still running; "
                    "retry in a few seconds",
                )
            await asyncio.sleep(_REPLAY_POLL)

    @staticmethod
    async def _settling(move: Coroutine[Any, Any, WriteResult]) -> WriteResult | None:
        """A replay's own move on the action; None when another request or replica made one
        first (the replay then looks again and answers with what that one came to)."""
        try:
            return await move
        except ActionError as raced:
            if raced.code in ("ACTION_CHANGED", "NOT_FAILED", "ACTION_NOT_PENDING"):
                return None
            raise

    # ---- what would happen -----------------------------------------------------------

    def can(self, kind_name: str, raw: Mapping[str, Any], principal: Principal) -> Verdict:
        """What would happen to this write, without any side effect."""
        kind = self._outcomes.kind(kind_name)
        data, problems = _parse(kind, raw)
        policy = self._outcomes.policy
        inputs = {} if data is None else kind.policy_input(data)
        try:
            decision = policy.decide(principal, kind.kind, "write", inputs)
        except Exception:  # a condition on an input that did not parse
            decision = Decision(
                Outcome.DENY, "INPUT_INVALID", "The input is invalid", policy.version
            )
        approvers: tuple[str, ...] = ()
        if decision.outcome is Outcome.REVIEW and data is not None:
            request = WriteRequest(kind_name, raw)
            probe = decided(self._new_action(request, principal, kind, data), decision)
            approvers = tuple(
                approvals.eligible(
                    self._outcomes.principals.all(), probe, amount=kind.amount(data), policy=policy
                )
            )
        return Verdict(decision, tuple(problems), approvers)

    def _new_action(
        self,
        request: WriteRequest,
        principal: Principal,
        kind: ActionKind,
        data: ActionInput | None,
    ) -> Action:
        now = self._outcomes.clock()
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
            target=f"{kind.entity}:{kind.target(data)}" if data is not None else kind.entity,
            expected_version=request.expected_version,
            decision="",
            rule="",
            reason="",
            policy_version=self._outcomes.policy.version,
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

    # ---- reading actions, and the moves ----------------------------------------------

    async def get(self, action_id: str) -> Action | None:
        """One action with its approvals."""
        return await self._outcomes.get(action_id)

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
        await self.moves.expire_due()
        async with self._outcomes.engine.connect() as connection:
            return await store.page(
                connection,
                status=status,
                principal=principal,
                visible_to=visible_to,
                limit=limit,
                after=after,
            )

    def result(self, action: Action) -> WriteResult:
        """A stored action in the one result shape, with its errors and approvers."""
        return self._outcomes.result(action)

    async def pending(self, *, limit: int) -> list[Action]:
        """Pending actions with their approvals, the nearest deadline first."""
        await self.moves.expire_due()
        async with self._outcomes.engine.connect() as connection:
            return await store.pending(connection, limit=limit)

    def approvers_for(self, action: Action) -> list[str]:
        """Who could approve `action` now."""
        return self._outcomes.approvers_for(action)

    async def approve(
        self, action_id: str, approver: Principal, comment: str, *, channel: str = "graphql"
    ) -> WriteResult:
        """Approve a pending action; the last approval needed executes it."""
        return await self.moves.approve(action_id, approver, comment, channel=channel)

    async def reject(
        self, action_id: str, approver: Principal, reason: str, *, channel: str = "graphql"
    ) -> WriteResult:
        """Reject a pending action with a reason."""
        return await self.moves.reject(action_id, approver, reason, channel=channel)

    async def retry(
        self, action_id: str, principal: Principal, *, channel: str = "graphql"
    ) -> WriteResult:
        """Replay a FAILED action: policy, validation and execution run again."""
        return await self.moves.retry(action_id, principal, channel=channel)

    async def resolve(
        self, action_id: str, operator: Principal, *, applied: bool, note: str
    ) -> WriteResult:
        """Settle an IN_DOUBT action as a person found it: applied, or not."""
        return await self.recovery.resolve(action_id, operator, applied=applied, note=note)

    async def now(self, action: Action, *, mask: bool = True) -> Now:
        """What the system holds now for an action's fields, and what a fresh plan would
        write (for a person resolving or approving it); personal data masked unless not."""
        return await self.recovery.now(action, mask=mask)

    async def expire_due(self) -> int:
        """Move pending actions past their expiry to EXPIRED; how many this call moved."""
        return await self.moves.expire_due()

    async def recover_due(self) -> int:
        """Settle the actions whose process died while they were in flight, and re-check
        those in doubt; how many this call settled."""
        return await self.recovery.recover_due()

    async def refresh_policy(self) -> None:
        """Reload the policy files if they changed, and audit the reload."""
        await self.moves.refresh_policy()


def _parse(kind: ActionKind, raw: Mapping[str, Any]) -> tuple[ActionInput | None, list[Problem]]:
    try:
        return kind.Input.model_validate(_snake_keys(raw)), []
    except ValidationError as exc:
        return None, [
            Problem(error["msg"], _field_path(error["loc"]), "SHAPE") for error in exc.errors()
        ]


def _snake_keys(value: Any) -> Any:
    """JSON from GraphQL clients arrives camelCased (customerId); the models are snake_case."""
    if isinstance(value, Mapping):
        return {_snake(str(k)): _snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_keys(item) for item in value]
    return value


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _field_path(loc: Sequence[int | str]) -> str:
    parts = [str(part) for part in loc]
    return ".".join(_camel(part) for part in parts) if parts else "input"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _normalized(data: ActionInput | None, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The input as its model dumps it, so equal inputs digest equally from any front door.

    An input that did not parse is kept as it came, for the record.
    """
    if data is not None:
        dumped: dict[str, Any] = data.model_dump(mode="json")
        return dumped
    return {key: value for key, value in raw.items() if value is not None}


def _passed(moment: datetime, now: datetime) -> bool:
    # SQLite hands back the naive wall time it stored (UTC).
    return moment < (now if moment.tzinfo is not None else now.replace(tzinfo=None))
