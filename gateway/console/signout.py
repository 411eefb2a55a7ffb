"""Signing out of the console, and of the OpenID provider the session was opened through.

    POST /console/logout   CSRF-checked -> the session row deleted, with the ID token kept
                           beside it, and the cookie cleared: the console's sign-out is done
                           before the provider is asked anything, so it is never lost
                           -> opened with an API key: the sign-in page, "You are signed out"
                           -> opened by single sign-on: the provider's metadata read afresh
                              (oidc.py) -> its end_session_endpoint with id_token_hint,
                              client_id and post_logout_redirect_uri, the sign-in page
                              (OpenID Connect RP-Initiated Logout 1.0) -> the provider ends
                              its session and sends the browser to that page
                           -> no end_session_endpoint, or a provider that does not answer:
                              the sign-in page, saying the provider's session may be open
                           every sign-out audited (console.signed_out), never the ID token

The way to the provider is a page that moves on, not a redirect: the console's pages allow
forms to go only to the console (CSP form-action 'self'), and browsers hold the redirects
that follow the Sign out form's post to that too. No `state` is sent: the provider returns
to the plain sign-in page, where nothing is decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from gateway.console.pages import ROOT, ConsoleRoute, redirect, render
from gateway.console.sessions import close_session
from gateway.console.signin import (
    COOKIE,
    PROVIDER_OPEN,
    SIGNED_OUT,
    FormDep,
    ServicesDep,
    ViewerDep,
)
from gateway.console.sso import signed_out_uri
from gateway.oidc import SignOnRefused
from gateway.services import Services
from gateway.sign_ins import Method


@dataclass(frozen=True, slots=True)
class AtProvider:
    """What became of the provider's session: where the browser goes to end it (None when
    it cannot), and the word for the audit trail."""

    url: str | None
    outcome: str  # end_requested | no_end_session_endpoint | provider_unreachable | ...


def router() -> APIRouter:
    """The sign-out route."""
    routes = APIRouter(route_class=ConsoleRoute)
    routes.add_api_route("/logout", logout, methods=["POST"], include_in_schema=False)
    return routes


async def logout(
    request: Request, services: ServicesDep, viewer: ViewerDep, _: FormDep
) -> Response:
    """End the session here, then at the provider when a single sign-on opened it."""
    id_token = await close_session(services.engine, viewer.token)
    response: Response
    if id_token is None:
        await services.sign_ins.signed_out(request, viewer.principal, Method.API_KEY)
        response = redirect(_sign_in_page(SIGNED_OUT))
    else:
        at_provider = await _end_at_provider(request, services, id_token)
        await services.sign_ins.signed_out(
            request, viewer.principal, Method.SSO, provider_logout=at_provider.outcome
        )
        response = _onward(services, at_provider)
    response.delete_cookie(COOKIE, path=ROOT, secure=request.url.scheme == "https", httponly=True)
    return response


async def _end_at_provider(request: Request, services: Services, id_token: str) -> AtProvider:
    client = services.oidc
    if client is None:  # single sign-on was turned off since this session was opened
        return AtProvider(None, "not_configured")
    back = signed_out_uri(request, client)
    try:
        url = await client.end_session_url(id_token=id_token, post_logout_redirect_uri=back)
    except SignOnRefused as refused:  # unreachable, or answering as another issuer
        return AtProvider(None, refused.reason)
    return AtProvider(url, "end_requested" if url else "no_end_session_endpoint")


def _onward(services: Services, at_provider: AtProvider) -> Response:
    if at_provider.url is None:
        return redirect(_sign_in_page(PROVIDER_OPEN))
    name = services.oidc.config.name if services.oidc else "single sign-on"
    return render(
        "moving_on.html",
        viewer=None,
        title="Signing you out",
        heading="Signed out of the console",
        link=f"Continue to sign out of {name}",
        target=at_provider.url,
    )


def _sign_in_page(signed_out: str) -> str:
    return f"{ROOT}/login?{urlencode({'signed_out': signed_out})}"
