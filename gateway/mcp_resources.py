"""MCP resources: what an agent can read about the ground rules, rather than discover by trying.

    gatehouse://contracts     the data contracts: per entity its system of record, owner,
                              freshness SLA and fields with their classification
    gatehouse://policy/me     the caller's effective policy: which entities it reads (and
                              which of their fields come back masked), which writes it may
                              ask for and under which rules (limits, review, who approves),
                              and its rate limit

Both are JSON, computed for the caller at the time of reading, from the same configuration
and policy the gateway decides with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from mcp import types
from mcp.shared.exceptions import MCPError

from gateway.approvals import approval_limit
from gateway.authz import Outcome, Rule
from gateway.config import Classification, EntityConfig, PrincipalKind
from gateway.principals import Principal
from gateway.services import Services
from sources.actions import ActionKind

CONTRACTS = "gatehouse://contracts"
POLICY = "gatehouse://policy/me"
_JSON = "application/json"
# r.inp.quantity -> quantity, r.sub.kind -> your kind: conditions as an agent reads them
_NAMES = re.compile(r"\br\.(inp|sub)\.(\w+)")

LISTING = [
    types.Resource(
        uri=CONTRACTS,
        name="contracts",
        title="Data contracts",
        description="Per entity: system of record, owner, freshness SLA, fields and their "
        "classification (pii fields are masked unless your policy grants them).",
        mime_type=_JSON,
    ),
    types.Resource(
        uri=POLICY,
        name="policy",
        title="Your effective policy",
        description="What you may read (and what comes back masked), which writes you may ask "
        "for under which rules, limits and approvers, and your rate limit.",
        mime_type=_JSON,
    ),
]


def read(services: Services, principal: Principal, uri: str) -> types.ReadResourceResult:
    """The resource at `uri` as this principal sees it; an unknown URI is an MCP error."""
    documents: dict[str, Callable[[], dict[str, Any]]] = {
        CONTRACTS: lambda: contracts(services),
        POLICY: lambda: effective_policy(services, principal),
    }
    if uri not in documents:
        raise MCPError(code=-32602, message=f"No resource {uri}; list the resources to see them.")
    text = json.dumps(documents[uri](), default=str, indent=1)
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, mime_type=_JSON, text=text)]
    )


def contracts(services: Services) -> dict[str, Any]:
    """Every entity's contract."""
    return {name: _contract(cfg) for name, cfg in services.config.entities.items()}


def _contract(cfg: EntityConfig) -> dict[str, Any]:
    return {
        "system": cfg.source,
        "owner": cfg.owner,
        "description": cfg.description,
        "warn_after_seconds": cfg.warn_after,
        "error_after_seconds": cfg.error_after,
        "fields": {
            name: {
                "type": f.type,
                "classification": f.classification.value,
                "system": f.system or cfg.source,
                "owner": f.owner or cfg.owner,
                "description": f.description,
                "required": f.required,
                **({"min": f.min} if f.min is not None else {}),
                **({"max": f.max} if f.max is not None else {}),
            }
            for name, f in cfg.all_fields()
        },
    }


def effective_policy(services: Services, principal: Principal) -> dict[str, Any]:
    """What this principal may do, as the policy in force decides it."""
    policy = services.policy
    reads = {
        entity: {"masked": _masked(services, principal, entity, cfg)}
        for entity, cfg in services.config.entities.items()
        if policy.can_read(principal, entity)
    }
    writes = {
        kind.mutation: _write(services, principal, kind)
        for kind in services.catalog.kinds()
        if policy.could_ever(principal, kind.kind, "write")
    }
    return {
        "principal": {
            "id": principal.id,
            "kind": principal.kind.value,
            "on_behalf_of": principal.on_behalf_of,
            "roles": list(principal.roles),
        },
        "policy_version": policy.version,
        "reads": reads,
        "writes": writes,
        "rate_limit": getattr(services.config.limits.rate, principal.kind.value),
    }


def _masked(services: Services, principal: Principal, entity: str, cfg: EntityConfig) -> list[str]:
    granted = services.policy.decide(principal, f"{Classification.PII.value}:{entity}", "read")
    return [
        name
        for name, field in cfg.all_fields()
        if field.classification is Classification.PII and not granted.allowed
    ]


def _write(services: Services, principal: Principal, kind: ActionKind) -> dict[str, Any]:
    rules = services.policy.rules_for(principal, kind.kind, "write")
    return {
        "summary": kind.summary,
        "entity": kind.entity,
        "rules": [_rule(rule) for rule in rules],
        "approvers": _approvers(services, kind) if any(_reviewed(r) for r in rules) else [],
    }


def _rule(rule: Rule) -> dict[str, Any]:
    outcome, _, count = rule.outcome.partition(":")
    return {
        "when": "always" if rule.cond.strip() == "True" else _NAMES.sub(r"\2", rule.cond),
        "outcome": outcome,
        **({"approvals": int(count or 1)} if outcome == Outcome.REVIEW.value else {}),
        "rule": rule.code,
        "reason": rule.reason,
    }


def _reviewed(rule: Rule) -> bool:
    return rule.outcome.startswith(Outcome.REVIEW.value)


def _approvers(services: Services, kind: ActionKind) -> list[dict[str, Any]]:
    """The humans who may approve this kind of action, with the most each may approve."""
    humans = [p for p in services.authenticator.all() if p.kind is PrincipalKind.HUMAN]
    return [
        {"id": p.id, "approval_limit": approval_limit(p)}
        for p in sorted(humans, key=lambda p: p.id)
        if services.policy.decide(p, kind.kind, "approve").allowed
    ]
