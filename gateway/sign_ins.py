"""Sign-ins to the console, and sign-outs: each one audited, failures throttled per address.

    signed in     console.signed_in       principal, method (api_key | sso), remote address
    refused       console.sign_in_failed  the principal when known, else "unknown" with the
                                          identity the provider named; the reason; never the
                                          key, a code or a token
    throttled     console.sign_in_throttled  once per address per window, then nothing
    signed out    console.signed_out      principal, method, remote address; after a single
                                          sign-on, what became of the provider's session
                                          (`provider_logout`); never the ID token
    started       single sign-ons started (each keeps a pending row) are limited per address
                  too (`[limits] sso_starts`), refused past it, not audited

Failed sign-ins are counted per remote address (`[limits] sign_in_failures`, a sliding window
counted where gateway/rates.py counts operations: in this process, or in Redis for every
replica). Past the limit an address's sign-ins are refused before any key is checked or any
provider asked, and not audited one by one: the first refusal in the window is, so the trail
shows the burst without a guessing run turning into one chained write per guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cachetools import TTLCache
from fastapi import Request
from limits import RateLimitItem, parse

from gateway.audit import AuditEvent, AuditTrail
from gateway.counters import Windows
from gateway.principals import Principal
from gateway.telemetry import current_trace_id

UNKNOWN = "unknown"  # the principal of a sign-in that named nobody we know
# The trail's outcome of each event; any other is a refusal.
OUTCOMES = {"console.signed_in": "SIGNED_IN", "console.signed_out": "SIGNED_OUT"}


class Method(StrEnum):
    """How someone signed in."""

    API_KEY = "api_key"
    SSO = "sso"


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a sign-in was refused, and who it claimed to be, as far as that is known."""

    method: Method
    reason: str  # a stable code: unknown_key, not_a_person, state_mismatch, id_token_...
    principal: Principal | None = None
    identity: str | None = None  # what the provider named (an e-mail), when nobody we know


class SignIns:
    """Audits sign-ins and throttles the failures of each address."""

    def __init__(
        self,
        audit: AuditTrail,
        windows: Windows,
        *,
        failures: str,  # failed sign-ins one address may make
        starts: str,  # single sign-ons it may start: each keeps a pending row for minutes
    ) -> None:
        self._audit = audit
        self._item: RateLimitItem = parse(failures)
        self._starts: RateLimitItem = parse(starts)
        self._windows = windows  # shared by the replicas when [limits] counters is a Redis
        # The addresses whose throttling this window was audited (bounded, so that a
        # thousand addresses cannot grow it without end).
        self._told: TTLCache[str, bool] = TTLCache(maxsize=10_000, ttl=self._item.get_expiry())

    async def wait(self, request: Request) -> int | None:
        """Seconds until this address may try again, or None when it may now."""
        address = remote_address(request)
        if await self._windows.test(self._item, "sign-in", address):
            return None
        wait = await self._windows.reset_in(self._item, "sign-in", address)
        if address not in self._told:
            self._told[address] = True
            await self._audit.append(_event(request, "console.sign_in_throttled", None, {}))
        return wait

    async def start(self, request: Request) -> int | None:
        """Count a single sign-on started from this address; seconds to wait when too many
        (not audited: nobody has claimed to be anyone yet)."""
        address = remote_address(request)
        if await self._windows.hit(self._starts, "sso-start", address):
            return None
        return await self._windows.reset_in(self._starts, "sso-start", address)

    async def failed(self, request: Request, failure: Failure) -> None:
        """Count the failure against the address, and audit it."""
        await self._windows.hit(self._item, "sign-in", remote_address(request))
        payload = {"method": failure.method.value, "reason": failure.reason}
        if failure.identity is not None:
            payload["identity"] = failure.identity[:200]
        event = _event(request, "console.sign_in_failed", failure.principal, payload)
        await self._audit.append(event)

    async def succeeded(self, request: Request, principal: Principal, method: Method) -> None:
        """Audit a sign-in."""
        payload = {"method": method.value}
        await self._audit.append(_event(request, "console.signed_in", principal, payload))

    async def signed_out(
        self,
        request: Request,
        principal: Principal,
        method: Method,
        *,
        provider_logout: str | None = None,
    ) -> None:
        """Audit a sign-out; `provider_logout` says what became of a provider's session:
        end_requested, or why it could not be (no_end_session_endpoint, provider_unreachable)."""
        payload = {"method": method.value}
        if provider_logout is not None:
            payload["provider_logout"] = provider_logout
        await self._audit.append(_event(request, "console.signed_out", principal, payload))


def remote_address(request: Request) -> str:
    """The caller's address (uvicorn puts a trusted proxy's X-Forwarded-For here)."""
    return request.client.host if request.client else UNKNOWN


def _event(
    request: Request, name: str, principal: Principal | None, payload: dict[str, str]
) -> AuditEvent:
    return AuditEvent(
        event=name,
        principal=principal.id if principal else UNKNOWN,
        principal_kind=principal.kind.value if principal else UNKNOWN,
        on_behalf_of=principal.on_behalf_of if principal else None,
        channel="console",
        outcome=OUTCOMES.get(name, "REFUSED"),
        trace_id=current_trace_id(),
        payload={**payload, "remote_address": remote_address(request)},
    )
