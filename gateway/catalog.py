"""The actions an estate offers, as its configuration names them, each bound to its source.

    [actions.adjust_inventory]                                    the TOML
    implementation = "sources.demo.actions.inventory:AdjustInventory"
    source = "erp"

`load_catalog` imports each implementation, checks it against the contract
(`sources.actions.ActionKind`) and binds it to its source's connector; an unknown
implementation, a source that does not exist or two actions with one name are refused at
start-up, naming the key. GraphQL mutations, MCP tools, `can` and the console are generated
from the catalog, so an estate's own actions appear everywhere without code in the gateway.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from gateway.config import ActionConfig
from gateway.errors import ConfigError
from sources.actions import ActionInput, ActionKind, masked
from sources.connector import Connector

_CONTRACT = ("kind", "mutation", "entity", "summary", "Input", "pii_fields", "creates")
_METHODS = ("target", "policy_input", "amount", "touched", "plan", "execute", "find_effect")


@dataclass(frozen=True, slots=True)
class Bound:
    """One configured action: its implementation and the source it may reach."""

    name: str  # its key in the configuration
    kind: ActionKind
    source: Connector


class Catalog:
    """The configured actions by kind (the name policy rules use)."""

    def __init__(self, bound: Mapping[str, Bound]) -> None:
        self._bound = dict(bound)
        # The schema and tools generated from a catalog depend on its classes alone.
        self._identity = tuple((name, type(b.kind)) for name, b in sorted(self._bound.items()))

    def __contains__(self, kind: object) -> bool:
        return kind in self._bound

    def __iter__(self) -> Iterator[str]:
        return iter(self._bound)

    def __hash__(self) -> int:
        return hash(self._identity)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Catalog) and other._identity == self._identity

    def get(self, kind: str) -> ActionKind | None:
        """The action of a kind, or None."""
        found = self._bound.get(kind)
        return None if found is None else found.kind

    def kinds(self) -> list[ActionKind]:
        """Every configured action, in configuration order."""
        return [bound.kind for bound in self._bound.values()]

    def source(self, kind: str) -> Connector:
        """The one source the action of `kind` is bound to."""
        return self._bound[kind].source

    def masked(self, kind: str, values: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """`values` of an action's input or diff with its personal data hidden; all of them
        for a kind no longer configured, since nothing says which of its fields are personal."""
        found = self.get(kind)
        if found is None:
            return masked(values, frozenset(values or ()))
        return masked(values, found.pii_fields)


def load_catalog(
    actions: Mapping[str, ActionConfig],
    connectors: Mapping[str, Connector],
    entities: Collection[str],
) -> Catalog:
    """Import and bind every configured action, or raise ConfigError naming the key."""
    bound: dict[str, Bound] = {}
    for (name, config), kind in zip(actions.items(), action_kinds(actions), strict=True):
        if kind.entity not in entities:
            raise ConfigError(
                f"actions.{name}.implementation: it changes entity '{kind.entity}', which the "
                "configuration does not define"
            )
        if config.source not in connectors:
            raise ConfigError(f"actions.{name}.source: no source named '{config.source}'")
        bound[kind.kind] = Bound(name, kind, connectors[config.source])
    return Catalog(bound)


def action_kinds(actions: Mapping[str, ActionConfig]) -> list[ActionKind]:
    """The configured actions' implementations, unbound; two with one name are refused."""
    kinds: list[ActionKind] = []
    seen: dict[str, str] = {}
    for name, config in actions.items():
        kind = _implementation(name, config.implementation)
        for label in (kind.kind, kind.mutation):
            if label in seen:
                raise ConfigError(
                    f"actions.{name}: '{label}' is also the name of actions.{seen[label]}; "
                    "two actions cannot share a name"
                )
            seen[label] = name
        kinds.append(kind)
    return kinds


def _implementation(name: str, reference: str) -> ActionKind:
    where = f"actions.{name}.implementation"
    module_name, _, class_name = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
        found = getattr(module, class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot import '{reference}' ({exc})") from exc
    try:
        kind = found()
    except Exception as exc:
        raise ConfigError(f"{where}: '{reference}' cannot be made ({exc})") from exc
    missing = [a for a in (*_CONTRACT, *_METHODS) if not hasattr(kind, a)]
    if missing:
        raise ConfigError(f"{where}: '{reference}' lacks {', '.join(missing)} of an action")
    if not (isinstance(kind.Input, type) and issubclass(kind.Input, BaseModel)):
        raise ConfigError(f"{where}: '{reference}'.Input is not a pydantic model")
    if not issubclass(kind.Input, ActionInput):
        raise ConfigError(f"{where}: '{reference}'.Input must derive from ActionInput")
    action: ActionKind = kind
    return action
