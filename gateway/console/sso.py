"""Single sign-on to the console through the configured OpenID provider ([auth.oidc]).

    GET /console/login/sso?next=...     gateway/oidc.py makes the authorization URL (state,
                                        nonce, PKCE S256); they are kept server-side under
                                        the state's SHA-256 for `PENDING`, the state also in
                                        cookie gatehouse_sso (HttpOnly, SameSite=Lax: it must
                                        come back on the provider's redirect) -> 303 there
    GET /console/login/sso/callback     the state must equal the cookie's (bound to the browser
                                        that started, against login CSRF) and name a pending
                                        sign-in, taken once; an `error` is the provider's
                                        refusal; an `iss` must be ours (RFC 9207) -> the code
                                        exchanged and the ID token verified (oidc.py) -> the
                                        claim's principal, a person -> a session, as the key
                                        sign-in opens, keeping the ID token for signing out
                                        (signout.py) -> a page that moves on to `next`

The last step is a page, not a redirect: a chain of redirects that began at the provider's
site is cross-site, and the browser would hold back the SameSite=Strict session cookie from
the page it ends on. Every sign-in and every refusal is audited (gateway/sign_ins.py), and
refusals are throttled per address as the key sign-in's are.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy import Column, DateTime, String, Table, Text, delete
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import PrincipalKind
from gateway.console.pages import ROOT, ConsoleRoute, Refused, render, safe_next
from gateway.console.signin import (
    SIGNED_OUT,
    ServicesDep,
    not_a_person,
    start_session,
    too_many,
)
from gateway.database import metadata
from gateway.oidc import Begun, Identity, OpenIdClient, SignOnRefused
from gateway.principals import Principal
from gateway.services import Services
from gateway.sign_ins import Failure, Method

STATE_COOKIE = "gatehouse_sso"
PATH = f"{ROOT}/login/sso"
PENDING = timedelta(minutes=10)  # time to sign in at the provider
_ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")  # RFC 6749 error codes; anything else is noise

console_sign_ons = Table(
    "console_sign_ons",
    metadata,
    Column("state_sha256", String(64), primary_key=True),
    Column("nonce", String(128), nullable=False),
    Column("code_verifier", String(128), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("next", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)


@dataclass(frozen=True, slots=True)
class Pending:
    """A sign-in sent to the provider, as kept until it comes back."""

    nonce: str
    code_verifier: str
    redirect_uri: str
    next: str


def router() -> APIRouter:
    """The two single sign-on routes."""
    routes = APIRouter(route_class=ConsoleRoute)
    routes.add_api_route("/login/sso", start, methods=["GET"], include_in_schema=False)
    routes.add_api_route("/login/sso/callback", callback, methods=["GET"], include_in_schema=False)
    return routes


async def start(request: Request, services: ServicesDep) -> Response:
    """Off to the provider, with a fresh state, nonce and PKCE challenge."""
    client = _client(services)
    if (wait := await services.sign_ins.start(request)) is not None:
        raise Refused(
            429, "Not signed in", f"Too many sign-ins started; try again in {wait} seconds.", None
        )
    target = safe_next(request.query_params.get("next"))
    redirect_uri = _callback(request, client)
    try:
        begun = await client.begin(redirect_uri)
    except SignOnRefused as refused:
        raise Refused(502, "Single sign-on is unavailable", refused.message, None) from None
    await _keep(services.engine, begun, redirect_uri, target)
    response = RedirectResponse(begun.url, status_code=303)
    response.set_cookie(
        STATE_COOKIE,
        begun.state,
        max_age=int(PENDING.total_seconds()),
        path=PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="lax",
    )
    return response


async def callback(request: Request, services: ServicesDep) -> Response:
    """Back from the provider: verify everything, then open a session for the person."""
    client = _client(services)
    if (wait := await services.sign_ins.wait(request)) is not None:
        raise Refused(429, "Not signed in", too_many(wait), None)
    try:
        identity, target = await _verified(request, services, client)
        principal = _principal(services, client, identity)
    except SignOnRefused as refused:
        failure = Failure(Method.SSO, refused.reason, identity=refused.identity)
        await services.sign_ins.failed(request, failure)
        raise Refused(_status(refused.reason), "Not signed in", refused.message, None) from None
    await services.sign_ins.succeeded(request, principal, Method.SSO)
    response = render(
        "moving_on.html",
        viewer=None,
        title="Signing you in",
        heading="Signed in",
        link="Continue to the console",
        target=target,
    )
    await start_session(request, services, response, principal, id_token=identity.id_token)
    response.delete_cookie(STATE_COOKIE, path=PATH, secure=request.url.scheme == "https")
    return response


def _client(services: Services) -> OpenIdClient:
    if services.oidc is None:
        raise Refused(404, "No single sign-on", "Single sign-on is not set up here.", None)
    return services.oidc


def signed_out_uri(request: Request, client: OpenIdClient) -> str:
    """The post_logout_redirect_uri: the sign-in page saying "You are signed out", absolute,
    beside the callback (so a configured redirect_uri gives it the proxy's host and scheme)."""
    login = _callback(request, client).removesuffix("/sso/callback")
    return f"{login}?{urlencode({'signed_out': SIGNED_OUT})}"


def _callback(request: Request, client: OpenIdClient) -> str:
    return client.config.redirect_uri or f"{str(request.base_url).rstrip('/')}{PATH}/callback"


async def _verified(
    request: Request, services: Services, client: OpenIdClient
) -> tuple[Identity, str]:
    """The identity the provider vouches for, and where the person was going."""
    params = request.query_params
    state, bound = params.get("state"), request.cookies.get(STATE_COOKIE)
    if not state or not bound or not secrets.compare_digest(state.encode(), bound.encode()):
        raise SignOnRefused(
            "state_mismatch",
            "This sign-in did not start in this browser, or it has already finished. "
            "Please sign in again.",
        )
    pending = await _take(services.engine, state)
    if pending is None:
        raise SignOnRefused("state_expired", "This sign-in took too long. Please sign in again.")
    if (error := params.get("error")) is not None:
        said = error if _ERROR_CODE.match(error) else "unreadable"
        raise SignOnRefused(
            f"provider_{said}", f"The identity provider did not sign you in ({said})."
        )
    if params.get("iss") not in (None, client.config.issuer):
        raise SignOnRefused("issuer_mismatch", "The answer came from another identity provider.")
    if not (code := params.get("code")):
        raise SignOnRefused("no_code", "The identity provider sent no sign-in code.")
    identity = await client.finish(
        code=code,
        nonce=pending.nonce,
        code_verifier=pending.code_verifier,
        redirect_uri=pending.redirect_uri,
    )
    return identity, pending.next


def _principal(services: Services, client: OpenIdClient, identity: Identity) -> Principal:
    name = client.principal_for(identity)
    principal = services.authenticator.principal(name)
    if principal is None:  # the config check makes this a principal removed since start-up
        raise SignOnRefused("unknown_identity", f"{identity.value} is not a console user.")
    if principal.kind is not PrincipalKind.HUMAN:  # refused by the config check, too
        raise SignOnRefused(
            "not_a_person",
            not_a_person(principal, whose="Your account maps to"),
            identity=identity.value,
        )
    return principal


def _status(reason: str) -> int:
    if reason in ("unknown_identity", "not_a_person", "email_unverified", "second_factor_missing"):
        return 403
    if reason == "provider_unreachable":
        return 502
    if reason.startswith(("state_", "no_code")):
        return 400
    return 401


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


async def _keep(engine: AsyncEngine, begun: Begun, redirect_uri: str, target: str) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(
            delete(console_sign_ons).where(console_sign_ons.c.expires_at < now)
        )
        await connection.execute(
            console_sign_ons.insert().values(
                state_sha256=_digest(begun.state),
                nonce=begun.nonce,
                code_verifier=begun.code_verifier,
                redirect_uri=redirect_uri,
                next=target,
                expires_at=now + PENDING,
            )
        )


async def _take(engine: AsyncEngine, state: str) -> Pending | None:
    """The pending sign-in `state` names, deleted as it is taken: a state works once."""
    table = console_sign_ons.c
    taken = (
        delete(console_sign_ons)
        .where(table.state_sha256 == _digest(state))
        .where(table.expires_at > datetime.now(UTC))
        .returning(table.nonce, table.code_verifier, table.redirect_uri, table.next)
    )
    async with engine.begin() as connection:
        row = (await connection.execute(taken)).first()
    if row is None:
        return None
    return Pending(row.nonce, row.code_verifier, row.redirect_uri, row.next)
