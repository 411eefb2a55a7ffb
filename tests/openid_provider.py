"""An OpenID provider for the tests, speaking the authorization code flow a browser runs.

    GET  /realms/acme/.well-known/openid-configuration   OpenID Connect Discovery 1.0
    GET  /realms/acme/jwks                               the public keys (RFC 7517)
    GET  /realms/acme/authorize   response_type=code, a registered redirect_uri exactly,
                                  scope with openid, PKCE S256 required; signs in the
                                  provider's `user` at once (the consent is given) and
                                  redirects back with code, state and iss (RFC 9207); with
                                  `consent`, first a page whose Continue button POSTs
                                  the request back here, so the way back starts on the
                                  provider's site, as it does after a real login form
    POST /realms/acme/token       authorization_code; client_secret_basic or _post; the code
                                  once, for its client and redirect_uri, within a minute;
                                  the verifier's S256 must be the challenge; an ID token
                                  (iss, sub, aud, exp, iat, auth_time, nonce, at_hash,
                                  email, email_verified) beside an opaque access token

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
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.authorization_server import client_credentials, new_key, oauth_error

REALM = "/realms/acme"
CODE_LIFETIME = 60.0
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


@dataclass
class Grant:
    """An authorization code and what it was issued for."""

    client_id: str
    redirect_uri: str
    nonce: str | None
    challenge: str
    user: User
    issued: float
    used: bool = False


@dataclass
class OpenIDProvider:
    """One confidential client; `user` signs in, `fault` spoils the ID token."""

    client_id: str
    client_secret: str
    user: User | None  # None: the person declines at the provider (access_denied)
    redirect_uris: list[str] = field(default_factory=list)
    fault: Fault = None
    consent: bool = False  # show a page with a Continue button, as real providers do
    base_url: str = ""  # set once served
    keys: list[RSAKey] = field(default_factory=lambda: [new_key()])
    grants: dict[str, Grant] = field(default_factory=dict)
    issued: list[str] = field(default_factory=list)  # every ID and access token handed out
    token_requests: list[dict[str, str]] = field(default_factory=list)

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
        return app

    async def _discovery(self) -> dict[str, Any]:
        return {
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
        return self._decide(asked)

    async def _consented(self, request: Request) -> Response:
        # The person pressed Continue on the provider's page: the way back starts there.
        return self._decide({k: str(v) for k, v in (await request.form()).items()})

    def _misdirected(self, asked: Mapping[str, str]) -> Response | None:
        if asked.get("client_id") != self.client_id or asked.get("redirect_uri") not in set(
            self.redirect_uris
        ):
            # Never redirect to an unregistered URI: say so here (RFC 6749 section 4.1.2.1).
            return PlainTextResponse("unknown client or redirect_uri", status_code=400)
        return None

    def _decide(self, asked: Mapping[str, str]) -> Response:
        if (bad := self._misdirected(asked)) is not None:
            return bad
        redirect_uri = asked["redirect_uri"]
        back = {"state": asked.get("state", ""), "iss": self.issuer}
        problem = self._refusal(asked.get("response_type"), asked.get("scope"), asked)
        if problem is not None:
            return _back(redirect_uri, {**back, "error": problem})
        code = secrets.token_urlsafe(24)
        assert self.user is not None  # _refusal says access_denied without one
        self.grants[code] = Grant(
            self.client_id,
            redirect_uri,
            asked.get("nonce"),
            asked.get("code_challenge", ""),
            self.user,
            time.monotonic(),
        )
        return _back(redirect_uri, {**back, "code": code})

    def _refusal(
        self, response_type: str | None, scope: str | None, asked: Mapping[str, str]
    ) -> str | None:
        if response_type != "code":
            return "unsupported_response_type"
        if "openid" not in (scope or "").split():
            return "invalid_scope"
        if asked.get("code_challenge_method") != "S256" or not asked.get("code_challenge"):
            return "invalid_request"  # PKCE with S256 is required here
        return "access_denied" if self.user is None else None

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
        }
        key = new_key() if fault in ("unknown_key", "forged") else self.keys[0]
        # forged: signed by another key, naming the published key's id
        kid = self.keys[0].kid if fault == "forged" else key.kid
        return jwt.encode({"alg": "RS256", "typ": "JWT", "kid": kid}, claims, key)


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of `verifier` (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _half_hash(access_token: str) -> str:
    # OpenID Connect Core 1.0, section 3.1.3.6: the left half of the token's SHA-256.
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def _back(redirect_uri: str, params: dict[str, str]) -> RedirectResponse:
    return RedirectResponse(f"{redirect_uri}?{urlencode(params)}", status_code=302)


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
