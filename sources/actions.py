"""The contract of a governed action: what an estate implements, what the gateway calls.

    an action (one class, named in the configuration, bound to one source)
    ├── its logical contract      kind, name, entity, summary, Input, pii_fields, creates,
    │                             target(), policy_input(), amount(), touched()
    └── its implementation        plan(data, source)          fresh state, rules, the diff
                                  execute(data, plan, source, action_id=...)
                                  find_effect(data, source, action_id=..., based_on=...)

The gateway knows this contract and never an estate: the demo's actions (`sources/demo/
actions`), a Tryton estate's or a company's own package implement it, and the TOML names
each implementation (`package.module:Class`) and the source it is bound to. The source an
implementation gets is the connector of that one system (a `SqlConnector` joined to the
write's transaction, an `HttpConnector`): it reaches nothing else.

`action_id` is unique to the action across principals and retries; an implementation sends
it (not a client's key) as the system's idempotency key, or records it with the effect, so
that `find_effect` can tell after a crash whether the effect reached the system.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from sources.records import Record
from sources.words import Names

MASK = "***"

# Bidirectional embeddings, overrides and isolates: text that reads differently than it is.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_LINE_BREAKS = frozenset("\t\n")


class _Multiline:
    """Marks a text that may span lines (a reason, a note): tab and line feed allowed."""


MULTILINE = _Multiline()
Multiline = Annotated[str, MULTILINE]


def control_character(text: str, *, multiline: bool = False) -> str | None:
    """The first control character in `text` (as U+XXXX), or None when there is none.

    Control, surrogate and bidirectional-override characters are refused in every text;
    tab and line feed only in single-line ones.
    """
    for char in text:
        if multiline and char in _LINE_BREAKS:
            continue
        if char in _BIDI or unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
            return f"U+{ord(char):04X}"
    return None


class ActionInput(BaseModel):
    """Every action's input: unknown fields are mistakes, inputs never change, and no text
    carries control characters (only a `Multiline` one, tab and line feed)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name
        multiline = name is not None and MULTILINE in cls.model_fields[name].metadata
        for text in _texts(value):
            if (found := control_character(text, multiline=multiline)) is not None:
                raise PydanticCustomError(
                    "control_character",
                    "control characters are not allowed (found {character})",
                    {"character": found},
                )
        return value


def _texts(value: Any) -> list[str]:
    # Nested ActionInputs check themselves; lists and mappings of text are checked here.
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple | set | frozenset):
        return [text for item in value for text in _texts(item)]
    if isinstance(value, Mapping):
        return [text for item in (*value.keys(), *value.values()) for text in _texts(item)]
    return []


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason an input cannot be applied: the field, the message, the rule."""

    message: str
    field: str | None = None
    rule: str = "SHAPE"

    def as_dict(self) -> dict[str, str | None]:
        """The JSON form stored, audited and returned."""
        return {"field": self.field, "message": self.message, "rule": self.rule}


class Invalid(Exception):
    """Business rules refused the input; raised inside execution to roll back."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


@dataclass(slots=True)
class Plan:
    """The state a write was validated against, and what it would change."""

    target_version: str | None
    target_record: Record | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)  # what execute() needs from plan()

    @classmethod
    def refused(
        cls, message: str, field: str | None, rule: str, record: Record | None = None
    ) -> Plan:
        """A plan that cannot go ahead, for one reason."""
        version = None if record is None else record.version
        return cls(version, record, None, None, [Problem(message, field, rule)])


@dataclass(frozen=True, slots=True)
class Effect:
    """What an action's implementation found of its own effect at the system of record."""

    applied: bool
    result: dict[str, Any] | None = None


def masked(values: Mapping[str, Any] | None, pii_fields: frozenset[str]) -> dict[str, Any] | None:
    """`values` with the action's personal-data fields hidden."""
    if values is None:
        return None
    return {k: (MASK if k in pii_fields and v is not None else v) for k, v in values.items()}


class ActionKind(Protocol):
    """One kind of governed write: its logical contract and its implementation."""

    kind: ClassVar[str]  # e.g. "inventory.adjust": the object policy rules name
    mutation: ClassVar[str]  # the GraphQL mutation and MCP tool it is exposed as
    entity: ClassVar[str]  # the entity it changes
    summary: ClassVar[str]
    Input: ClassVar[type[ActionInput]]
    pii_fields: ClassVar[frozenset[str]]
    creates: ClassVar[bool]  # True when the write makes a new record (no expectedVersion)

    def target(self, data: Any) -> str:
        """The key of the record it changes (or, for a new record, what it hangs off)."""
        ...

    def policy_input(self, data: Any) -> dict[str, Any]:
        """What policy conditions see as r.inp.*."""
        ...

    def amount(self, data: Any) -> Decimal | None:
        """The money at stake, which an approver's limit must cover; None for no money."""
        ...

    def touched(self, data: Any, plan: Plan) -> list[tuple[str, str]]:
        """Records besides the target (entity, key) whose cached copies the write makes stale."""
        ...

    def headline(
        self, data: Mapping[str, Any], names: Names, planned: Mapping[str, Any]
    ) -> str | None:
        """What the stored input `data` would do, in one line of the business's words, or
        None for the gateway's generic wording. `planned` holds the plan's after-values.
        Raises KeyError, TypeError or ValueError for an input its kind no longer reads."""
        ...

    async def plan(self, data: Any, source: Any) -> Plan:
        """Read fresh state from the bound source, check the rules, and work out the diff."""
        ...

    async def execute(
        self, data: Any, plan: Plan, source: Any, *, action_id: str
    ) -> dict[str, Any]:
        """Apply the write on the system of record; raise Invalid to roll back."""
        ...

    async def find_effect(
        self, data: Any, source: Any, *, action_id: str, based_on: str | None
    ) -> Effect | None:
        """Whether the action's effect reached the system; None when it cannot be told.

        Called after a crash for an action that was in flight. `based_on` is the version
        of the target its plan was made against. A SourceError means: not now.
        """
        ...
