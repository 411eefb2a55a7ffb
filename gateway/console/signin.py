"""Signing in and out of the console, who is signed in, and the CSRF check on every form.

    GET  /console/login    the form; a login CSRF token in a short-lived cookie and the form
    POST /console/login    API key -> a person (agents and services are turned away)
                           -> session row -> cookie gatehouse_session (HttpOnly,
                           SameSite=Strict, Path=/console, Secure over https, Max-Age 8 h)
    POST /console/logout   CSRF-checked; the session row is deleted

Every other console POST carries the session's CSRF token in a hidden field, compared in
constant time: without it, or with another, the request is refused (403) and nothing moves.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import FormData

from gateway.config import PrincipalKind
from gateway.console.access import Page, Viewer, pages_for
from gateway.console.pages import (
    ROOT,
    ConsoleRoute,
    Refused,
    SignInRequired,
    redirect,
    render,
    safe_next,
)
from gateway.console.sessions import LIFETIME, close_session, find_session, open_session
from gateway.errors import Unauthenticated
from gateway.principals import Principal
from gateway.services import Services

COOKIE = "gatehouse_session"
LOGIN_COOKIE = "gatehouse_login_csrf"
CSRF_FIELD = "csrf_token"


async def console_services(request: Request) -> Services:
    """The process's services (as `gateway.app.get_services`, which imports the console)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(console_services)]


async def signed_in(request: Request, services: ServicesDep) -> Viewer:
    """The signed-in person, or a redirect to the sign-in page."""
    token = request.cookies.get(COOKIE)
    session = None
    if token:
        session = await find_session(services.engine, token, now=datetime.now(UTC))
    principal = services.authenticator.principal(session.principal) if session else None
    if token is None or session is None or principal is None:
        # After signing in the browser GETs `next`: a form's target is no page to land on.
        query = f"?{request.url.query}" if request.url.query else ""
        back = f"{request.url.path}{query}" if request.method == "GET" else f"{ROOT}/"
        raise SignInRequired(back)
    return Viewer(principal, session, token, pages_for(principal, services))


ViewerDep = Annotated[Viewer, Depends(signed_in)]


def allowed(page: Page) -> Callable[[Viewer], Awaitable[Viewer]]:
    """A dependency: the signed-in person, if policy lets them see `page`; else 403."""

    async def check(viewer: ViewerDep) -> Viewer:
        if page not in viewer.pages:
            raise Refused(
                403,
                "Not available to you",
                f"{viewer.principal.display_name} is not granted the {page.value} page.",
                viewer,
            )
        return viewer

    return check


async def checked_form(request: Request, viewer: ViewerDep) -> FormData:
    """The posted form, if it carries this session's CSRF token; else 403."""
    form = await request.form()
    if not _same(form.get(CSRF_FIELD), viewer.session.csrf_token):
        raise Refused(
            403,
            "Form refused",
            "This form did not come from your console session (its security token is missing "
            "or wrong). Nothing was changed. Reload the page and try again.",
            viewer,
        )
    return form


FormDep = Annotated[FormData, Depends(checked_form)]


def _same(sent: object, expected: str) -> bool:
    return isinstance(sent, str) and secrets.compare_digest(sent.encode(), expected.encode())


def router() -> APIRouter:
    """The sign-in and sign-out routes."""
    routes = APIRouter(route_class=ConsoleRoute)
    routes.add_api_route("/login", login_form, methods=["GET"], include_in_schema=False)
    routes.add_api_route("/login", login, methods=["POST"], include_in_schema=False)
    routes.add_api_route("/logout", logout, methods=["POST"], include_in_schema=False)
    return routes


async def login_form(request: Request, services: ServicesDep) -> Response:
    """The sign-in form (or straight on, for someone already signed in)."""
    target = safe_next(request.query_params.get("next"))
    token = request.cookies.get(COOKIE)
    if token and await find_session(services.engine, token, now=datetime.now(UTC)):
        return redirect(target)
    notice = "You are signed out." if "signed_out" in request.query_params else None
    return _form(request, target, notice=notice)


async def login(request: Request, services: ServicesDep) -> Response:
    """Check the key, and open a session for a person."""
    form = await request.form()
    target = safe_next(form_text(form, "next"))
    if not _same(form.get(CSRF_FIELD), request.cookies.get(LOGIN_COOKIE) or ""):
        return _form(
            request, target, error="The sign-in form had expired. Please try again.", status=403
        )
    try:
        principal = services.authenticator.authenticate(f"Bearer {form_text(form, 'api_key')}")
    except Unauthenticated:
        return _form(request, target, error="That API key was not recognised.", status=401)
    if principal.kind is not PrincipalKind.HUMAN:
        return _form(request, target, error=_not_a_person(principal), status=403)
    opened = await open_session(services.engine, principal.id, now=datetime.now(UTC))
    response = redirect(target)
    response.set_cookie(
        COOKIE,
        opened.token,
        max_age=int(LIFETIME.total_seconds()),
        path=ROOT,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(LOGIN_COOKIE, path=f"{ROOT}/login")
    return response


async def logout(
    request: Request, services: ServicesDep, viewer: ViewerDep, _: FormDep
) -> Response:
    """End the session: its row is deleted and the cookie cleared."""
    await close_session(services.engine, viewer.token)
    response = redirect(f"{ROOT}/login?signed_out=1")
    response.delete_cookie(COOKIE, path=ROOT, secure=request.url.scheme == "https", httponly=True)
    return response


def _form(
    request: Request,
    target: str,
    *,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        "login.html",
        viewer=None,
        status=status,
        next=target,
        csrf=token,
        error=error,
        notice=notice,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path=f"{ROOT}/login",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


def form_text(form: FormData, name: str, *, limit: int = 2000) -> str:
    """A text field of a posted form, trimmed; empty when absent."""
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _not_a_person(principal: Principal) -> str:
    return (
        f"That key belongs to {principal.display_name} ({principal.id}), "
        f"which is {'an' if principal.kind is PrincipalKind.AGENT else 'a'} "
        f"{principal.kind.value}. The console is for people: agents and services use the "
        "GraphQL API or MCP."
    )
