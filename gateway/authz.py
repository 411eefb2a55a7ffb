"""Casbin, wrapped once behind a typed `Decision`: who may do what, with which outcome.

The model (`policies/model.conf`) is first-match-wins with deny by default. Each rule
carries the gateway's outcome (`allow`, `deny`, `review`, `review:N`), a rule code and a
reason, so every decision can say which rule made it and why. The policy's version is the
digest of its files: an approval is bound to the version that decided the action.

    load     Casbin reads the model, the rules and the role graph; each rule's condition
             is parsed once; the model's matcher must be the one `decide` evaluates
    decide   the rules for (object, action), in file order: the first whose subject the
             principal holds (directly or through roles) and whose condition is true wins

Casbin's own `enforce` re-parses every rule's `eval(p.cond)` matcher on every request;
evaluating the same matcher here over pre-parsed conditions gives the same answers in a
fraction of the time.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import casbin
from cachetools import LRUCache
from casbin.util import escape_assertion, key_match
from casbin.util.builtin_operators import generate_g_function
from simpleeval import EvalWithCompoundTypes  # type: ignore[import-untyped]  # no types shipped

from gateway.oauth import SCOPES
from gateway.principals import Principal

DEFAULT_DENY = "DEFAULT_DENY"
OUT_OF_SCOPE = "OUT_OF_SCOPE"  # an OAuth token whose scopes leave out the act

# The matcher and effect `decide` evaluates, as Casbin normalizes them from model.conf.
MATCHER = "g(r_sub.id, p_sub) && keyMatch(r_obj, p_obj) && r_act == p_act && eval(p_cond)"
EFFECT = "priority(p_eft) || deny"

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


@dataclass(frozen=True, slots=True)
class Rule:
    """One policy line, its condition parsed once."""

    sub: str
    obj: str
    act: str
    cond: str
    eft: str
    outcome: str
    code: str
    reason: str
    parsed: ast.stmt
    names: dict[str, str]  # p_sub, p_obj, ... as the condition may name them

    @classmethod
    def parse(cls, values: Sequence[str], tokens: Sequence[str]) -> Rule:
        """A rule from Casbin's policy line; raises on a condition that does not parse."""
        if len(values) != len(tokens):
            raise ValueError(f"policy line {list(values)} does not have {len(tokens)} fields")
        sub, obj, act, cond, eft, outcome, code, reason = values
        parsed = EvalWithCompoundTypes.parse(escape_assertion(cond))
        names = dict(zip(tokens, values, strict=True))
        return cls(sub, obj, act, cond, eft, outcome, code, reason, parsed, names)


class _Rules:
    """A loaded policy: the enforcer (model, rules, role graph) and the parsed rules."""

    def __init__(self, enforcer: casbin.Enforcer) -> None:
        model = enforcer.model.model
        if model["m"]["m"].value != MATCHER or model["e"]["e"].value != EFFECT:
            raise ValueError(f"model.conf must keep the matcher {MATCHER!r} and effect {EFFECT!r}")
        self.enforcer = enforcer
        self.roles = enforcer.get_role_manager()
        tokens = model["p"]["p"].tokens
        self.rules = tuple(Rule.parse(values, tokens) for values in enforcer.get_policy())
        self._request_tokens = model["r"]["r"].tokens
        functions: dict[str, Callable[..., Any]] = dict(enforcer.fm.get_functions())
        functions["g"] = generate_g_function(self.roles)
        self._evaluator = EvalWithCompoundTypes(functions=functions)
        self._for: LRUCache[tuple[str, str], tuple[Rule, ...]] = LRUCache(maxsize=4096)

    def candidates(self, obj: str, act: str) -> tuple[Rule, ...]:
        """The rules for this object and action, in file order."""
        found = self._for.get((obj, act))
        if found is None:
            found = tuple(r for r in self.rules if r.act == act and key_match(obj, r.obj))
            self._for[obj, act] = found
        return found

    def first_match(
        self, principal_id: str, request: tuple[Any, str, str, Any]
    ) -> tuple[Rule | None, bool]:
        """The rule that decides (or the last that matched without an effect), and allowed.

        As Casbin's priority effect reads the rules: a match with effect allow or deny ends
        the search; a condition must answer a bool or a float, or the request is an error.
        """
        _, obj, act, _ = request
        names = dict(zip(self._request_tokens, request, strict=True))
        explain: Rule | None = None
        for rule in self.candidates(obj, act):
            if not self.roles.has_link(principal_id, rule.sub) or not self._holds(rule, names):
                continue
            explain = rule
            if rule.eft in ("allow", "deny"):
                return rule, rule.eft == "allow"
        return explain, False

    def _holds(self, rule: Rule, names: dict[str, Any]) -> bool:
        self._evaluator.names = {**names, **rule.names}
        result = self._evaluator.eval(rule.cond, previously_parsed=rule.parsed)
        if isinstance(result, bool):
            return result
        if isinstance(result, float):
            return result != 0
        raise RuntimeError("matcher result should be bool, int or float")


class Policy:
    """The loaded Casbin policy; reloaded from its files when they change."""

    def __init__(self, model: Path, policy: Path, roles: Mapping[str, Sequence[str]]) -> None:
        self.model_path = model
        self.policy_path = policy
        self._roles = roles
        self._lock = threading.Lock()
        self._rules, self.version = self._load()

    def _load(self) -> tuple[_Rules, str]:
        # Roles are assigned to principals in the configuration; the policy file says what
        # each role may do. Both meet here, in memory only.
        version = policy_version(self.model_path, self.policy_path)
        enforcer = casbin.Enforcer(str(self.model_path), str(self.policy_path))
        for principal, roles in self._roles.items():
            for role in roles:
                enforcer.add_role_for_user(principal, f"role:{role}")
        return _Rules(enforcer), version

    def decide(
        self, principal: Principal, obj: str, act: str, inp: Mapping[str, Any] | None = None
    ) -> Decision:
        """Decide one request; no matching rule, or an act the token's scopes omit, is a deny."""
        if not principal.permits(act):
            reason = f"The token's scopes do not include {SCOPES.get(act, act)}"
            return Decision(Outcome.DENY, OUT_OF_SCOPE, reason, self.version)
        subject = SimpleNamespace(
            **principal.attributes, id=principal.id, kind=principal.kind.value
        )
        request = (subject, obj, act, SimpleNamespace(**(inp or {})))
        with self._lock:
            self._ensure_kind_role(principal)
            rule, matched = self._rules.first_match(principal.id, request)
            version = self.version
        if rule is None:
            return Decision(Outcome.DENY, DEFAULT_DENY, "No rule allows this", version)
        outcome, _, count = rule.outcome.partition(":")
        decided = Outcome(outcome) if matched else Outcome.DENY
        required = (int(count) if count else 1) if decided is Outcome.REVIEW else 0
        return Decision(decided, rule.code, rule.reason, version, required)

    def _ensure_kind_role(self, principal: Principal) -> None:
        # Principals may come from configuration or a token; either way the role of
        # their kind (role:agent, ...) is what "agents may never..." rules match on.
        role = f"role:{principal.kind.value}"
        enforcer = self._rules.enforcer
        if not enforcer.has_role_for_user(principal.id, role):
            enforcer.add_role_for_user(principal.id, role)

    def could_ever(self, principal: Principal, obj: str, act: str) -> bool:
        """Whether some input could get this request past a deny (allow or review)."""
        if not principal.permits(act):
            return False
        rules = self.rules_for(principal, obj, act)
        return any(not rule.outcome.startswith(Outcome.DENY.value) for rule in rules)

    def rules_for(self, principal: Principal, obj: str, act: str) -> list[Rule]:
        """The rules that can decide this principal's requests, in the order they are read.

        As the enforcer reads them: an unconditional rule that applies ends the list, since
        no later rule is ever reached; a conditional one might not match, so reading goes on.
        """
        with self._lock:
            self._ensure_kind_role(principal)
            enforcer = self._rules.enforcer
            subjects = {principal.id, *enforcer.get_implicit_roles_for_user(principal.id)}
            rules = self._rules.candidates(obj, act)
        applying: list[Rule] = []
        for rule in rules:
            if rule.sub not in subjects:
                continue
            applying.append(rule)
            if rule.cond.strip() == "True":
                break
        return applying

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
            rules, version = self._load()
        except Exception:
            log.exception("policy files changed but do not load; keeping version %s", self.version)
            return None
        with self._lock:
            previous, self._rules, self.version = self.version, rules, version
        return previous


def policy_version(*paths: Path) -> str:
    """The digest of the policy files: it changes whenever any rule does."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
