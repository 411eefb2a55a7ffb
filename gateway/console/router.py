"""`console_router`: every console page under one router, plus the home page and the CSS."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Request, Response

from gateway.console import (
    alerts,
    doubts,
    drift,
    history,
    inbox,
    ledger,
    signin,
    signout,
    sso,
    systems,
    trail,
)
from gateway.console.access import Page, Viewer
from gateway.console.pages import (
    NOT_FOUND,
    ROOT,
    ConsoleRoute,
    Refused,
    SignInRequired,
    redirect,
    render,
)
from gateway.console.signin import ServicesDep, ViewerDep, signed_in

# The console's parts, each a module whose `router()` adds its routes.
PARTS = (signin, signout, sso, inbox, doubts, history, trail, ledger, systems, drift, alerts)
# The page someone lands on after signing in: the first of these they may see.
LANDING = (Page.APPROVALS, Page.AUDIT, Page.SOURCES)


def console_router() -> APIRouter:
    """The console's routes; mount them at /console."""
    routes = APIRouter(route_class=ConsoleRoute)
    routes.add_api_route("/", home, methods=["GET"], include_in_schema=False)
    routes.add_api_route("/console.css", stylesheet, methods=["GET"], include_in_schema=False)
    for part in PARTS:
        routes.include_router(part.router())
    # Last: any other address under /console is a page saying so, not FastAPI's JSON.
    routes.add_api_route("/{rest:path}", unknown, methods=["GET", "POST"], include_in_schema=False)
    return routes


async def home(viewer: ViewerDep) -> Response:
    """Straight on to the first page this person may see."""
    for page in LANDING:
        if page in viewer.pages:
            return redirect(f"{ROOT}/{page.value}")
    return render("home.html", viewer=viewer)


async def unknown(request: Request, services: ServicesDep, rest: str) -> Response:
    """No console page here: say so, in the console, signed in or not."""
    try:
        viewer: Viewer | None = await signed_in(request, services)
    except SignInRequired:
        viewer = None
    raise Refused(404, *NOT_FOUND, viewer)


async def stylesheet() -> Response:
    """The console's one stylesheet."""
    css = files("gateway.console").joinpath("templates/console.css").read_text("utf-8")
    return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=300"})
