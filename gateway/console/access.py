"""Which console pages a person may see, decided from the grants policy already holds.

    approvals  a human whom policy lets `approve` some kind of action
    audit      policy lets them `read` the `audit` trail (compliance)
    ledger     as audit: the trail's actions, one row each
    in-doubt   a human whom policy lets `resolve` some kind of action (the operator role)
    sources    policy lets them `read` at least one entity
    drift      as sources; each entity's copies shown to those who may read it
    alerts     policy lets them `inspect` `alerts` (operators): owner alerts, failed deliveries
    an action  approvals or audit, or they requested it (or own the agent that did); an
               action in doubt, to those who may open in-doubt

A page not granted is a 403; its link is not in the navigation either.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.actions.store import Action, Status
from gateway.config import PrincipalKind
from gateway.console.drafts import Draft
from gateway.console.sessions import ConsoleSession
from gateway.principals import Principal
from gateway.services import Services


class Page(StrEnum):
    """A page of the console, as the navigation names it."""

    APPROVALS = "approvals"
    AUDIT = "audit"
    SOURCES = "sources"
    DRIFT = "drift"
    LEDGER = "ledger"
    IN_DOUBT = "in-doubt"
    ALERTS = "alerts"


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in person, their session and the pages they may open."""

    principal: Principal
    session: ConsoleSession
    token: str
    pages: frozenset[Page]
    draft: Draft | None = None  # what they were typing on this page when their session ended


def pages_for(principal: Principal, services: Services) -> frozenset[Page]:
    """The pages `principal` may open."""
    policy = services.policy
    granted: set[Page] = set()
    if principal.kind is PrincipalKind.HUMAN and any(
        policy.decide(principal, kind, "approve").allowed for kind in services.catalog
    ):
        granted.add(Page.APPROVALS)
    if principal.kind is PrincipalKind.HUMAN and any(
        policy.decide(principal, kind, "resolve").allowed for kind in services.catalog
    ):
        granted.add(Page.IN_DOUBT)
    if policy.decide(principal, "audit", "read").allowed:
        granted |= {Page.AUDIT, Page.LEDGER}
    if any(policy.can_read(principal, entity) for entity in services.config.entities):
        granted |= {Page.SOURCES, Page.DRIFT}
    if policy.decide(principal, "alerts", "inspect").allowed:
        granted.add(Page.ALERTS)
    return frozenset(granted)


def may_see_action(principal: Principal, pages: frozenset[Page], action: Action) -> bool:
    """Approvers and compliance see every action; others only their own."""
    if pages & {Page.APPROVALS, Page.AUDIT}:
        return True
    if Page.IN_DOUBT in pages and action.status is Status.IN_DOUBT:
        return True
    return principal.id in (action.principal, action.on_behalf_of)


def names(services: Services) -> dict[str, str]:
    """Every principal's display name, by id, for pages that name people and agents."""
    return {p.id: p.display_name for p in services.authenticator.all()}
