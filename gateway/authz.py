"""Casbin, wrapped once behind a typed `Decision`: who may do what, with which outcome.

The model (`policies/model.conf`) is first-match-wins with deny by default. Each rule
carries the gateway's outcome (`allow`, `deny`, `review`, `review:N`), a rule code and a
reason, so every decision can say which rule made it and why. The policy's version is the
digest of its files: an approval is bound to the version that decided the action.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import casbin
from casbin.util import key_match

from gateway.principals import Principal

DEFAULT_DENY = "DEFAULT_DENY"

log = logging.getLogger("gatehouse.policy")


class Outcome(StrEnum):
    """What policy says about a request."""

    ALLOW = "allow"
    DENY = "deny"
    REVIEW = "review"


@dataclass(frozen=True, slots=True)
class Decision:
    """Policy's answer, the rule that gave it and why."""

    outcome: Outcome
    rule: str
    reason: str
    policy_version: str
    approvals_required: int = 0

    @property
    def allowed(self) -> bool:
        """True only for a plain allow."""
        return self.outcome is Outcome.ALLOW


class Policy:
    """The loaded Casbin policy; reloaded from its files when they change."""

    def __init__(self, model: Path, policy: Path, roles: Mapping[str, Sequence[str]]) -> None:
        self.model_path = model
        self.policy_path = policy
        self._roles = roles
        self._lock = threading.Lock()
        self._enforcer, self.version = self._load()

    def _load(self) -> tuple[casbin.Enforcer, str]:
        # Roles are assigned to principals in the configuration; the policy file says what
        # each role may do. Both meet here, in memory only.
        version = policy_version(self.model_path, self.policy_path)
        enforcer = casbin.Enforcer(str(self.model_path), str(self.policy_path))
        for principal, roles in self._roles.items():
            for role in roles:
                enforcer.add_role_for_user(principal, f"role:{role}")
        return enforcer, version

    def decide(
        self, principal: Principal, obj: str, act: str, inp: Mapping[str, Any] | None = None
    ) -> Decision:
        """Decide one request; no matching rule is a deny."""
        subject = SimpleNamespace(
            **principal.attributes, id=principal.id, kind=principal.kind.value
        )
        with self._lock:
            self._ensure_kind_role(principal)
            matched, explain = self._enforcer.enforce_ex(
                subject, obj, act, SimpleNamespace(**(inp or {}))
            )
            version = self.version
        if not explain:
            return Decision(Outcome.DENY, DEFAULT_DENY, "No rule allows this", version)
        outcome, _, count = str(explain[5]).partition(":")
        decided = Outcome(outcome) if matched else Outcome.DENY
        required = (int(count) if count else 1) if decided is Outcome.REVIEW else 0
        return Decision(decided, explain[6], explain[7], version, required)

    def _ensure_kind_role(self, principal: Principal) -> None:
        # Principals may come from configuration or a token; either way the role of
        # their kind (role:agent, ...) is what "agents may never..." rules match on.
        role = f"role:{principal.kind.value}"
        if not self._enforcer.has_role_for_user(principal.id, role):
            self._enforcer.add_role_for_user(principal.id, role)

    def could_ever(self, principal: Principal, obj: str, act: str) -> bool:
        """Whether some input could get this request past a deny (allow or review).

        Rules are read in order, as the enforcer does: an unconditional deny that applies
        shadows every later rule; a conditional one might not match, so reading goes on.
        """
        with self._lock:
            self._ensure_kind_role(principal)
            subjects = {principal.id, *self._enforcer.get_implicit_roles_for_user(principal.id)}
            rules = [list(rule) for rule in self._enforcer.get_policy()]
        for sub, pattern, action, cond, _, outcome, *_ in rules:
            if sub not in subjects or action != act or not key_match(obj, pattern):
                continue
            if not outcome.startswith(Outcome.DENY.value):
                return True
            if cond.strip() == "True":
                return False
        return False

    def can_read(self, principal: Principal, entity: str) -> bool:
        """May this principal read the entity at all?"""
        return self.decide(principal, entity, "read").allowed

    def reload_if_changed(self) -> str | None:
        """Reload when the files changed; the previous version if it did, else None.

        A file that does not load (a typo mid-edit) keeps the current policy in force.
        """
        try:
            if policy_version(self.model_path, self.policy_path) == self.version:
                return None
            enforcer, version = self._load()
        except Exception:
            log.exception("policy files changed but do not load; keeping version %s", self.version)
            return None
        with self._lock:
            previous, self._enforcer, self.version = self.version, enforcer, version
        return previous


def policy_version(*paths: Path) -> str:
    """The digest of the policy files: it changes whenever any rule does."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
