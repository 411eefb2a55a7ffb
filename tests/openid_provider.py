"""An OpenID provider for the tests, speaking the authorization code flow a browser runs.

    GET  /realms/acme/.well-known/openid-configuration   OpenID Connect Discovery 1.0
    GET  /realms/acme/jwks                               the public keys (RFC 7517)
    GET  /realms/acme/authorize   response_type=code, a registered redirect_uri exactly,
                                  scope with openid, PKCE S256 required; a browser whose
                                  cookie names a live provider session is signed in
                                  silently as that session's user; any other signs in the
                                  provider's `user` at once (the password typed, the consent
                                  given), opening a session; redirects back with code,
                                  state and iss (RFC 9207); with `consent`, first a page
                                  whose Continue button POSTs the request back here, so the
                                  way back starts on the provider's site, as it does after
                                  a real login form
    POST /realms/acme/token       authorization_code; client_secret_basic or _post; the code
                                  once, for its client and redirect_uri, within a minute;
                                  the verifier's S256 must be the challenge; an ID token
                                  (iss, sub, aud, exp, iat, auth_time, nonce, at_hash,
                                  email, email_verified, sid) beside an opaque access token
    GET  /realms/acme/logout      RP-Initiated Logout 1.0 (POST too): id_token_hint signed
                                  by this provider, its iss ours and its aud the client (an
                                  expired one still names the session), client_id the
                                  hint's, post_logout_redirect_uri registered exactly ->
                                  the hint's session and the browser's ended, the cookie
                                  cleared -> back there with `state`; anything else: 400,
                                  and the sessions stay. With `end_session` off, discovery
                                  names no end_session_endpoint and this answers 404

Keys and tokens are joserfc's, as tests/authorization_server.py's are. A `fault` makes the
token endpoint hand the real client a bad ID token: expired, for another audience or issuer,
with another nonce, signed by a key this provider never publishes, or forged (another key's
signature under the published key's id).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet, RSAKey

from tests.authorization_server import client_credentials, new_key, oauth_error

REALM = "/realms/acme"
CODE_LIFETIME = 60.0
SESSION_COOKIE = "acme_session"  # the provider's own session, on the provider's host
Fault = (
    Literal["expired", "wrong_audience", "wrong_issuer", "wrong_nonce", "unknown_key", "forged"]
    | None
)


@dataclass(frozen=True)
class User:
    """Who is signed in at the provider."""

    sub: str
    email: str
    email_verified: bool = True
    amr: tuple[str, ...] = ("pwd",)  # how they signed in (RFC 8176): a password alone


@dataclass
class Grant:
    """An authorization code and what it was issued for."""

    client_id: str
    redirect_uri: str
    nonce: str | None
    challenge: str
    user: User
    issued: float
    session: str  # the provider session it was issued in (the ID token's `sid`)
    silent: bool  # issued to a browser already signed in at the provider, asking nothing
    used: bool = False


@dataclass
class OpenIDProvider:
    """One confidential client; `user` signs in, `fault` spoils the ID token."""

    client_id: str
    client_secret: str
    user: User | None  # None: the person declines at the provider (access_denied)
    redirect_uris: list[str] = field(default_factory=list)
    post_logout_redirect_uris: list[str] = field(default_factory=list)
    fault: Fault = None
    consent: bool = False  # show a page with a Continue button, as real providers do
    end_session: bool = True  # False: no end_session_endpoint (RP-Initiated Logout)
    base_url: str = ""  # set once served
    keys: list[RSAKey] = field(default_factory=lambda: [new_key()])
    grants: dict[str, Grant] = field(default_factory=dict)
    issued: list[str] = field(default_factory=list)  # every ID and access token handed out
    token_requests: list[dict[str, str]] = field(default_factory=list)
    sessions: dict[str, User] = field(default_factory=dict)  # live: sid -> who signed in
    logouts: list[dict[str, str]] = field(default_factory=list)  # every end-session request

    @property
    def issuer(self) -> str:
        """The issuer identifier: a realm under the server, as Keycloak's are."""
        return self.base_url + REALM

    def app(self) -> FastAPI:
        """The provider's HTTP endpoints."""
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        app.add_api_route(f"{REALM}/.well-known/openid-configuration", self._discovery)
        app.add_api_route(f"{REALM}/jwks", self._jwks)
        app.add_api_route(f"{REALM}/authorize", self._authorize)
        app.add_api_route(f"{REALM}/authorize", self._consented, methods=["POST"])
        app.add_api_route(f"{REALM}/token", self._token, methods=["POST"])
        app.add_api_route(f"{REALM}/logout", self._end_session, methods=["GET", "POST"])
        return app

    async def _discovery(self) -> dict[str, Any]:
        ends = {"end_session_endpoint": f"{self.issuer}/logout"} if self.end_session else {}
        return ends | {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code"],
            "authorization_response_iss_parameter_supported": True,
        }

    async def _jwks(self) -> dict[str, Any]:
        return {"keys": [key.as_dict(private=False) for key in self.keys]}

    async def _authorize(self, request: Request) -> Response:
        asked = dict(request.query_params)
        if self.consent and self._misdirected(asked) is None:
            return _consent_page(self.issuer, asked, self.user)
        return self._decide(asked, request.cookies.get(SESSION_COOKIE))

    async def _consented(self, request: Request) -> Response:
        # The person pressed Continue on the provider's page: the way back starts there.
        asked = {k: str(v) for k, v in (await request.form()).items()}
        return self._decide(asked, request.cookies.get(SESSION_COOKIE))

    def _misdirected(self, asked: Mapping[str, str]) -> Response | None:
        if asked.get("client_id") != self.client_id or asked.get("redirect_uri") not in set(
            self.redirect_uris
        ):
            # Never redirect to an unregistered URI: say so here (RFC 6749 section 4.1.2.1).
            return PlainTextResponse("unknown client or redirect_uri", status_code=400)
        return None

    def _decide(self, asked: Mapping[str, str], sid: str | None) -> Response:
        if (bad := self._misdirected(asked)) is not None:
            return bad
        redirect_uri = asked["redirect_uri"]
        back = {"state": asked.get("state", ""), "iss": self.issuer}
        live = self.sessions.get(sid or "")  # the browser's session here, if still open
        user = live or self.user
        problem = self._refusal(asked.get("response_type"), asked.get("scope"), asked, user)
        if problem is not None:
            return _back(redirect_uri, {**back, "error": problem})
        assert user is not None  # _refusal says access_denied without one
        if live is None or sid is None:  # signed in now: a new session
            sid = secrets.token_urlsafe(16)
            self.sessions[sid] = user
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(
            self.client_id,
            redirect_uri,
            asked.get("nonce"),
            asked.get("code_challenge", ""),
            user,
            time.monotonic(),
            sid,
            silent=live is not None,
        )
        response = _back(redirect_uri, {**back, "code": code})
        response.set_cookie(SESSION_COOKIE, sid, path=REALM, httponly=True, samesite="lax")
        return response

    def _refusal(
        self,
        response_type: str | None,
        scope: str | None,
        asked: Mapping[str, str],
        user: User | None,
    ) -> str | None:
        if response_type != "code":
            return "unsupported_response_type"
        if "openid" not in (scope or "").split():
            return "invalid_scope"
        if asked.get("code_challenge_method") != "S256" or not asked.get("code_challenge"):
            return "invalid_request"  # PKCE with S256 is required here
        return "access_denied" if user is None else None

    async def _token(self, request: Request) -> JSONResponse:
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.token_requests.append(form)
        client_id, secret = client_credentials(request, form)
        if client_id != self.client_id or secret != self.client_secret:
            return oauth_error("invalid_client", "unknown client or wrong secret", 401)
        if form.get("grant_type") != "authorization_code":
            return oauth_error("unsupported_grant_type", "authorization_code only", 400)
        grant = self.grants.get(form.get("code", ""))
        why = self._bad_grant(grant, form)
        if grant is None or why is not None:
            return oauth_error("invalid_grant", why or "unknown code", 400)
        grant.used = True
        access_token = secrets.token_urlsafe(32)
        id_token = self._id_token(grant, access_token)
        self.issued += [id_token, access_token]
        body = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
            "scope": "openid email",
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    def _bad_grant(self, grant: Grant | None, form: dict[str, str]) -> str | None:
        if grant is None:
            return "unknown code"
        if grant.used:
            return "code already used"
        if time.monotonic() - grant.issued > CODE_LIFETIME:
            return "code expired"
        if form.get("redirect_uri") != grant.redirect_uri:
            return "redirect_uri differs from the authorization request's"
        if s256(form.get("code_verifier", "")) != grant.challenge:
            return "code_verifier does not match the code_challenge"
        return None

    def _id_token(self, grant: Grant, access_token: str) -> str:
        now = int(time.time())
        fault = self.fault
        claims = {
            "iss": "https://elsewhere.example" if fault == "wrong_issuer" else self.issuer,
            "sub": grant.user.sub,
            "aud": "someone-else" if fault == "wrong_audience" else grant.client_id,
            "azp": grant.client_id,  # names the client, so only the audience is wrong
            "iat": now - 600 if fault == "expired" else now,
            "exp": now - 300 if fault == "expired" else now + 300,
            "auth_time": now,
            "nonce": "not-the-nonce-sent" if fault == "wrong_nonce" else grant.nonce,
            "at_hash": _half_hash(access_token),
            "email": grant.user.email,
            "email_verified": grant.user.email_verified,
            "amr": list(grant.user.amr),
            "sid": grant.session,
        }
        key = new_key() if fault in ("unknown_key", "forged") else self.keys[0]
        # forged: signed by another key, naming the published key's id
        kid = self.keys[0].kid if fault == "forged" else key.kid
        return jwt.encode({"alg": "RS256", "typ": "JWT", "kid": kid}, claims, key)

    async def _end_session(self, request: Request) -> Response:
        if not self.end_session:
            raise HTTPException(404)
        asked = dict(request.query_params)
        if request.method == "POST":
            asked = {k: str(v) for k, v in (await request.form()).items()}
        self.logouts.append(asked)
        hinted = self._hinted(asked.get("id_token_hint", ""))
        back = asked.get("post_logout_redirect_uri")
        if hinted is None or asked.get("client_id") != self.client_id:
            return PlainTextResponse("id_token_hint or client_id refused", status_code=400)
        if back is None or back not in self.post_logout_redirect_uris:
            # Never back to an unregistered address (RP-Initiated Logout 1.0, section 3).
            return PlainTextResponse("unregistered post_logout_redirect_uri", status_code=400)
        self.sessions.pop(str(hinted.get("sid", "")), None)  # the hint's, and the browser's
        self.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        state = {"state": asked["state"]} if "state" in asked else {}
        response = _back(back, state, status=302)
        response.delete_cookie(SESSION_COOKIE, path=REALM, httponly=True, samesite="lax")
        return response

    def _hinted(self, id_token: str) -> dict[str, Any] | None:
        """The claims of an ID token this provider issued to the client; None otherwise.
        Its expiry is not checked: an expired ID token still says whose session to end."""
        try:
            keys: list[Key] = [*self.keys]
            token = jwt.decode(id_token, KeySet(keys), algorithms=["RS256"])
            jwt.BaseClaimsRegistry(
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.client_id},
            ).validate(token.claims)
        except (JoseError, ValueError):
            return None
        return token.claims


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of `verifier` (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _half_hash(access_token: str) -> str:
    # OpenID Connect Core 1.0, section 3.1.3.6: the left half of the token's SHA-256.
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def _back(redirect_uri: str, params: dict[str, str], status: int = 302) -> RedirectResponse:
    # A registered address may carry a query of its own, which is kept.
    parts = urlsplit(redirect_uri)
    query = "&".join(part for part in (parts.query, urlencode(params)) if part)
    return RedirectResponse(urlunsplit(parts._replace(query=query)), status_code=status)


def _consent_page(issuer: str, asked: Mapping[str, str], user: User | None) -> HTMLResponse:
    fields = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in asked.items()
    )
    who = escape(user.email) if user else "nobody"
    return HTMLResponse(
        f"<!doctype html><title>Acme sign-in</title><h1>Acme sign-in</h1>"
        f'<form method="post" action="{escape(issuer)}/authorize">{fields}'
        f"<p>Signed in as {who}.</p><button>Continue</button></form>"
    )
