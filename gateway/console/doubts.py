"""Actions in doubt: the exception queue, and settling one as a person found it.

    GET  /console/in-doubt                   actions a crash left IN_DOUBT, newest first
    POST /console/actions/{id}/resolve       applied=yes|no, note -> writes.resolve -> the queue

The action page shows, for an action in doubt, each field as it was when the action was
planned, what the action asked for, and what the system of record holds now (a fresh plan,
nothing written), so a person can tell whether the write reached it. The page and the form
are for people whom policy lets `resolve` (the operator role).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from gateway.actions.store import Action, Status
from gateway.console.access import Page, Viewer, names
from gateway.console.changes import Row, rows
from gateway.console.history import action_page, seen_by
from gateway.console.pages import ROOT, ConsoleRoute, redirect, render
from gateway.console.signin import FormDep, ServicesDep, allowed, form_text
from gateway.errors import GatehouseError
from gateway.headlines import headline, names_for, subject
from gateway.services import Services
from sources.words import Names

PAGE_SIZE = 20
OperatorDep = Annotated[Viewer, Depends(allowed(Page.IN_DOUBT))]
ActionId = Annotated[str, Path(max_length=64)]
ANSWERS = {"yes": True, "no": False}


def router() -> APIRouter:
    """The exception queue and the resolve form."""
    routes = APIRouter(route_class=ConsoleRoute)
    routes.add_api_route("/in-doubt", queue, methods=["GET"], include_in_schema=False)
    routes.add_api_route(
        "/actions/{action_id}/resolve", resolve, methods=["POST"], include_in_schema=False
    )
    return routes


async def queue(
    services: ServicesDep,
    viewer: OperatorDep,
    after: str | None = None,
    resolved: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Actions in doubt, newest first, a page at a time."""
    cursor = None
    if after and (last := await services.writes.get(after)) is not None:
        cursor = (last.created_at, last.id)
    actions, more = await services.writes.page(
        status=Status.IN_DOUBT, principal=None, visible_to=None, limit=PAGE_SIZE, after=cursor
    )
    looked_up = await names_for(actions, services.reads)
    return render(
        "in_doubt.html",
        viewer=viewer,
        active=Page.IN_DOUBT.value,
        actions=actions,
        doubts=[_doubt(services, viewer, action, looked_up) for action in actions],
        names=names(services),
        catalog=services.catalog,
        next_after=actions[-1].id if more and actions else None,
        first_page=after is None,
        notice=f"You resolved action {resolved}; the audit trail records how."
        if resolved
        else None,
    )


@dataclass(frozen=True, slots=True)
class Doubt:
    """One action in doubt as its card shows it."""

    action: Action
    headline: str
    subject: str
    rows: list[Row]


def _doubt(services: Services, viewer: Viewer, action: Action, looked_up: Names) -> Doubt:
    seen = seen_by(services, viewer, action, looked_up)
    return Doubt(
        action,
        headline(action, services.catalog, looked_up),
        subject(action, services.catalog, looked_up),
        rows(action, seen),
    )


async def resolve(
    services: ServicesDep, viewer: OperatorDep, action_id: ActionId, form: FormDep
) -> Response:
    """Settle an action in doubt as applied or not, with a note saying how it was checked."""
    applied, note = ANSWERS.get(form_text(form, "applied")), form_text(form, "note")
    if applied is None or len(note) < 3:
        return await action_page(
            services,
            viewer,
            action_id,
            error="Say whether the change is in the system of record, and how you checked, "
            "in a few words. Nothing was changed.",
            status=400,
        )
    try:
        await services.writes.resolve(action_id, viewer.principal, applied=applied, note=note)
    except GatehouseError as refused:  # ActionError among them
        return await action_page(
            services,
            viewer,
            action_id,
            error=f"Could not resolve this action: {refused.message} ({refused.code}).",
            status=refused.status,
        )
    return redirect(f"{ROOT}/in-doubt?resolved={action_id}")
