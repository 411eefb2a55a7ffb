"""The approvers' queue over every pending action: counts, filters, sorting and pages.

    read_filters(query)   -> Filters and what was wrong with the query (each named, ignored)
    counts(items)         yours to decide / someone else's / nobody can approve, over ALL
    matching -> sort -> page_of                      one page of the actions that match
    card(item)            what one card shows: headline, subject, amount, the change

A page link carries the filters and the sort, so paging never loses them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from gateway.actions.store import Action
from gateway.console.access import Viewer
from gateway.console.changes import Row, rows
from gateway.console.history import Decidable, amount_of, seen_by
from gateway.console.wording import utc
from gateway.headlines import headline, subject
from gateway.services import Services
from sources.words import Names, money

SORTS = {
    "deadline": "Approval deadline, soonest first",
    "newest": "Newest request first",
    "oldest": "Oldest request first",
    "amount": "Largest amount first",
}
DEFAULT_SORT = "deadline"


@dataclass(frozen=True, slots=True)
class Filters:
    """What the approver asked the queue for."""

    mine: bool = False
    kind: str = ""
    who: str = ""  # the requester, or the person an agent acts for
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    sort: str = DEFAULT_SORT
    page: int = 1

    def query(self, **changes: Any) -> str:
        """These filters (with `changes`) as a query string, leaving defaults out."""
        chosen = replace(self, **changes)
        values = {
            "mine": "1" if chosen.mine else "",
            "kind": chosen.kind,
            "who": chosen.who,
            "min_amount": "" if chosen.min_amount is None else str(chosen.min_amount),
            "max_amount": "" if chosen.max_amount is None else str(chosen.max_amount),
            "sort": "" if chosen.sort == DEFAULT_SORT else chosen.sort,
            "page": "" if chosen.page == 1 else str(chosen.page),
        }
        return urlencode({k: v for k, v in values.items() if v})

    @property
    def narrowed(self) -> bool:
        """Whether any filter leaves actions out."""
        return bool(self.mine or self.kind or self.who) or self.amounts_set

    @property
    def amounts_set(self) -> bool:
        """Whether an amount range is asked for."""
        return self.min_amount is not None or self.max_amount is not None


@dataclass(frozen=True, slots=True)
class Counts:
    """Pending actions, all of them, by who can decide them."""

    total: int
    yours: int
    others: int
    nobody: int


@dataclass(frozen=True, slots=True)
class Card:
    """One pending action on the queue."""

    item: Decidable
    headline: str
    subject: str
    amount: str | None
    rows: list[Row]


def read_filters(query: Mapping[str, str], *, kinds: set[str]) -> tuple[Filters, list[str]]:
    """The filters a query asks for; a value that makes no sense is named and left out."""
    problems: list[str] = []
    low = _amount(query.get("min_amount", ""), "lowest amount", problems)
    high = _amount(query.get("max_amount", ""), "highest amount", problems)
    if low is not None and high is not None and low > high:
        problems.append(f"The lowest amount ({low}) is above the highest ({high}); both ignored.")
        low = high = None
    kind = query.get("kind", "")
    if kind and kind not in kinds:
        problems.append(f"There is no kind of action “{kind}”; showing every kind.")
        kind = ""
    sort = query.get("sort", "") or DEFAULT_SORT
    if sort not in SORTS:
        problems.append(f"“{sort}” is not a way to sort; sorted by approval deadline.")
        sort = DEFAULT_SORT
    page = query.get("page", "") or "1"
    if not page.isdigit() or int(page) < 1:
        problems.append(f"“{page}” is not a page number; showing the first page.")
        page = "1"
    mine = query.get("mine", "") not in ("", "0")
    filters = Filters(mine, kind, query.get("who", "").strip(), low, high, sort, int(page))
    return filters, problems


def _amount(value: str, label: str, problems: list[str]) -> Decimal | None:
    if not value.strip():
        return None
    try:
        amount = Decimal(value.strip().replace(",", ""))
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount < 0:
        problems.append(f"The {label} “{value}” is not an amount like 1000 or 250.50; ignored.")
        return None
    return amount


def counts(items: Sequence[Decidable]) -> Counts:
    """How many pending actions this approver can decide, others can, nobody can."""
    nobody = sum(1 for i in items if i.stuck is not None)
    yours = sum(1 for i in items if i.refusal is None and i.stuck is None)
    return Counts(len(items), yours, len(items) - yours - nobody, nobody)


def matching(items: list[Decidable], filters: Filters, services: Services) -> list[Decidable]:
    """The items the filters keep."""
    kept = []
    for item in items:
        action = item.action
        if filters.mine and (item.refusal is not None or item.stuck is not None):
            continue
        if filters.kind and action.kind != filters.kind:
            continue
        if filters.who and filters.who not in (action.principal, action.on_behalf_of):
            continue
        if filters.amounts_set and not _within(amount_of(services, action), filters):
            continue
        kept.append(item)
    return kept


def _within(amount: Decimal | None, filters: Filters) -> bool:
    if amount is None:  # no money at stake: outside any amount range
        return False
    if filters.min_amount is not None and amount < filters.min_amount:
        return False
    return filters.max_amount is None or amount <= filters.max_amount


def sort(items: list[Decidable], how: str, services: Services) -> list[Decidable]:
    """The items in the order asked for; ties by deadline, then id, so pages are stable."""
    if how == "amount":
        return sorted(items, key=lambda i: -(amount_of(services, i.action) or Decimal(-1)))
    if how in ("newest", "oldest"):
        by_age = sorted(items, key=lambda i: (utc(i.action.created_at), i.action.id))
        return by_age[::-1] if how == "newest" else by_age
    return sorted(items, key=lambda i: (_deadline(i.action), i.action.id))


def _deadline(action: Action) -> datetime:
    return utc(action.expires_at or action.created_at)


def page_of(items: list[Decidable], page: int, size: int) -> tuple[list[Decidable], int]:
    """Page `page` (from 1) of `items`, and how many pages there are."""
    pages = max(1, -(-len(items) // size))
    start = (min(page, pages) - 1) * size
    return items[start : start + size], pages


def requesters(actions: Sequence[Action]) -> list[str]:
    """Everyone who asked for, or on whose behalf an agent asked for, a pending action."""
    found = {a.principal for a in actions} | {a.on_behalf_of for a in actions if a.on_behalf_of}
    return sorted(found)


def card(services: Services, viewer: Viewer, item: Decidable, names: Names) -> Card:
    """What one card shows."""
    action = item.action
    seen = seen_by(services, viewer, action, names)
    amount = amount_of(services, action)
    return Card(
        item,
        headline(action, services.catalog, names),
        subject(action, services.catalog, names),
        None if amount is None else money(amount, seen.currency),
        rows(action, seen),
    )
