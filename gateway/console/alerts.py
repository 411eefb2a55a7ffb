"""The alerts page: what owners are being told, and notifications that could not be delivered.

    GET  /console/alerts                              open alerts with their evidence, the
                                                      latest resolved, FAILED notifications
    POST /console/alerts/channels/{name}/retry        turn a channel back on (after a 410)
                                                      and send its FAILED notifications again

For operators (policy: `alerts`, `inspect`), as the GraphQL `alerts` and `notifications`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from gateway import alerts, outbox
from gateway.console.access import Page, Viewer
from gateway.console.pages import ROOT, ConsoleRoute, redirect, render
from gateway.console.signin import CSRF_FIELD, FormDep, ServicesDep, allowed
from gateway.sender import enable

OperatorDep = Annotated[Viewer, Depends(allowed(Page.ALERTS))]
ChannelName = Annotated[str, Path(max_length=64)]
SHOWN = 50  # of each list


def router() -> APIRouter:
    """The alerts page and its retry form."""
    routes = APIRouter(route_class=ConsoleRoute)
    routes.add_api_route("/alerts", page, methods=["GET"], include_in_schema=False)
    routes.add_api_route(
        "/alerts/channels/{name}/retry", retry, methods=["POST"], include_in_schema=False
    )
    return routes


async def page(services: ServicesDep, viewer: OperatorDep, retried: int | None = None) -> Response:
    """Open alerts first, then recently resolved ones, then deliveries that failed."""
    async with services.engine.connect() as connection:
        opened = await alerts.listed(connection, status=alerts.AlertStatus.OPEN, limit=SHOWN)
        resolved = await alerts.listed(connection, status=alerts.AlertStatus.RESOLVED, limit=10)
        failed = await outbox.listed(
            connection, status=outbox.NotificationStatus.FAILED, limit=SHOWN
        )
    return render(
        "alerts.html",
        viewer=viewer,
        active=Page.ALERTS.value,
        opened=opened,
        resolved=resolved,
        failed=failed,
        channels=sorted({n.channel for n in failed}),
        retried=retried,
        csrf_field=CSRF_FIELD,
    )


async def retry(
    services: ServicesDep, viewer: OperatorDep, name: ChannelName, _: FormDep
) -> Response:
    """The channel is on again and its failed notifications go out on the next round."""
    async with services.engine.begin() as connection:
        requeued = await enable(connection, name, datetime.now(UTC))
    services.notifier.wake()
    return redirect(f"{ROOT}/alerts?retried={requeued}")
