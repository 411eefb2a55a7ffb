"""The approvals inbox, and approving or rejecting from it.

    GET  /console/approvals                  pending actions, newest first, each with who
                                             asked, for whom, why it needs approval, the diff
    POST /console/actions/{id}/approve       comment        -> writes.approve -> action page
    POST /console/actions/{id}/reject        reason         -> writes.reject  -> action page

A form is shown only when `approvals.refusal` says the server would accept it; otherwise
the card says why not. What the server refuses anyway (someone was faster, the policy
changed) comes back as a message on the action page, never as a traceback.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from gateway.actions.store import Status
from gateway.console.access import Page, Viewer, names
from gateway.console.history import action_page, decidable
from gateway.console.pages import ROOT, ConsoleRoute, redirect, render
from gateway.console.signin import CSRF_FIELD, FormDep, ServicesDep, allowed, form_text
from gateway.errors import GatehouseError
from gateway.services import Services

PAGE_SIZE = 20
ApproverDep = Annotated[Viewer, Depends(allowed(Page.APPROVALS))]
ActionId = Annotated[str, Path(max_length=64)]


def router() -> APIRouter:
    """The inbox and its two forms."""
    routes = APIRouter(route_class=ConsoleRoute)
    routes.add_api_route("/approvals", inbox, methods=["GET"], include_in_schema=False)
    routes.add_api_route(
        "/actions/{action_id}/approve", approve, methods=["POST"], include_in_schema=False
    )
    routes.add_api_route(
        "/actions/{action_id}/reject", reject, methods=["POST"], include_in_schema=False
    )
    return routes


async def inbox(services: ServicesDep, viewer: ApproverDep, after: str | None = None) -> Response:
    """Pending actions, newest first, a page at a time."""
    cursor = None
    if after and (last := await services.writes.get(after)) is not None:
        cursor = (last.created_at, last.id)
    pending, more = await services.writes.page(
        status=Status.PENDING_APPROVAL,
        principal=None,
        visible_to=None,
        limit=PAGE_SIZE,
        after=cursor,
    )
    items = []
    for listed in pending:  # the page holds no approvals; each card needs them
        action = await services.writes.get(listed.id)
        if action is not None and action.status is Status.PENDING_APPROVAL:
            items.append(decidable(services, viewer, action))
    return render(
        "approvals.html",
        viewer=viewer,
        active=Page.APPROVALS.value,
        items=items,
        names=names(services),
        catalog=services.catalog,
        next_after=pending[-1].id if more and pending else None,
        first_page=after is None,
        csrf_field=CSRF_FIELD,
    )


async def approve(
    services: ServicesDep, viewer: ApproverDep, action_id: ActionId, form: FormDep
) -> Response:
    """Approve as the signed-in person; the last approval needed applies the action."""
    try:
        await services.writes.approve(
            action_id, viewer.principal, form_text(form, "comment"), channel="console"
        )
    except GatehouseError as refused:  # ActionError among them
        return await _refused(services, viewer, action_id, "approve", refused)
    return redirect(f"{ROOT}/actions/{action_id}?done=approved")


async def reject(
    services: ServicesDep, viewer: ApproverDep, action_id: ActionId, form: FormDep
) -> Response:
    """Reject as the signed-in person, with a reason."""
    reason = form_text(form, "reason")
    if len(reason) < 3:
        return await action_page(
            services,
            viewer,
            action_id,
            error="Say why you reject it, in a few words. Nothing was changed.",
            status=400,
        )
    try:
        await services.writes.reject(action_id, viewer.principal, reason, channel="console")
    except GatehouseError as refused:  # ActionError among them
        return await _refused(services, viewer, action_id, "reject", refused)
    return redirect(f"{ROOT}/actions/{action_id}?done=rejected")


async def _refused(
    services: Services, viewer: Viewer, action_id: str, verb: str, refused: GatehouseError
) -> Response:
    return await action_page(
        services,
        viewer,
        action_id,
        error=f"Could not {verb} this action: {refused.message} ({refused.code}).",
        status=refused.status,
    )
