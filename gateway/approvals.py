"""Who may approve an action: separation of duties, approval limits, bound approvals.

An approver is a human with the approver role (policy `approve` on the action's kind),
never the requester nor the human an agent acts for, with an `approval_limit` covering the
money at stake. An approval counts only for the input digest and policy version it saw.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from gateway.actions.store import Action
from gateway.authz import Outcome, Policy
from gateway.config import PrincipalKind
from gateway.principals import Principal


def refusal(
    approver: Principal, action: Action, *, amount: Decimal | None, policy: Policy
) -> str | None:
    """Why `approver` may not approve `action`, or None when they may."""
    if approver.kind is not PrincipalKind.HUMAN:
        return f"{approver.id} is a {approver.kind.value}; only humans approve"
    if approver.id in (action.principal, action.on_behalf_of):
        return f"{approver.id} requested this action (or owns the agent that did)"
    if not policy.decide(approver, action.kind, "approve").allowed:
        return f"{approver.id} does not have the approver role for {action.kind}"
    if amount is not None and approval_limit(approver) < amount:
        return f"{approver.id}'s approval limit of {approval_limit(approver)} is below {amount}"
    if any(a.approver == approver.id for a in action.approvals):
        return f"{approver.id} has already given a verdict on this action"
    return None


def approval_limit(principal: Principal) -> Decimal:
    """The most money this principal may approve; zero when none is configured."""
    try:
        return Decimal(str(principal.attributes.get("approval_limit", 0)))
    except InvalidOperation:
        return Decimal(0)


def eligible(
    principals: Iterable[Principal], action: Action, *, amount: Decimal | None, policy: Policy
) -> list[str]:
    """The principals who could approve `action` now."""
    return sorted(
        p.id for p in principals if refusal(p, action, amount=amount, policy=policy) is None
    )


def awaited(action: Action) -> bool:
    """Whether the action, decided `review`, still lacks approvals that count."""
    return action.decision == Outcome.REVIEW and valid_approvals(action) < max(
        1, action.approvals_required
    )


def valid_approvals(action: Action) -> int:
    """Approvals that still count: same input digest, same policy version."""
    return sum(
        1
        for a in action.approvals
        if a.verdict == "approve"
        and a.input_digest == action.input_digest
        and a.policy_version == action.policy_version
    )
