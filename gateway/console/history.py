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
from gateway.console import changes
from gateway.console.access import Viewer, may_see_action, names
from gateway.console.changes import HIDDEN, Seen, currency_of
from gateway.console.pages import ConsoleRoute, Refused, render
from gateway.console.signin import CSRF_FIELD, ServicesDep, ViewerDep
from gateway.console.wording import field_label, value_words
from gateway.console.wording import value_words as words
from gateway.headlines import headline, names_for, subject
from gateway.recovery import Now
from gateway.services import Services
from sources.actions import MASK
from sources.words import Names

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
    stuck: str | None = None  # why nobody can complete its approvals as things stand


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
    item = decidable(services, viewer, action)
    looked_up = await names_for([action], services.reads)
    seen = seen_by(services, viewer, action, looked_up)
    fresh = await _read_again(services, action, seen)
    title = headline(action, services.catalog, looked_up)
    return render(
        "action.html",
        viewer=viewer,
        status=status,
        item=item,
        headline=title,
        subject=subject(action, services.catalog, looked_up),
        rows=changes.rows(action, seen, fresh),
        fresh=fresh,
        moved=changes.moved(action, fresh),
        read_from=_system(services, action),
        input_rows=_input_rows(services, viewer, action, seen),
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


async def _read_again(services: Services, action: Action, seen: Seen) -> Now | None:
    """For a pending action, the record read again now and what approving would write."""
    if action.status is not Status.PENDING_APPROVAL:
        return None
    return await services.writes.now(action, mask=not seen.granted)


def _system(services: Services, action: Action) -> str:
    return services.catalog.source(action.kind).name if action.kind in services.catalog else ""


def _input_rows(
    services: Services, viewer: Viewer, action: Action, seen: Seen
) -> list[tuple[str, str]]:
    """The input as submitted, field by field in words (personal data as the viewer may)."""
    shown = shown_input(services, viewer, action)
    return [
        (field_label(name), HIDDEN if value == MASK else value_words(name, value, seen.currency))
        for name, value in shown.items()
        if value is not None
    ]


def decidable(services: Services, viewer: Viewer, action: Action) -> Decidable:
    """Whether `viewer` may approve `action` now, as the server will judge it."""
    if action.status is not Status.PENDING_APPROVAL:
        return Decidable(action, f"it is no longer waiting ({action.status.value})", [])
    try:
        amount = _amount(services, action)
    except (KeyError, ValidationError):
        return Decidable(action, "its input cannot be read, so it cannot be approved here", [])
    why = approvals.refusal(viewer.principal, action, amount=amount, policy=services.policy)
    who = services.writes.approvers_for(action)
    return Decidable(action, why, who, _stuck(action, who))


def _stuck(action: Action, approvers: list[str]) -> str | None:
    """Why the approvals it still needs cannot all be given, or None when they can."""
    needed = max(1, action.approvals_required) - approvals.valid_approvals(action)
    if len(approvers) >= needed:
        return None
    if not approvers:
        return "nobody who may approve it is left"
    more = "approval" if needed == 1 else "approvals"
    people = "person" if len(approvers) == 1 else "people"
    return f"it needs {needed} more {more} and only {len(approvers)} {people} may give one"


def shown_input(services: Services, viewer: Viewer, action: Action) -> dict[str, Any]:
    """The action's input, personal data masked unless the viewer is granted it (as GraphQL)."""
    kind = services.catalog.get(action.kind)
    if kind is None or pii_granted(services, viewer, action):
        return action.input
    return services.catalog.masked(kind.kind, action.input) or {}


def pii_granted(services: Services, viewer: Viewer, action: Action) -> bool:
    """Whether policy grants `viewer` the personal data of the entity `action` changes."""
    kind = services.catalog.get(action.kind)
    return (
        kind is not None
        and services.policy.decide(viewer.principal, f"pii:{kind.entity}", "read").allowed
    )


def seen_by(services: Services, viewer: Viewer, action: Action, names: Names) -> Seen:
    """How `viewer` sees the action's personal data and money."""
    kind = services.catalog.get(action.kind)
    pii = frozenset() if kind is None else kind.pii_fields
    return Seen(pii, pii_granted(services, viewer, action), currency_of(action, names))


def amount_of(services: Services, action: Action) -> Decimal | None:
    """The money at stake, or None (none, or an input its kind no longer reads)."""
    try:
        return _amount(services, action)
    except (KeyError, ValidationError):
        return None


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
            field_label(name),
            words(name, before.get(name)),
            words(name, asked.get(name)),
            words(name, current.get(name)) if now.values is not None else "—",
            name in before and now.values is not None and before[name] != current.get(name),
        )
        for name in fields
    ]
