"""The approvals queue, and approving or rejecting from it.

    GET  /console/approvals                  every pending action, counted (yours to
                                             decide, others', those nobody can approve),
                                             the nearest approval deadline first; filters
                                             (mine, kind, requester or agent, amount), sorting,
                                             pages that keep the filters; each card a headline,
                                             who asked, why it needs approval, the change
    POST /console/actions/{id}/approve       comment        -> writes.approve -> action page
    POST /console/actions/{id}/reject        reason         -> writes.reject  -> action page

A form is shown only when `approvals.refusal` says the server would accept it, and the
Approve button only when the approvals still needed can all be given; otherwise the card
says why not. What the server refuses anyway (someone was faster, the policy changed)
comes back as a message on the action page, never as a traceback.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from gateway.console import queue
from gateway.console.access import Page, Viewer
from gateway.console.access import names as principal_names
from gateway.console.history import action_page, decidable
from gateway.console.pages import ROOT, ConsoleRoute, redirect, render
from gateway.console.signin import CSRF_FIELD, FormDep, ServicesDep, allowed, form_text
from gateway.errors import GatehouseError
from gateway.headlines import names_for
from gateway.services import Services

PAGE_SIZE = 20
QUEUE_LIMIT = 2000  # the pending actions counted and sorted at once; more are named
ApproverDep = Annotated[Viewer, Depends(allowed(Page.APPROVALS))]
ActionId = Annotated[str, Path(max_length=64)]
Param = Annotated[str, Query(max_length=64)]


def router() -> APIRouter:
    """The queue and its two forms."""
    routes = APIRouter(route_class=ConsoleRoute)
    routes.add_api_route("/approvals", inbox, methods=["GET"], include_in_schema=False)
    routes.add_api_route(
        "/actions/{action_id}/approve", approve, methods=["POST"], include_in_schema=False
    )
    routes.add_api_route(
        "/actions/{action_id}/reject", reject, methods=["POST"], include_in_schema=False
    )
    return routes


async def inbox(
    services: ServicesDep,
    viewer: ApproverDep,
    mine: Param = "",
    kind: Param = "",
    who: Param = "",
    min_amount: Param = "",
    max_amount: Param = "",
    sort: Param = "",
    page: Param = "",
) -> Response:
    """The queue: counts over every pending action, then one page of those that match."""
    asked = {"mine": mine, "kind": kind, "who": who, "min_amount": min_amount}
    asked |= {"max_amount": max_amount, "sort": sort, "page": page}
    filters, problems = queue.read_filters(asked, kinds=set(services.catalog))
    pending = await services.writes.pending(limit=QUEUE_LIMIT)
    items = [decidable(services, viewer, action) for action in pending]
    chosen = queue.sort(queue.matching(items, filters, services), filters.sort, services)
    shown, pages = queue.page_of(chosen, filters.page, PAGE_SIZE)
    names = await names_for([item.action for item in shown], services.reads)
    return render(
        "approvals.html",
        viewer=viewer,
        status=400 if problems else 200,
        error=" ".join(problems) or None,
        active=Page.APPROVALS.value,
        counts=queue.counts(items),
        capped=len(pending) >= QUEUE_LIMIT,
        cards=[queue.card(services, viewer, item, names) for item in shown],
        matching=len(chosen),
        pages=pages,
        filters=filters,
        sorts=queue.SORTS,
        kinds=list(services.catalog),
        requesters=queue.requesters(pending),
        names=principal_names(services),
        catalog=services.catalog,
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
