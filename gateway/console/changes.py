"""An action's change as one approver may see it: labelled fields, money with its currency,
personal data shown to those granted it and hidden from the rest, and, for a pending
action opened now, the record read again beside what the requester saw.

    before        what the plan read when the action was requested (stored, pii masked)
    after         what it would write then (stored, pii masked; the input holds the new
                  personal data, shown to those granted it)
    now           the record as its system holds it when the page is opened
    would apply   what a fresh plan would write if it were approved now

The stored diff never keeps personal data (the audit trail holds it masked), so the value
a `pii` field had before is "not kept"; the value it has now comes from the fresh read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.actions.store import Action
from gateway.console.wording import field_label, value_words
from gateway.recovery import Now
from sources.actions import MASK
from sources.words import Names

HIDDEN = "hidden (personal data)"
NOT_KEPT = "not kept (personal data)"


@dataclass(frozen=True, slots=True)
class Row:
    """One field of a change, in words."""

    label: str
    before: str
    after: str
    changed: bool
    now: str = ""  # the record now, when read again
    would_apply: str = ""  # what approving now would write
    moved: bool = False  # the record holds something else than the requester saw


@dataclass(frozen=True, slots=True)
class Seen:
    """How a viewer sees an action's personal data, and in which currency its money is."""

    pii_fields: frozenset[str]
    granted: bool
    currency: str | None


def currency_of(action: Action, names: Names) -> str | None:
    """The action's currency: from its input, its diff, or the customer's account."""
    diff = action.diff or {}
    for values in (action.input, diff.get("after") or {}, diff.get("before") or {}):
        if isinstance(values.get("currency"), str):
            return str(values["currency"])
    customer = action.input.get("customer_id")
    return names.currencies.get(customer) if isinstance(customer, str) else None


def rows(action: Action, seen: Seen, fresh: Now | None = None) -> list[Row]:
    """Every field on either side of the change (and of the fresh read), in words."""
    diff = action.diff or {}
    before: dict[str, Any] = diff.get("before") or {}
    after: dict[str, Any] = diff.get("after") or {}
    now = fresh.values if fresh is not None and fresh.values is not None else None
    then = fresh.after if fresh is not None and fresh.after is not None else None
    names = list(dict.fromkeys([*before, *after, *(now or {})]))
    return [_row(name, action, seen, before, after, now, then) for name in names]


def _row(
    name: str,
    action: Action,
    seen: Seen,
    before: dict[str, Any],
    after: dict[str, Any],
    now: dict[str, Any] | None,
    then: dict[str, Any] | None,
) -> Row:
    if name in seen.pii_fields:
        return _personal(name, action, seen, after, now, then)

    def say(value: Any) -> str:
        return value_words(name, value, seen.currency)

    moved = now is not None and name in before and before[name] != now.get(name)
    return Row(
        field_label(name),
        say(before.get(name)),
        say(after.get(name)),
        before.get(name) != after.get(name),
        now="" if now is None else say(now.get(name)),
        would_apply="" if then is None else say(then.get(name)),
        moved=moved,
    )


def _personal(
    name: str,
    action: Action,
    seen: Seen,
    after: dict[str, Any],
    now: dict[str, Any] | None,
    then: dict[str, Any] | None,
) -> Row:
    """A `pii` field: its values for those granted them, `hidden` for the rest."""
    label = field_label(name)
    asked = name in action.input and action.input[name] is not None
    if not seen.granted:
        fresh = "" if now is None else HIDDEN
        return Row(label, HIDDEN, HIDDEN, asked, now=fresh, would_apply=fresh)
    new = action.input.get(name) if asked else after.get(name)
    shown_new = NOT_KEPT if new == MASK else value_words(name, new)
    current = None if now is None else now.get(name)
    return Row(
        label,
        NOT_KEPT,
        shown_new,
        asked if now is None else current != new,
        now="" if now is None else value_words(name, current),
        would_apply="" if then is None else value_words(name, then.get(name)),
    )


def moved(action: Action, fresh: Now | None) -> bool:
    """Whether the record changed since the action was requested (its version, or a value)."""
    if fresh is None or fresh.values is None:
        return False
    before = (action.diff or {}).get("before") or {}
    # The fields the action is about, where they can be compared; a record's version also
    # moves when a field the action does not touch changes (another warehouse's stock).
    comparable = [k for k in before if before[k] != MASK]
    if comparable:
        return any(before[k] != fresh.values.get(k) for k in comparable)
    return bool(fresh.version and action.based_on and fresh.version != action.based_on)
