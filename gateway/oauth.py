"""An OAuth 2.1 resource server, as the MCP authorization specification asks of one.

    advertise  RFC 9728 metadata at /.well-known/oauth-protected-resource[/mcp] names the
               authorization servers; every 401 points at it in `WWW-Authenticate`
    keys       each server's JWKS, found by RFC 8414 discovery (or configured), fetched on
               first use and again when a token names a key not held (at most once per
               `jwks_min_refresh`, so rotated keys work without a restart) or when the keys
               are older than `jwks_max_age`
    verify     the signature by the key the token's `kid` names; `iss` one of the servers,
               `aud` this gateway's resource URI, `exp` not passed
    map        the token's `sub`, or else its `client_id`, to a configured principal, its acts
               narrowed to the token's scopes (principals.SCOPES)

A refused token is logged with the reason and its claimed issuer, subject and key id, never
the token itself.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import jwt
import orjson
from cachetools import LRUCache
from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.routes import build_resource_metadata_url, cors_middleware
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.routing import Route

from gateway.config import OAuthConfig
from gateway.errors import Unauthenticated

if TYPE_CHECKING:
    from gateway.principals import Principal

log = logging.getLogger("gatehouse.oauth")

FetchJson = Callable[[str], Awaitable[Any]]

# What a token's scopes let it do: the scope each policy act needs. Scopes only narrow: the
# principal's policy still decides, and an act not listed here is refused to every token.
SCOPES = {
    "read": "gatehouse:read",
    "inspect": "gatehouse:read",
    "write": "gatehouse:write",
    "approve": "gatehouse:approve",
    "resolve": "gatehouse:approve",
}
_DECODER = jwt.PyJWT()


async def fetch_json(url: str) -> Any:
    """GET a JSON document (metadata, a JWKS)."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()


def metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata is: RFC 8414 (path after the well-known part), then OIDC."""
    parts = urlsplit(issuer)
    origin, path = f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{issuer.rstrip('/')}/.well-known/openid-configuration",
    ]


class KeySet:
    """One authorization server's signing keys, fetched again when a token needs it."""

    def __init__(self, issuer: str, config: OAuthConfig, fetch: FetchJson) -> None:
        self.issuer = issuer
        self._config = config
        self._fetch = fetch
        self._jwks_uri = config.jwks_uris.get(issuer)
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The held key by id (a key set of one serves tokens that name none)."""
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def due(self, kid: str | None) -> bool:
        """Whether a token naming `kid` should fetch the keys first."""
        if self._fetched_at is None:
            return True
        age = time.monotonic() - self._fetched_at
        missing = self.key(kid) is None and age >= self._config.jwks_min_refresh
        return missing or age >= self._config.jwks_max_age

    async def refresh(self, kid: str | None) -> None:
        """Fetch the keys (once, however many requests wait); a failure keeps the old ones."""
        async with self._lock:
            if not self.due(kid):
                return
            self._fetched_at = time.monotonic()
            try:
                self._keys = await self._load()
            except (httpx.HTTPError, ValueError, KeyError, jwt.PyJWTError) as exc:
                log.warning("oauth: keys of %s not fetched: %s", self.issuer, exc)

    async def _load(self) -> dict[str | None, jwt.PyJWK]:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover()
        keys = jwt.PyJWKSet.from_dict(await self._fetch(self._jwks_uri)).keys
        return {key.key_id: key for key in keys if key.public_key_use in (None, "sig")}

    async def _discover(self) -> str:
        failure: Exception | None = None
        for url in metadata_urls(self.issuer):
            try:
                metadata = await self._fetch(url)
            except httpx.HTTPError as exc:
                failure = exc
                continue
            if metadata.get("issuer") != self.issuer:  # RFC 8414 section 3.3
                raise ValueError(f"{url} names issuer {metadata.get('issuer')!r}")
            return str(metadata["jwks_uri"])
        raise ValueError(f"no authorization server metadata for {self.issuer}: {failure}")


@dataclass(frozen=True, slots=True)
class _Seen:
    """A token verified before: good until it expires or its key is no longer published."""

    principal: Principal
    expires: float
    key_set: KeySet
    kid: str | None
    key: jwt.PyJWK

    def holds(self) -> bool:
        return time.time() < self.expires and self.key_set.key(self.kid) is self.key


class OAuth:
    """Bearer JWTs from the configured authorization servers -> configured principals."""

    def __init__(
        self,
        config: OAuthConfig,
        principals: Mapping[str, Principal],
        fetch: FetchJson = fetch_json,
    ) -> None:
        self.config = config
        self._principals = {claim: principals[name] for claim, name in config.principals.items()}
        self._key_sets = {s: KeySet(s, config, fetch) for s in config.authorization_servers}
        self._audience = list(dict.fromkeys([config.resource, config.resource.rstrip("/")]))
        self.metadata_url = metadata_url(config)
        # Tokens verified before, so an agent's every call does not check the signature again.
        self._seen: LRUCache[str, _Seen] = LRUCache(maxsize=4096)

    def challenge(self, *, invalid: bool) -> str:
        """The `WWW-Authenticate` value of a 401: where to learn how to get a token."""
        error = ', error="invalid_token"' if invalid else ""
        return f'Bearer resource_metadata="{self.metadata_url}"{error}'

    async def prepare(self, token: str) -> None:
        """Fetch the keys this token needs when they are not held (or are old)."""
        if (seen := self._seen.get(token)) is not None and seen.holds():
            return
        try:
            header, payload = _unverified(token)
        except jwt.PyJWTError:
            return
        key_set = self._key_sets.get(str(payload.get("iss")))
        kid = header.get("kid")
        if key_set is not None and key_set.due(kid):
            await key_set.refresh(kid)

    def issued(self, token: str) -> bool:
        """Whether the token claims to come from one of the authorization servers."""
        try:
            return str(_unverified(token)[1].get("iss")) in self._key_sets
        except jwt.PyJWTError:
            return False

    def principal(self, token: str) -> Principal:
        """The principal a valid token acts as, narrowed to its scopes; Unauthenticated if not."""
        seen = self._seen.get(token)
        if seen is not None and seen.holds():
            return seen.principal
        try:
            key_set, kid, key = self._key_for(token)
            claims: dict[str, Any] = _DECODER.decode(
                token,
                key,
                algorithms=self.config.algorithms,
                audience=self._audience,
                issuer=key_set.issuer,
                leeway=self.config.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise self._refused(token, str(exc)) from exc
        principal = self._mapped(claims)
        if principal is None:
            raise self._refused(token, "no principal is mapped to its subject or client id")
        narrowed = dataclasses.replace(principal, credential="oauth", scopes=_scopes(claims))
        expires = float(claims["exp"]) + self.config.leeway
        self._seen[token] = _Seen(narrowed, expires, key_set, kid, key)
        return narrowed

    def _key_for(self, token: str) -> tuple[KeySet, str | None, jwt.PyJWK]:
        header, payload = _unverified(token)
        key_set = self._key_sets.get(str(payload.get("iss")))
        if key_set is None:
            raise jwt.InvalidIssuerError("its issuer is not a configured authorization server")
        kid = header.get("kid")
        key = key_set.key(kid)
        if key is None:
            raise jwt.InvalidKeyError("signed by a key its authorization server does not publish")
        return key_set, kid, key

    def _mapped(self, claims: Mapping[str, Any]) -> Principal | None:
        principal = self._principals.get(str(claims.get("sub") or ""))
        if principal is None and claims.get("client_id"):
            principal = self._principals.get(str(claims["client_id"]))
        return principal

    def _refused(self, token: str, reason: str) -> Unauthenticated:
        try:
            header, payload = _unverified(token)
        except jwt.PyJWTError:
            header, payload = {}, {}
        log.warning(
            "oauth: token refused: %s (iss=%s sub=%s client_id=%s kid=%s)",
            reason,
            payload.get("iss"),
            payload.get("sub"),
            payload.get("client_id"),
            header.get("kid"),
        )
        return Unauthenticated(f"invalid token: {reason}")


def metadata_url(config: OAuthConfig) -> str:
    """Where the resource's RFC 9728 metadata is: the well-known path, then the resource's."""
    return str(build_resource_metadata_url(AnyHttpUrl(config.resource)))


def metadata_routes(config: OAuthConfig) -> list[Route]:
    """RFC 9728 metadata, at the path-suffixed address 401s name and at the root one."""
    metadata = ProtectedResourceMetadata(
        resource=AnyHttpUrl(config.resource),
        authorization_servers=[AnyHttpUrl(s) for s in config.authorization_servers],
        scopes_supported=sorted(set(SCOPES.values())),
        resource_name=config.resource_name,
    )
    handler = cors_middleware(ProtectedResourceMetadataHandler(metadata).handle, ["GET", "OPTIONS"])
    paths = [urlsplit(metadata_url(config)).path, "/.well-known/oauth-protected-resource"]
    return [
        Route(path, endpoint=handler, methods=["GET", "OPTIONS"]) for path in dict.fromkeys(paths)
    ]


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    # Only to choose the issuer and key; PyJWT then checks everything. Parsed here because
    # PyJWT's own parse costs as much as the signature check, and the check parses again.
    try:
        header, payload = (orjson.loads(_b64url(part)) for part in token.split(".")[:2])
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise jwt.DecodeError("not a JWT") from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise jwt.DecodeError("not a JWT")
    return header, payload


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    # RFC 9068's `scope` is one space-separated string; some servers send `scp`, a list.
    scope = claims.get("scope", claims.get("scp", ""))
    return frozenset(scope.split() if isinstance(scope, str) else map(str, scope))
