"""Who is calling: a principal, authenticated by API key (stored hashed) or signed JWT."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import jwt

from gateway.config import AuthConfig, PrincipalConfig, PrincipalKind
from gateway.errors import Unauthenticated
from gateway.oauth import SCOPES, OAuth


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    id: str
    kind: PrincipalKind
    display_name: str
    roles: tuple[str, ...] = ()
    on_behalf_of: str | None = None
    attributes: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    credential: str = "api_key"
    # An OAuth token's scopes, which narrow what policy allows (oauth.SCOPES); None: no narrowing.
    scopes: frozenset[str] | None = None

    def permits(self, act: str) -> bool:
        """Whether this credential's scopes leave room for the act (the policy still decides)."""
        return self.scopes is None or SCOPES.get(act, "") in self.scopes


def hash_key(api_key: str) -> str:
    """The SHA-256 digest stored in configuration instead of the key itself."""
    return hashlib.sha256(api_key.encode()).hexdigest()


class Authenticator:
    """Turns an `Authorization` header into a Principal, or refuses it."""

    def __init__(
        self,
        principals: Mapping[str, PrincipalConfig],
        *,
        auth: AuthConfig,
        jwt_secret: str | None,
    ) -> None:
        self._principals = {name: _principal(name, cfg) for name, cfg in principals.items()}
        self._by_key_hash = {
            digest: name for name, cfg in principals.items() for digest in cfg.api_key_sha256
        }
        self._auth = auth
        self._jwt_secret = jwt_secret
        self.oauth = OAuth(auth.oauth, self._principals) if auth.oauth else None

    def principal(self, principal_id: str) -> Principal | None:
        """A configured principal by id."""
        return self._principals.get(principal_id)

    def all(self) -> list[Principal]:
        """Every configured principal."""
        return list(self._principals.values())

    async def verify(self, authorization: str | None) -> Principal:
        """As `authenticate`, first fetching the authorization server keys a token needs."""
        token = _bearer(authorization)
        if self.oauth is not None and token.count(".") == 2:
            await self.oauth.prepare(token)
        return self.authenticate(authorization)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal named by a `Bearer` API key or JWT; Unauthenticated otherwise."""
        token = _bearer(authorization)
        if not token:
            raise Unauthenticated("missing credential: send 'Authorization: Bearer <api key>'")
        name = self._by_key_hash.get(hash_key(token))
        if name is not None:
            return self._principals[name]
        if token.count(".") == 2:
            # With both configured, a token from an OAuth server goes there, the rest to HS256.
            if self.oauth is not None and (not self._jwt_secret or self.oauth.issued(token)):
                return self.oauth.principal(token)
            if self._jwt_secret:
                return self._from_jwt(token)
        raise Unauthenticated("invalid credential")

    def challenge(self, authorization: str | None) -> str:
        """The `WWW-Authenticate` value of a 401 for this request."""
        if self.oauth is None:
            return "Bearer"
        return self.oauth.challenge(invalid=bool(_bearer(authorization)))

    def _from_jwt(self, token: str) -> Principal:
        secret = self._jwt_secret
        if secret is None:
            raise Unauthenticated("invalid credential")
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=self._auth.jwt_algorithms,
                audience=self._auth.jwt_audience,
                issuer=self._auth.jwt_issuer,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from exc
        principal = self._principals.get(str(claims["sub"]))
        if principal is None:
            raise Unauthenticated("invalid token: unknown subject")
        return Principal(
            id=principal.id,
            kind=principal.kind,
            display_name=principal.display_name,
            roles=principal.roles,
            on_behalf_of=principal.on_behalf_of,
            attributes=principal.attributes,
            credential="jwt",
        )


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _principal(name: str, config: PrincipalConfig) -> Principal:
    return Principal(
        id=name,
        kind=config.kind,
        display_name=config.display_name,
        roles=tuple(config.roles),
        on_behalf_of=config.on_behalf_of,
        attributes=dict(config.attributes),
    )
