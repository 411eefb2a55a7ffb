"""An OpenID Connect relying party for the console's single sign-on, on Authlib.

    begin    the provider's metadata (discovery, once; its `issuer` must be the configured
             one) -> an authorization URL for the code flow with a fresh state, nonce and
             PKCE verifier (S256), which the caller keeps until the browser comes back
    finish   the code -> the token endpoint (client authentication, the verifier) -> the ID
             token, checked by Authlib against the provider's JWKS: signature (a key id not
             held fetches the keys again), `iss`, `aud` = our client id, `azp`, `exp`,
             `iat`, the `nonce` sent -> the configured claim (by default a verified e-mail)
    map      that claim's value -> a configured principal (config: humans only)

Every refusal is a `SignOnRefused` with a stable reason code for the audit trail and a
sentence for the person; neither ever holds a code, a token or the client secret.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx2
from authlib.integrations.starlette_client import OAuth, OAuthError, StarletteOAuth2App
from joserfc.errors import ClaimError, JoseError

from gateway.config import OidcConfig

log = logging.getLogger("gatehouse.oidc")


class _NoVerifier(logging.Filter):
    """Authlib logs the PKCE code verifier at DEBUG: that line never leaves the process."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Using code_verifier")


class SignOnRefused(Exception):
    """A sign-in the provider's answer does not support; `reason` is for the audit trail."""

    def __init__(self, reason: str, message: str, *, identity: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.identity = reason, message, identity


@dataclass(frozen=True, slots=True)
class Begun:
    """A sign-in sent to the provider: what must come back, and what proves it."""

    url: str  # where the browser goes
    state: str
    nonce: str
    code_verifier: str


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the provider says signed in."""

    issuer: str
    subject: str
    value: str  # the configured claim's value, e.g. the e-mail address


class OpenIdClient:
    """The console's client at one OpenID provider."""

    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        authlib_log = logging.getLogger("authlib.integrations.base_client.sync_app")
        if not any(isinstance(f, _NoVerifier) for f in authlib_log.filters):
            authlib_log.addFilter(_NoVerifier())
        secret = config.client_secret.get_secret_value() if config.client_secret else None
        self._app: StarletteOAuth2App = OAuth().register(
            "gatehouse",
            client_id=config.client_id,
            client_secret=secret,
            server_metadata_url=f"{config.issuer.rstrip('/')}/.well-known/openid-configuration",
            client_kwargs={
                "scope": " ".join(config.scopes),
                "code_challenge_method": "S256",
                "token_endpoint_auth_method": "client_secret_basic" if secret else "none",
                "timeout": config.timeout,
            },
        )

    async def begin(self, redirect_uri: str) -> Begun:
        """An authorization URL with a fresh state, nonce and PKCE verifier."""
        await self._metadata()
        made: dict[str, Any] = await self._app.create_authorization_url(redirect_uri)
        return Begun(made["url"], made["state"], made["nonce"], made["code_verifier"])

    async def finish(
        self, *, code: str, nonce: str, code_verifier: str, redirect_uri: str
    ) -> Identity:
        """The identity in the ID token the code is exchanged for; SignOnRefused otherwise."""
        await self._metadata()
        try:
            token = await self._app.fetch_access_token(
                redirect_uri=redirect_uri, code=code, code_verifier=code_verifier
            )
        except OAuthError as refused:  # invalid_grant: a used, expired or foreign code
            raise SignOnRefused(
                "code_refused",
                f"The identity provider refused the sign-in code ({refused.error}). "
                "Please sign in again.",
            ) from None
        except (httpx2.HTTPError, ValueError) as exc:
            log.warning("oidc: token endpoint of %s failed: %s", self.config.issuer, exc)
            raise _unreachable() from None
        if "id_token" not in token:
            raise SignOnRefused("no_id_token", "The identity provider sent no ID token.")
        return self._identity(await self._claims(token, nonce))

    async def _metadata(self) -> dict[str, Any]:
        try:
            metadata: dict[str, Any] = await self._app.load_server_metadata()
        except (httpx2.HTTPError, ValueError) as exc:
            log.warning("oidc: discovery at %s failed: %s", self.config.issuer, exc)
            raise _unreachable() from None
        if metadata.get("issuer") != self.config.issuer:
            # OpenID Connect Discovery 1.0, section 4.3: a provider answering for another
            # issuer is not the one configured (a mix-up, or the wrong URL).
            self._app.server_metadata.pop("_loaded_at", None)
            raise SignOnRefused("issuer_mismatch", "The identity provider is misconfigured.")
        # Only the asymmetric algorithms configured, whatever the provider offers.
        offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        metadata["id_token_signing_alg_values_supported"] = [
            alg for alg in offered if alg in self.config.algorithms
        ] or self.config.algorithms
        return metadata

    async def _claims(self, token: dict[str, Any], nonce: str) -> dict[str, Any]:
        options = {
            "iss": {"essential": True, "value": self.config.issuer},
            "aud": {"essential": True, "value": self.config.client_id},
            "sub": {"essential": True},
        }
        try:
            claims: dict[str, Any] = await self._app.parse_id_token(
                token, nonce=nonce, claims_options=options, leeway=int(self.config.leeway)
            )
        except JoseError as bad:  # signature, unknown key, iss, aud, exp, nonce, azp ...
            reason = f"id_token_{bad.error}"
            if isinstance(bad, ClaimError):
                reason = f"{reason}_{bad.claim}"  # which claim: the audit trail names it
            log.warning("oidc: ID token from %s refused: %s", self.config.issuer, reason)
            raise SignOnRefused(
                reason,
                "The identity provider's answer could not be verified, so you were not "
                "signed in. Please try again; if it keeps happening, tell your administrator.",
            ) from None
        except (httpx2.HTTPError, ValueError) as exc:
            log.warning("oidc: keys of %s not fetched: %s", self.config.issuer, exc)
            raise _unreachable() from None
        return claims

    def _identity(self, claims: dict[str, Any]) -> Identity:
        value = claims.get(self.config.claim)
        if not isinstance(value, str) or not value:
            raise SignOnRefused(
                "claim_missing",
                f"The identity provider did not say your {self.config.claim}.",
            )
        unverified = self.config.claim == "email" and claims.get("email_verified") is not True
        if unverified and self.config.require_verified_email:
            raise SignOnRefused(
                "email_unverified",
                f"The identity provider has not verified the address {value}.",
                identity=value,
            )
        return Identity(str(claims["iss"]), str(claims["sub"]), value)

    def principal_for(self, identity: Identity) -> str:
        """The configured principal `identity` signs in as; SignOnRefused when none."""
        principal = self.config.principals.get(identity.value)
        if principal is None:
            raise SignOnRefused(
                "unknown_identity",
                f"{identity.value} is not a Gatehouse console user. Ask an administrator to "
                "add you.",
                identity=identity.value,
            )
        return principal


def _unreachable() -> SignOnRefused:
    return SignOnRefused(
        "provider_unreachable",
        "The identity provider could not be reached. Please try again in a moment, or sign "
        "in with your API key.",
    )
