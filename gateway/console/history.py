"""The action page: the whole life of one action, and its audit events.

GET /console/actions/{id}   fields, decision, validation, approvals, diff, result or
                            error, the audit events that recorded each step; the
                            approve and reject forms while it waits for this person;
                            for an action in doubt, before / asked / now and the
                            resolve form (gateway/console/doubts.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import ValidationError

from gateway import approvals
from gateway.actions.store import Action, Status
from gateway.console.access import Viewer, may_see_action, names
from gateway.console.pages import ConsoleRoute, Refused, render
from gateway.console.signin import CSRF_FIELD, ServicesDep, ViewerDep
from gateway.console.wording import shown as words
from gateway.recovery import Now
from gateway.services import Services

EVENTS_SHOWN = 500
DONE = {
    "approved": "Your approval was recorded.",
    "rejected": "You rejected this action.",
}


@dataclass(frozen=True, slots=True)
class Decidable:
    """A pending action as one approver sees it: whether they may decide it, and who may."""

    action: Action
    refusal: str | None  # why this person may not approve or reject it; None when they may
    approvers: list[str]


@dataclass(frozen=True, slots=True)
class Compared:
    """One field of an action in doubt: before it, asked for, and now."""

    name: str
    before: str
    asked: str
    now: str
    moved: bool  # the system holds something other than the before-state


def router() -> APIRouter:
    """The action page."""
    routes = APIRouter(route_class=ConsoleRoute)
    routes.add_api_route("/actions/{action_id}", show, methods=["GET"], include_in_schema=False)
    return routes


async def show(
    services: ServicesDep,
    viewer: ViewerDep,
    action_id: Annotated[str, Path(max_length=64)],
    done: str | None = None,
) -> Response:
    """One action's page."""
    return await action_page(services, viewer, action_id, notice=DONE.get(done or ""))


async def action_page(
    services: Services,
    viewer: Viewer,
    action_id: str,
    *,
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    """Render one action's page, with a notice or an error from what was just tried."""
    action = await services.writes.get(action_id)
    if action is None or not may_see_action(viewer.principal, viewer.pages, action):
        raise Refused(404, "No such action", f"There is no action {action_id} for you.", viewer)
    events, more = await services.audit.query(action_id=action.id, limit=EVENTS_SHOWN)
    in_doubt = action.status is Status.IN_DOUBT
    now = await services.writes.now(action) if in_doubt else None
    return render(
        "action.html",
        viewer=viewer,
        status=status,
        item=decidable(services, viewer, action),
        events=events,
        more_events=more,
        bound=_bound(action),
        shown_input=shown_input(services, viewer, action),
        names=names(services),
        catalog=services.catalog,
        current=now,
        compared=[]
        if now is None
        else compared(action, now, shown_input(services, viewer, action)),
        notice=notice,
        error=error,
        csrf_field=CSRF_FIELD,
    )


def decidable(services: Services, viewer: Viewer, action: Action) -> Decidable:
    """Whether `viewer` may approve `action` now, as the server will judge it."""
    if action.status is not Status.PENDING_APPROVAL:
        return Decidable(action, f"it is no longer waiting ({action.status.value})", [])
    try:
        amount = _amount(services, action)
    except (KeyError, ValidationError):
        return Decidable(action, "its input cannot be read, so it cannot be approved here", [])
    why = approvals.refusal(viewer.principal, action, amount=amount, policy=services.policy)
    return Decidable(action, why, services.writes.approvers_for(action))


def shown_input(services: Services, viewer: Viewer, action: Action) -> dict[str, Any]:
    """The action's input, personal data masked unless the viewer is granted it (as GraphQL)."""
    kind = services.catalog.get(action.kind)
    if (
        kind is None
        or services.policy.decide(viewer.principal, f"pii:{kind.entity}", "read").allowed
    ):
        return action.input
    return services.catalog.masked(kind.kind, action.input) or {}


def _amount(services: Services, action: Action) -> Decimal | None:
    kind = services.catalog.get(action.kind)
    if kind is None:
        raise KeyError(action.kind)
    return kind.amount(kind.Input.model_validate(action.input))


def _bound(action: Action) -> dict[str, bool]:
    """For each approver: does their approval still count (same input, same policy)?"""
    return {
        a.approver: a.input_digest == action.input_digest
        and a.policy_version == action.policy_version
        for a in action.approvals
    }


def compared(action: Action, now: Now, shown: dict[str, Any]) -> list[Compared]:
    """Every field of the action's diff and of the fresh read, side by side. An action
    claimed but not yet planned when its process died has no diff: its input is what it
    asked for, and nothing says what the record held before."""
    diff: dict[str, Any] = action.diff or {}
    before, asked = diff.get("before") or {}, diff.get("after") or shown
    current = now.values or {}
    fields = dict.fromkeys([*before, *asked, *current])
    return [
        Compared(
            name,
            words(before.get(name)),
            words(asked.get(name)),
            words(current.get(name)) if now.values is not None else "—",
            name in before and now.values is not None and before[name] != current.get(name),
        )
        for name in fields
    ]
