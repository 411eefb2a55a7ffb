"""An OpenID Connect relying party for the console's single sign-on, on Authlib.

    begin    the provider's metadata (discovery, once; its `issuer` must be the configured
             one) -> an authorization URL for the code flow with a fresh state, nonce and
             PKCE verifier (S256), which the caller keeps until the browser comes back
    finish   the code -> the token endpoint (client authentication, the verifier) -> the ID
             token, checked by Authlib against the provider's JWKS: signature (a key id not
             held fetches the keys again), `iss`, `aud` = our client id, `azp`, `exp`,
             `iat`, the `nonce` sent -> the configured claim (by default a verified e-mail)
    map      that claim's value -> a configured principal (config: humans only)
    end      the metadata read afresh -> the provider's `end_session_endpoint`, if it has
             one, with id_token_hint (the ID token kept since sign-in), client_id and
             post_logout_redirect_uri (OpenID Connect RP-Initiated Logout 1.0): where the
             browser goes to end the person's session there

Every refusal is a `SignOnRefused` with a stable reason code for the audit trail and a
sentence for the person; neither ever holds a code, a token or the client secret. The ID
token is kept only to be handed back to the provider: `Identity` leaves it out of its repr.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

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
    id_token: str = field(repr=False)  # as issued: the provider asks for it back at sign-out


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
        return self._identity(await self._claims(token, nonce), str(token["id_token"]))

    async def end_session_url(self, *, id_token: str, post_logout_redirect_uri: str) -> str | None:
        """Where the browser ends the person's session at the provider; None when the
        provider has no end_session_endpoint, SignOnRefused when it cannot be asked."""
        endpoint = (await self._fresh_metadata()).get("end_session_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            return None
        params = {
            "id_token_hint": id_token,
            "client_id": self.config.client_id,
            "post_logout_redirect_uri": post_logout_redirect_uri,
        }
        return _with_query(endpoint, params)

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

    async def _fresh_metadata(self) -> dict[str, Any]:
        # Read again at each sign-out: a provider that answers now can end its session, and
        # it may have added or dropped the endpoint since (its keys are fetched again at the
        # next sign-in). A new dict, not a cleared one: a sign-in in flight keeps its own.
        self._app.server_metadata = {}
        return await self._metadata()

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

    def _identity(self, claims: dict[str, Any], id_token: str) -> Identity:
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
        if self.config.require_amr and not _second_factor(claims, self.config.require_amr):
            raise SignOnRefused(
                "second_factor_missing",
                "The identity provider says you signed in without a second factor, which this "
                "console requires. Sign in there again with one; if it offers none, tell your "
                "administrator.",
                identity=value,
            )
        return Identity(str(claims["iss"]), str(claims["sub"]), value, id_token)

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


def _with_query(url: str, params: dict[str, str]) -> str:
    # An endpoint may have a query of its own, which is kept (RFC 6749, section 3.1).
    parts = urlsplit(url)
    query = "&".join(part for part in (parts.query, urlencode(params)) if part)
    return urlunsplit(parts._replace(query=query))


def _second_factor(claims: dict[str, Any], required: list[str]) -> bool:
    """Whether the ID token's `amr` names one of the `required` methods."""
    methods = claims.get("amr")
    return isinstance(methods, list) and any(method in required for method in methods)
