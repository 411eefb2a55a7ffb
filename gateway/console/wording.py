"""Plain words for what the gateway records: statuses, kinds, events, times and values.

The console is read by approvers and auditors, not engineers: every code it shows comes
with words, and the code itself stays visible next to them for anyone who needs it.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context

from gateway.catalog import Catalog
from sources.words import money

STATUS_WORDS = {
    "RECEIVED": "Received",
    "EXECUTING": "Being applied",
    "APPLIED": "Applied",
    "PENDING_APPROVAL": "Waiting for approval",
    "DENIED": "Denied by policy",
    "INVALID": "Refused: the data was not valid",
    "FAILED": "Failed in the system of record",
    "REJECTED": "Rejected by an approver",
    "EXPIRED": "Expired before anyone decided",
    "CONFLICT": "Refused: the record had changed",
    "DRY_RUN": "Dry run: nothing was written",
    "IN_DOUBT": "In doubt: a person must check the system",
}
STATUS_TONES = {
    "APPLIED": "good",
    "PENDING_APPROVAL": "wait",
    "EXECUTING": "wait",
    "RECEIVED": "wait",
    "DRY_RUN": "neutral",
    "SIGNED_IN": "neutral",
    "SIGNED_OUT": "neutral",
}
EVENT_WORDS = {
    "action.approved": "Approved",
    "action.approval_recorded": "Approval recorded, more needed",
    "action.retried": "Retried",
    "action.in_doubt": "Left in doubt by a crash",
    "action.recovered": "Settled after a crash",
    "action.resolved": "Resolved by an operator",
    "action.resolve_refused": "Resolve attempt refused",
    "action.redecided": "Decided again after a policy change",
    "action.tampered": "Input found altered",
    "policy.reloaded": "Policy files reloaded",
    "read.classified": "Read classified fields",
    "audit.exported": "Copied out: the trail or the ledger, downloaded or exported",
    "console.signed_in": "Signed in to the console",
    "console.signed_out": "Signed out of the console",
    "console.sign_in_failed": "Console sign-in refused",
    "console.sign_in_throttled": "Console sign-ins paused after repeated failures",
}
DECISION_WORDS = {
    "allow": "Allowed",
    "deny": "Denied",
    "review": "Allowed once a person approves it",
    "": "Not decided",
}
PRINCIPAL_KINDS = {
    "human": "Person",
    "agent": "AI agent",
    "service": "Service",
    "system": "System",
    "unknown": "Not known",  # a sign-in that named nobody configured
}


def status_words(status: str) -> str:
    """A status in plain words."""
    return STATUS_WORDS.get(status, status.replace("_", " ").capitalize())


def decision_words(decision: str) -> str:
    """Policy's outcome in plain words."""
    return DECISION_WORDS.get(decision, decision)


def status_tone(status: str) -> str:
    """good, wait, neutral or bad: how a status is coloured."""
    return STATUS_TONES.get(status, "bad")


@pass_context
def kind_title_filter(context: Context, kind: str) -> str:
    """kind_title with the catalog the page was rendered with."""
    return kind_title(kind, context.get("catalog"))


@pass_context
def kind_summary_filter(context: Context, kind: str) -> str:
    """kind_summary with the catalog the page was rendered with."""
    return kind_summary(kind, context.get("catalog"))


def kind_title(kind: str, catalog: Catalog | None) -> str:
    """`inventory.adjust` -> `Adjust inventory` (from its mutation's name)."""
    found = None if catalog is None else catalog.get(kind)
    if found is None:
        return kind
    words = re.sub(r"(?<!^)([A-Z])", r" \1", found.mutation).lower()
    return words[:1].upper() + words[1:]


def kind_summary(kind: str, catalog: Catalog | None) -> str:
    """What an action of this kind does, in one sentence."""
    found = None if catalog is None else catalog.get(kind)
    return found.summary if found is not None else ""


def event_words(event: str) -> str:
    """An audit event's name in plain words."""
    if event in EVENT_WORDS:
        return EVENT_WORDS[event]
    if event.startswith("action."):
        return status_words(event.removeprefix("action.").upper())
    return event


def utc(value: datetime) -> datetime:
    """A stored time in UTC (SQLite hands back the naive UTC wall time that was stored)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def when(value: datetime | None) -> str:
    """A moment as UTC date and time, to the second."""
    if value is None:
        return "—"
    return utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def relative(value: datetime | None, now: datetime) -> str:
    """`3 min ago` or `in 23 h`."""
    if value is None:
        return ""
    seconds = (utc(value) - now).total_seconds()
    span = duration(abs(seconds))
    if abs(seconds) < 5:
        return "just now"
    return f"in {span}" if seconds > 0 else f"{span} ago"


def duration(seconds: float) -> str:
    """Seconds in the largest unit that fits: `45 s`, `1 min`, `1.5 h`, `2 days`."""
    for unit, size, up_to in (("s", 1, 60), ("min", 60, 3600), ("h", 3600, 48 * 3600)):
        if seconds < up_to:
            return f"{_number(seconds / size)} {unit}"
    return f"{_number(seconds / 86400)} days"


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == round(value) else f"{value:.1f}"


def target_words(target: str) -> str:
    """`InventoryItem:SKU-0012` -> `inventory item SKU-0012`: the record an action changes,
    in words, with the key a person searches for."""
    entity, _, key = target.partition(":")
    if not key:
        return target
    words = re.sub(r"(?<!^)([A-Z])", r" \1", entity).lower()
    return f"{words} {key}"


def shown(value: Any) -> str:
    """A field's value in a table cell: nested values as compact JSON."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
    return str(value)


def pretty(value: Any) -> str:
    """A JSON value laid out on several lines, for a details block."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def diff_rows(diff: dict[str, Any] | None) -> list[tuple[str, str, str, bool]]:
    """(field, before, after, changed) for every field on either side of a diff."""
    if not diff:
        return []
    before, after = diff.get("before") or {}, diff.get("after") or {}
    names = list(dict.fromkeys([*before, *after]))
    return [
        (name, shown(before.get(name)), shown(after.get(name)), before.get(name) != after.get(name))
        for name in names
    ]


FIELD_LABELS = {
    "on_hand": "On hand",
    "reserved": "Reserved for orders",
    "available": "Available to sell",
    "location": "Location",
    "outstanding": "Outstanding balance",
    "credited_on_order": "Credited on this order",
    "credit_limit": "Credit limit",
    "available_credit": "Available credit",
    "currency": "Currency",
    "status": "Status",
    "email": "E-mail",
    "phone": "Phone",
    "contacts": "Contacts",
    "total": "Order total",
    "customer_id": "Customer",
    "order_id": "Order",
    "reservations": "Stock reserved",
    "sku": "Item (SKU)",
    "delta": "Change in stock",
    "reason": "Reason given",
    "amount": "Amount",
    "reference": "Bank reference",
    "lines": "Order lines",
    "quantity": "Quantity",
    "role": "Role",
    "name": "Name",
}
MONEY_FIELDS = frozenset(
    {"outstanding", "credited_on_order", "credit_limit", "available_credit", "total", "amount"}
)


def field_label(name: str) -> str:
    """`on_hand` -> `On hand`: the words a field is shown with."""
    if name in FIELD_LABELS:
        return FIELD_LABELS[name]
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def value_words(name: str, value: Any, currency: str | None = None) -> str:
    """A field's value for a person: money with its currency, records as `Label: value`
    pairs and lists of them one after another, never JSON."""
    if name in MONEY_FIELDS and value is not None and not isinstance(value, dict | list):
        return money(value, currency)
    if isinstance(value, dict):
        return ", ".join(
            f"{field_label(k)}: {value_words(k, v, currency)}" for k, v in value.items()
        )
    if isinstance(value, list):
        return "; ".join(value_words(name, item, currency) for item in value) or "none"
    return shown(value)
