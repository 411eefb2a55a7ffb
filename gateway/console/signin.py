"""Signing in to the console, who is signed in, and the CSRF check on every form.

    GET  /console/login    the form; a login CSRF token in a short-lived cookie and the form;
                           "Sign in with <provider>" beside it when [auth.oidc] is set (sso.py)
    POST /console/login    an address past its failed sign-ins is refused first (sign_ins.py)
                           -> API key -> a person (agents and services are turned away)
                           -> session row -> cookie gatehouse_session (HttpOnly,
                           SameSite=Strict, Path=/console, Secure over https, Max-Age 8 h);
                           the sign-in or its refusal audited, never the key
    POST /console/logout   signout.py: the session ends here, then at the provider too

Every other console POST carries the session's CSRF token in a hidden field, compared in
constant time: without it, or with another, the request is refused (403) and nothing moves.
A page asked for without a session goes to the sign-in page and back; a decision posted
after the session ended keeps what was typed (drafts.py) and comes back to its action.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import FormData

from gateway.config import PrincipalKind
from gateway.console import drafts
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
from gateway.console.sessions import (
    LIFETIME,
    any_session,
    find_session,
    open_session,
)
from gateway.errors import Unauthenticated
from gateway.principals import Principal
from gateway.services import Services
from gateway.sign_ins import Failure, Method

COOKIE = "gatehouse_session"
LOGIN_COOKIE = "gatehouse_login_csrf"
CSRF_FIELD = "csrf_token"
# The sign-in page's `signed_out` after signing out (signout.py): signed out everywhere it
# could be, or of the console only, the provider's session perhaps still open.
SIGNED_OUT = "1"
PROVIDER_OPEN = "console"


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
        raise await _sign_in_again(request, services, token)
    draft = await _restored(request, services, principal) if request.method == "GET" else None
    return Viewer(principal, session, token, pages_for(principal, services), draft)


async def _sign_in_again(request: Request, services: Services, token: str | None) -> SignInRequired:
    """Back to this page after signing in; from a decision's form, to its action's page
    with what was typed kept (drafts.py)."""
    if request.method == "GET":
        query = f"?{request.url.query}" if request.url.query else ""
        return SignInRequired(f"{request.url.path}{query}", ended=token is not None)
    decision = drafts.DECISION.match(request.url.path)
    if token is None or decision is None:
        # After signing in the browser GETs `next`: a form's target is no page to land on.
        return SignInRequired(f"{ROOT}/", ended=token is not None)
    action_id, verb = decision.groups()
    kept = await _keep_draft(request, services, token, action_id, verb)
    # Back at the decision, not the top of a long page (on a phone, screens away).
    return SignInRequired(f"{ROOT}/actions/{action_id}#decision", ended=True, draft=kept)


async def _keep_draft(
    request: Request, services: Services, token: str, action_id: str, verb: str
) -> str | None:
    """Keep the form's text, if the form is the ended session's own; its cookie token."""
    ended = await any_session(services.engine, token)
    form = await request.form()
    if ended is None or not _same(form.get(CSRF_FIELD), ended.csrf_token):
        return None
    text = form_text(form, drafts.FIELDS[verb])
    if not text:
        return None
    draft = drafts.Draft(verb, text)
    now = datetime.now(UTC)
    return await drafts.keep(
        services.engine, principal=ended.principal, action_id=action_id, draft=draft, now=now
    )


async def _restored(
    request: Request, services: Services, principal: Principal
) -> drafts.Draft | None:
    """On an action's page, what this person had typed there when their session ended."""
    token = request.cookies.get(drafts.COOKIE)
    if token is None or not request.url.path.startswith(f"{ROOT}/actions/"):
        return None
    action_id = request.url.path.removeprefix(f"{ROOT}/actions/")
    return await drafts.take(
        services.engine, token, principal=principal.id, action_id=action_id, now=datetime.now(UTC)
    )


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
    return routes


async def login_form(request: Request, services: ServicesDep) -> Response:
    """The sign-in form (or straight on, for someone already signed in)."""
    target = safe_next(request.query_params.get("next"))
    token = request.cookies.get(COOKIE)
    if token and await find_session(services.engine, token, now=datetime.now(UTC)):
        return redirect(target)
    return sign_in_page(request, services, target, notice=_notice(request, services))


def _notice(request: Request, services: Services) -> str | None:
    signed_out = request.query_params.get("signed_out")
    if signed_out == PROVIDER_OPEN:
        provider = services.oidc.config.name if services.oidc else "single sign-on"
        return (
            f"You are signed out of the console, but your {provider} session may still be "
            "open. On a computer others use, sign out there too, or close the browser."
        )
    if signed_out is not None:
        return "You are signed out."
    if "ended" in request.query_params:
        return "Your session ended; sign in again to continue."
    return None


async def login(request: Request, services: ServicesDep) -> Response:
    """Check the key, and open a session for a person."""
    form = await request.form()
    target = safe_next(form_text(form, "next"))
    if not _same(form.get(CSRF_FIELD), request.cookies.get(LOGIN_COOKIE) or ""):
        return sign_in_page(
            request,
            services,
            target,
            error="The sign-in form had expired. Please try again.",
            status=403,
        )
    if (wait := await services.sign_ins.wait(request)) is not None:
        return sign_in_page(request, services, target, error=too_many(wait), status=429)
    try:
        principal = services.authenticator.authenticate(f"Bearer {form_text(form, 'api_key')}")
    except Unauthenticated:
        await services.sign_ins.failed(request, Failure(Method.API_KEY, "unknown_key"))
        error = "That API key was not recognised."
        return sign_in_page(request, services, target, error=error, status=401)
    if principal.kind is not PrincipalKind.HUMAN:
        await services.sign_ins.failed(
            request, Failure(Method.API_KEY, "not_a_person", principal=principal)
        )
        error = not_a_person(principal)
        return sign_in_page(request, services, target, error=error, status=403)
    await services.sign_ins.succeeded(request, principal, Method.API_KEY)
    response = redirect(target)
    await start_session(request, services, response, principal)
    response.delete_cookie(LOGIN_COOKIE, path=f"{ROOT}/login")
    return response


async def start_session(
    request: Request,
    services: Services,
    response: Response,
    principal: Principal,
    *,
    id_token: str | None = None,
) -> None:
    """Open a session for `principal` (with the ID token of a single sign-on, kept for
    signing out of the provider); `response` carries its cookie."""
    opened = await open_session(
        services.engine, principal.id, now=datetime.now(UTC), id_token=id_token
    )
    response.set_cookie(
        COOKIE,
        opened.token,
        max_age=int(LIFETIME.total_seconds()),
        path=ROOT,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def too_many(wait: int) -> str:
    """The refusal once an address has failed to sign in too often."""
    return (
        "Too many failed sign-ins from your address. Nothing was checked; "
        f"try again in {wait} seconds."
    )


def sign_in_page(
    request: Request,
    services: Services,
    target: str,
    *,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    """The sign-in page: the API key form, and the single sign-on button when configured."""
    token = secrets.token_urlsafe(32)
    sso = services.oidc.config.name if services.oidc else None
    response = render(
        "login.html",
        viewer=None,
        status=status,
        next=target,
        sso=sso,
        sso_start=f"{ROOT}/login/sso?{urlencode({'next': target})}",
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


def not_a_person(principal: Principal, *, whose: str = "That key belongs to") -> str:
    """Why the console turns away an agent or a service."""
    article = "an" if principal.kind is PrincipalKind.AGENT else "a"
    return (
        f"{whose} {principal.display_name} ({principal.id}), which is {article} "
        f"{principal.kind.value}. The console is for people: agents and services use the "
        "GraphQL API or MCP."
    )
