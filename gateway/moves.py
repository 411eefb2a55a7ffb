"""The moves of an existing action, each a compare-and-set on its row with its audit event.

    PENDING_APPROVAL --approve (the last one needed)--> EXECUTING --steps 4 to 8--> outcome
                     --reject-----------------------> REJECTED
                     --expire_due (window passed)----> EXPIRED
    FAILED           --retry (policy again)---------> EXECUTING --steps 4 to 8--> outcome

Recovery after a crash, and resolving actions in doubt, are recovery.py's. A refused move
(an approver who may not) is audited too (approval.refused) before the caller hears why.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway import approvals
from gateway.actions import store
from gateway.actions.store import Action, Approval, Status
from gateway.audit import AuditEvent, verdict_payload
from gateway.authz import Outcome
from gateway.errors import ActionError
from gateway.execution import Execution
from gateway.idempotency import UNCLAIMED
from gateway.outcomes import Found, Outcomes, WriteResult, decided, input_digest
from gateway.principals import Principal
from gateway.telemetry import current_trace_id
from sources.actions import ActionInput, ActionKind


class Moves:
    """Approve, reject, retry and expire existing actions."""

    def __init__(self, outcomes: Outcomes, execution: Execution) -> None:
        self._outcomes = outcomes
        self._execution = execution

    # ---- approvals -------------------------------------------------------------------

    async def approve(
        self, action_id: str, approver: Principal, comment: str, *, channel: str = "graphql"
    ) -> WriteResult:
        """Approve a pending action; the last approval needed executes it."""
        await self.refresh_policy()
        action, kind, data = await self._pending(action_id, approver, "approve")
        await self._may_decide(action, kind, data, approver, "approve")
        await self._check_binding(action, kind, data)
        verdict = self._verdict(action, approver, "approve", comment)
        action = await self._record_verdict(action, verdict)
        extra = {"approval": verdict_payload(verdict), "channel": channel}
        if approvals.awaited(action):
            await self._outcomes.record(action, "action.approval_recorded", approver, extra)
            return self._outcomes.result(action)
        return await self._execute_again(action, kind, data, "action.approved", approver, extra)

    async def reject(
        self, action_id: str, approver: Principal, reason: str, *, channel: str = "graphql"
    ) -> WriteResult:
        """Reject a pending action with a reason."""
        action, kind, data = await self._pending(action_id, approver, "reject")
        await self._may_decide(action, kind, data, approver, "reject")
        verdict = self._verdict(action, approver, "reject", reason)
        action = await self._record_verdict(action, verdict)
        return await self._outcomes.finish(
            Found(action, Status.REJECTED, error=reason),
            actor=approver,
            extra={"approval": verdict_payload(verdict), "channel": channel},
        )

    async def _may_decide(
        self, action: Action, kind: ActionKind, data: ActionInput, approver: Principal, move: str
    ) -> None:
        amount = kind.amount(data)
        why = approvals.refusal(approver, action, amount=amount, policy=self._outcomes.policy)
        if why is not None:
            await self._outcomes.refused(action, approver, move, "APPROVAL_REFUSED", why)

    def _verdict(self, action: Action, approver: Principal, verdict: str, comment: str) -> Approval:
        return Approval(
            approver.id,
            verdict,
            comment,
            action.input_digest,
            action.policy_version,
            self._outcomes.clock(),
        )

    async def _pending(
        self, action_id: str, actor: Principal, move: str
    ) -> tuple[Action, ActionKind, ActionInput]:
        await self.expire_due()
        action = await self._outcomes.get(action_id)
        if action is None:
            raise ActionError("NOT_FOUND", f"no action {action_id}")
        if action.status is not Status.PENDING_APPROVAL:
            await self._outcomes.refused(
                action,
                actor,
                move,
                "ACTION_NOT_PENDING",
                f"action {action_id} is {action.status.value}, not pending approval",
            )
        kind = self._outcomes.kind(action.kind)
        return action, kind, kind.Input.model_validate(action.input)

    async def _check_binding(self, action: Action, kind: ActionKind, data: ActionInput) -> None:
        """An approval is bound to the exact input and the policy version that decided it."""
        if input_digest(action.kind, action.input) != action.input_digest:
            await self._outcomes.record(
                action, "action.tampered", None, {"problem": "input digest mismatch"}
            )
            raise ActionError(
                "INPUT_CHANGED",
                f"the input of action {action.id} no longer "
                "matches what was decided; it cannot be approved",
            )
        policy = self._outcomes.policy
        if action.policy_version == policy.version:
            return
        requester = self._outcomes.principals.principal(action.principal)
        decision = (
            policy.decide(requester, kind.kind, "write", kind.policy_input(data))
            if requester
            else None
        )
        if decision is None or decision.outcome is Outcome.DENY:
            await self._outcomes.finish(
                Found(action, Status.DENIED, error="denied under the new policy")
            )
        else:
            await self._outcomes.save(
                action, decided(action, decision), "action.redecided", None, {}
            )
        raise ActionError(
            "POLICY_CHANGED",
            f"the policy changed since action {action.id} was "
            "decided; it has been decided again: approve it again if it is "
            "still pending",
        )

    async def _record_verdict(self, action: Action, verdict: Approval) -> Action:
        try:
            async with self._outcomes.engine.begin() as connection:
                await store.add_approval(connection, action.id, verdict)
        except Exception as exc:  # the key refuses a second verdict by one approver
            raise ActionError(
                "APPROVAL_REFUSED", f"{verdict.approver} has already decided on {action.id}"
            ) from exc
        return replace(action, approvals=(*action.approvals, verdict))

    # ---- retries and expiry ----------------------------------------------------------

    async def retry(
        self, action_id: str, principal: Principal, *, channel: str = "graphql"
    ) -> WriteResult:
        """Replay a FAILED action: policy, validation and execution run again."""
        action = await self._outcomes.get(action_id)
        if action is None:
            raise ActionError("NOT_FOUND", f"no action {action_id}")
        if action.status is not Status.FAILED:
            raise ActionError(
                "NOT_FAILED",
                f"action {action_id} is {action.status.value}; only FAILED actions are retried",
            )
        policy = self._outcomes.policy
        if principal.id not in (action.principal, action.on_behalf_of) and not (
            policy.decide(principal, action.kind, "approve").allowed
        ):
            raise ActionError("RETRY_REFUSED", f"{principal.id} may not retry {action_id}")
        requester = self._outcomes.principals.principal(action.principal)
        if requester is None:
            raise ActionError("RETRY_REFUSED", f"requester {action.principal} no longer exists")
        kind = self._outcomes.kind(action.kind)
        data = kind.Input.model_validate(action.input)
        decision = policy.decide(requester, kind.kind, "write", kind.policy_input(data))
        retried = replace(decided(action, decision), error=None)
        return await self._execute_again(
            retried, kind, data, "action.retried", principal, {"channel": channel}, before=action
        )

    async def _execute_again(
        self,
        action: Action,
        kind: ActionKind,
        data: ActionInput,
        event: str,
        actor: Principal,
        extra: dict[str, Any],
        *,
        before: Action | None = None,
    ) -> WriteResult:
        """Move the action to EXECUTING under this process's lease, then steps 4 to 8."""
        leases = self._outcomes.leases
        leases.hold(action.id)
        executing = await self._outcomes.save(
            before or action,
            replace(action, status=Status.EXECUTING, lease_until=leases.until()),
            event,
            actor,
            extra,
        )
        if executing is None:
            leases.release(action.id)
            raise ActionError(
                "ACTION_NOT_PENDING" if event == "action.approved" else "NOT_FAILED",
                f"action {action.id} was just moved on by someone else",
            )
        try:
            if executing.decision == Outcome.DENY:  # a retry that policy now refuses
                return await self._outcomes.finish(Found(executing, Status.DENIED))
            found = await self._execution.run(
                executing, kind, data, dry_run=False, claiming=UNCLAIMED
            )
            return await self._outcomes.finish(found)
        finally:
            leases.release(action.id)

    async def expire_due(self) -> int:
        """Move pending actions past their expiry to EXPIRED; how many this call moved."""
        async with self._outcomes.engine.connect() as connection:
            due = await store.due_for_expiry(connection, self._outcomes.clock())
        moved = 0
        for action_id in due:
            action = await self._outcomes.get(action_id)
            if action is None or action.status is not Status.PENDING_APPROVAL:
                continue
            try:
                found = Found(action, Status.EXPIRED, error="approval window passed")
                await self._outcomes.finish(found)
            except ActionError:  # another request or replica moved it meanwhile
                continue
            moved += 1
        return moved

    # ---- policy ----------------------------------------------------------------------

    async def refresh_policy(self) -> None:
        """Reload the policy files if they changed, and audit the reload."""
        policy = self._outcomes.policy
        previous = policy.reload_if_changed()
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
                "version": policy.version,
                "files": [str(policy.model_path), str(policy.policy_path)],
            },
        )
        await self._outcomes.audit.append(event)
