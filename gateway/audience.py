"""Who hears, and where: a principal's or an owner's routes, from the configuration.

A route is a channel, and for e-mail to a person the address. A principal is reached on
the channels it lists under `notify` and, when [notify.smtp] is set, at its `email`. A
contract's owner on its `owner_contact` channels, else at the address in `owner`
("Supply Chain <inventory@acme.example>"). An agent's own channels are its own; the human it
acts for hears of its actions as their owner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.channels import EMAIL
from gateway.config import GatewayConfig

_ADDRESS = re.compile(r"<([^<>@\s]+@[^<>@\s]+)>\s*$|^([^<>@\s]+@[^<>@\s]+)$")


@dataclass(frozen=True, slots=True, order=True)
class Route:
    """Where one notification goes: a channel, and the address for e-mail."""

    channel: str
    address: str | None = None

    @property
    def key(self) -> str:
        """What tells two routes apart in a notification's dedupe key."""
        return f"{self.channel}:{self.address or ''}"


class Audience:
    """Routes for principals, owners and operators, worked out from the configuration."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._email = config.notify.smtp is not None

    def principal(self, principal_id: str | None) -> list[Route]:
        """Where a principal hears; none for an unknown one."""
        found = self._config.principals.get(principal_id or "")
        if found is None:
            return []
        routes = [Route(name) for name in found.notify]
        if self._email and found.email:
            routes.append(Route(EMAIL, found.email))
        return routes

    def owner(self, entity: str) -> tuple[str, list[Route]]:
        """An entity's owner and where they hear; ("", []) for an unknown entity."""
        contract = self._config.entities.get(entity)
        if contract is None:
            return "", []
        if contract.owner_contact:
            return contract.owner, [Route(name) for name in contract.owner_contact]
        address = owner_address(contract.owner)
        return contract.owner, [Route(EMAIL, address)] if self._email and address else []

    def operators(self) -> list[Route]:
        """Where alerts without an owner go."""
        return [Route(name) for name in self._config.notify.operators]


def owner_address(owner: str) -> str | None:
    """The e-mail address in an owner's name, `Team <team@example.com>` or a bare one."""
    match = _ADDRESS.search(owner.strip())
    return (match.group(1) or match.group(2)) if match else None


def grouped(audience: dict[str, list[Route]]) -> dict[Route, list[str]]:
    """Recipients by route, so a channel two people share gets one message naming both."""
    by_route: dict[Route, list[str]] = {}
    for recipient, routes in audience.items():
        for route in routes:
            by_route.setdefault(route, [])
            if recipient not in by_route[route]:
                by_route[route].append(recipient)
    return dict(sorted(by_route.items()))
