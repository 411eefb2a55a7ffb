"""Casbin, wrapped once behind a typed `Decision`: who may do what, with which outcome.

The model (`policies/model.conf`) is first-match-wins with deny by default. Each rule
carries the gateway's outcome (`allow`, `deny`, `review`) and a rule id, so every decision
can say which rule made it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import casbin

from gateway.principals import Principal

DEFAULT_DENY = "default-deny"


class Outcome(StrEnum):
    """What policy says about a request."""

    ALLOW = "allow"
    DENY = "deny"
    REVIEW = "review"


@dataclass(frozen=True, slots=True)
class Decision:
    """Policy's answer and the rule that gave it."""

    outcome: Outcome
    rule: str

    @property
    def allowed(self) -> bool:
        """True only for a plain allow."""
        return self.outcome is Outcome.ALLOW


class Policy:
    """The loaded Casbin policy; reloadable from its files without a restart."""

    def __init__(self, model: Path, policy: Path, roles: Mapping[str, Sequence[str]]) -> None:
        self.model_path = model
        self.policy_path = policy
        self._roles = roles
        self._lock = threading.Lock()
        self._enforcer = self._load()

    def _load(self) -> casbin.Enforcer:
        # Roles are assigned to principals in the configuration; the policy file says what
        # each role may do. Both meet here, in memory only.
        enforcer = casbin.Enforcer(str(self.model_path), str(self.policy_path))
        for principal, roles in self._roles.items():
            for role in roles:
                enforcer.add_role_for_user(principal, f"role:{role}")
        return enforcer

    def decide(
        self, principal: Principal, obj: str, act: str, inp: dict[str, Any] | None = None
    ) -> Decision:
        """Decide one request; no matching rule is a deny."""
        subject = SimpleNamespace(
            **principal.attributes, id=principal.id, kind=principal.kind.value
        )
        with self._lock:
            matched, explain = self._enforcer.enforce_ex(
                subject, obj, act, SimpleNamespace(**(inp or {}))
            )
        if not explain:
            return Decision(Outcome.DENY, DEFAULT_DENY)
        outcome = Outcome(explain[5]) if matched else Outcome.DENY
        return Decision(outcome, explain[6])

    def can_read(self, principal: Principal, entity: str) -> bool:
        """May this principal read the entity at all?"""
        return self.decide(principal, entity, "read").allowed

    def can_read_classified(self, principal: Principal, entity: str, classification: str) -> bool:
        """May this principal see fields of this classification (e.g. `pii`) unmasked?"""
        return self.decide(principal, f"{classification}:{entity}", "read").allowed

    def reload(self) -> None:
        """Load the policy files again."""
        enforcer = self._load()
        with self._lock:
            self._enforcer = enforcer
