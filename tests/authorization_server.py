"""An OAuth 2.1 authorization server for the tests, speaking the protocol MCP clients use.

    GET  /.well-known/oauth-authorization-server/realms/gatehouse   RFC 8414 metadata
    GET  /realms/gatehouse/jwks                                     the public keys (RFC 7517)
    POST /realms/gatehouse/token      client_credentials; client_secret_basic or _post; the
                                      RFC 8707 `resource` becomes the token's `aud` (RFC 9068)

Keys and tokens are joserfc's. Each registered client may carry a fault, so a real client
running the real flow receives the bad token: an expired one, one for another audience, one
signed by a key this server never publishes.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from joserfc import jwt
from joserfc.jwk import RSAKey

REALM = "/realms/gatehouse"
Fault = Literal["expired", "wrong_audience", "unknown_key"] | None


def new_key() -> RSAKey:
    """A fresh RS256 signing key with its thumbprint as `kid`."""
    return RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, auto_kid=True)


@dataclass
class Registered:
    """A client the server knows: its secret, the scopes it may get, and any fault."""

    secret: str
    scopes: frozenset[str]
    fault: Fault = None


@dataclass
class AuthorizationServer:
    """Signs access tokens for registered clients; `rotate` replaces the signing key."""

    clients: dict[str, Registered]
    base_url: str = ""  # set once served
    keys: list[RSAKey] = field(default_factory=lambda: [new_key()])
    issued: list[str] = field(default_factory=list)  # every token handed out
    jwks_requests: int = 0

    @property
    def issuer(self) -> str:
        """The issuer identifier: a path under the server, as Keycloak's realms are."""
        return self.base_url + REALM

    def rotate(self, *, keep_old: bool = False) -> None:
        """Sign with a new key from now on (publishing the old one too, if `keep_old`)."""
        self.keys = [new_key(), *self.keys[:1]] if keep_old else [new_key()]

    def sign(self, claims: dict[str, Any], key: RSAKey | None = None) -> str:
        """A JWT over `claims`, signed by `key` or the current signing key."""
        key = key or self.keys[0]
        header = {"alg": "RS256", "typ": "at+jwt", "kid": key.kid}
        return jwt.encode(header, claims, key)

    def app(self) -> FastAPI:
        """The server's HTTP endpoints."""
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        app.add_api_route(f"/.well-known/oauth-authorization-server{REALM}", self._metadata)
        app.add_api_route(f"{REALM}/jwks", self._jwks)
        app.add_api_route(f"{REALM}/token", self._token, methods=["POST"])
        app.add_api_route(f"{REALM}/authorize", self._authorize)
        return app

    async def _metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["code"],
            "scopes_supported": ["gatehouse:read", "gatehouse:write", "gatehouse:approve"],
        }

    async def _jwks(self) -> dict[str, Any]:
        self.jwks_requests += 1
        return {"keys": [key.as_dict(private=False) for key in self.keys]}

    async def _authorize(self) -> JSONResponse:
        return oauth_error("unsupported_response_type", "only client_credentials here", 400)

    async def _token(self, request: Request) -> JSONResponse:
        form = {k: str(v) for k, v in (await request.form()).items()}
        client_id, secret = client_credentials(request, form)
        client = self.clients.get(client_id)
        if client is None or client.secret != secret:
            return oauth_error("invalid_client", "unknown client or wrong secret", 401)
        if form.get("grant_type") != "client_credentials":
            return oauth_error("unsupported_grant_type", "client_credentials only", 400)
        # RFC 6749 section 3.3: grant what the client may have of what it asked for.
        asked = (frozenset(form.get("scope", "").split()) or client.scopes) & client.scopes
        if not asked:
            return oauth_error("invalid_scope", f"{client_id} may have none of those scopes", 400)
        token = self._issue(client_id, client, asked, form.get("resource"))
        scope = " ".join(sorted(asked))
        body = {"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": scope}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    def _issue(
        self, client_id: str, client: Registered, scopes: frozenset[str], resource: str | None
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": client_id,
            "client_id": client_id,
            "aud": "https://elsewhere.example/mcp"
            if client.fault == "wrong_audience"
            else resource,
            "iat": now,
            "exp": now - 120 if client.fault == "expired" else now + 300,
            "jti": uuid.uuid4().hex,
            "scope": " ".join(sorted(scopes)),
        }
        token = self.sign(claims, new_key() if client.fault == "unknown_key" else None)
        self.issued.append(token)
        return token


def client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    """The client id and secret, from HTTP Basic or the form (RFC 6749 section 2.3.1)."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        return unquote(client_id), unquote(secret)
    return form.get("client_id", ""), form.get("client_secret", "")


def oauth_error(error: str, description: str, status: int) -> JSONResponse:
    """An OAuth error response (RFC 6749 section 5.2)."""
    return JSONResponse({"error": error, "error_description": description}, status_code=status)
