"""The approvers' queue: counts over every pending action, deadline order, filters, sorting,
paging that keeps them, readable headlines, and actions nobody can approve.

This module has a gateway of its own (the `console` fixture is per module), so it knows
every pending action there is.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.console.flows import Console

# An order of C-00101 worth 43,999.54 EUR in the demo ERP: room for the credits below.
CUSTOMER, ORDER = "C-00101", "SO-100432"


def _card(html: str, action_id: str) -> str:
    start = html.index(f'id="action-{action_id}"')
    return html[start : html.find("</article>", start)]


def _ids(html: str) -> list[str]:
    return re.findall(r'<article class="card action[^"]*" id="action-([^"]+)"', html)


def _adjust(console: Console, principal: str, delta: int, sku: str = "SKU-0002") -> str:
    data = console.graphql(
        principal,
        f'mutation {{ adjustInventory(input: {{sku: "{sku}", location: "WH-BER", '
        f'delta: {delta}, reason: "cycle count"}}) {{ status action {{ id }} }} }}',
    )
    assert data["adjustInventory"]["status"] == "PENDING_APPROVAL", data
    action_id: str = data["adjustInventory"]["action"]["id"]
    return action_id


def _credit(console: Console, principal: str, amount: str) -> str:
    data = console.graphql(
        principal,
        f'mutation {{ issueCreditNote(input: {{customerId: "{CUSTOMER}", orderId: "{ORDER}", '
        f'amount: "{amount}", reason: "damaged in transit"}}) {{ status action {{ id }} }} }}',
    )
    assert data["issueCreditNote"]["status"] == "PENDING_APPROVAL", data
    action_id: str = data["issueCreditNote"]["action"]["id"]
    return action_id


@pytest.fixture(scope="module")
def queue(console: Console) -> dict[str, list[str]]:
    """24 pending: 21 restocks olivia's agent asked for (hers to watch, not to decide),
    then two that olivia may decide (sam's) and one credit nobody can complete."""
    restocks = [console.pending_restock(delta=101 + n, sku="SKU-0002") for n in range(21)]
    sams = [_adjust(console, "sam", 1500), _credit(console, "sam", "2000.00")]
    stuck = [_credit(console, "olivia", "6000.00")]  # two approvers needed, only finn left
    return {"restocks": restocks, "sams": sams, "stuck": stuck}


def _get(client: httpx.Client, query: str = "") -> httpx.Response:
    response = client.get(f"/console/approvals{query}")
    assert response.status_code in (200, 400), response.text
    return response


def test_queue_counts_every_pending_action_not_just_the_page(
    console: Console, queue: dict[str, list[str]]
) -> None:
    with console.signed_in("olivia") as olivia:
        first = _get(olivia).text
    # By deadline her two come after the 21 restocks, on page 2; the count says so on page 1.
    assert not set(queue["sams"]) & set(_ids(first))
    assert "<strong>2</strong> waiting for your decision, 21 for someone else" in first
    assert "1 that nobody can approve as things stand" in first
    assert "24 pending in all" in first
    assert "Page 1 of 2" in first


def test_queue_orders_by_approval_deadline_soonest_first(
    console: Console, queue: dict[str, list[str]]
) -> None:
    soon = (datetime.now(UTC) + timedelta(minutes=5)).replace(tzinfo=None)
    last = queue["restocks"][-1]
    console.sql("UPDATE actions SET expires_at = ? WHERE id = ?", soon.isoformat(" "), last)
    with console.signed_in("finn") as finn:
        ids = _ids(_get(finn).text)
    assert ids[0] == last
    assert ids[1:4] == queue["restocks"][:3]


def test_queue_mine_filter_keeps_only_what_i_can_decide(
    console: Console, queue: dict[str, list[str]]
) -> None:
    with console.signed_in("olivia") as olivia:
        html = _get(olivia, "?mine=1").text
    assert sorted(_ids(html)) == sorted(queue["sams"])
    assert "2 match these filters" in html


def test_queue_filters_by_kind_requester_and_amount(
    console: Console, queue: dict[str, list[str]]
) -> None:
    with console.signed_in("finn") as finn:
        credits = _ids(_get(finn, "?kind=credit_note.issue").text)
        by_sam = _ids(_get(finn, "?who=sam").text)
        for_olivia = _ids(_get(finn, "?who=olivia").text)
        her_credits = _ids(_get(finn, "?who=olivia&kind=credit_note.issue").text)
        large = _ids(_get(finn, "?min_amount=2500").text)
        middle = _ids(_get(finn, "?min_amount=1000&max_amount=2000.00").text)
    assert sorted(credits) == sorted([queue["sams"][1], *queue["stuck"]])
    assert sorted(by_sam) == sorted(queue["sams"])
    assert set(queue["restocks"][:19]) <= set(for_olivia)  # her agent's (and her own credit)
    assert her_credits == queue["stuck"]
    assert large == queue["stuck"]
    assert middle == [queue["sams"][1]]


def test_queue_sorts_by_amount_largest_first(console: Console, queue: dict[str, list[str]]) -> None:
    with console.signed_in("finn") as finn:
        ids = _ids(_get(finn, "?sort=amount").text)
    assert ids[:2] == [queue["stuck"][0], queue["sams"][1]]


def test_queue_pages_keep_filters_and_sort(console: Console, queue: dict[str, list[str]]) -> None:
    with console.signed_in("finn") as finn:
        first = _get(finn, "?who=olivia&sort=newest").text
        found = re.search(r'href="(/console/approvals\?[^"]+)" rel="next"', first)
        assert found is not None
        link = found.group(1).replace("&amp;", "&")
        second = _get(finn, link.removeprefix("/console/approvals")).text
    assert parse_qs(urlsplit(link).query) == {"who": ["olivia"], "sort": ["newest"], "page": ["2"]}
    assert "Page 2 of 2" in second
    assert not set(_ids(first)) & set(_ids(second))
    assert queue["restocks"][0] in _ids(second)  # the oldest, newest first: last page


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("?min_amount=abc", "The lowest amount “abc” is not an amount"),
        ("?max_amount=-5", "The highest amount “-5” is not an amount"),
        ("?min_amount=NaN", "The lowest amount “NaN” is not an amount"),
        ("?min_amount=500&max_amount=100", "The lowest amount (500) is above the highest"),
        ("?kind=nothing.here", "There is no kind of action “nothing.here”"),
        ("?sort=sideways", "“sideways” is not a way to sort"),
        ("?page=0", "“0” is not a page number"),
        ("?page=two", "“two” is not a page number"),
    ],
)
def test_queue_with_bad_filter_says_so_and_shows_the_queue(
    console: Console, queue: dict[str, list[str]], query: str, says: str
) -> None:
    with console.signed_in("finn") as finn:
        response = _get(finn, query)
    assert response.status_code == 400
    assert says in response.text
    assert 'role="alert"' in response.text
    assert len(_ids(response.text)) == 20  # the filter is left out, the queue is still there


def test_queue_page_past_the_end_shows_the_last_page(
    console: Console, queue: dict[str, list[str]]
) -> None:
    with console.signed_in("finn") as finn:
        html = _get(finn, "?page=99").text
    assert "Page 2 of 2" in html
    assert _ids(html)


def test_queue_with_too_long_filter_is_an_html_page(console: Console) -> None:
    with console.signed_in("finn") as finn:
        response = finn.get("/console/approvals", params={"who": "x" * 65})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "That address is not right" in response.text


def test_queue_headline_names_item_units_location_requester_and_owner(
    console: Console, queue: dict[str, list[str]]
) -> None:
    with console.signed_in("finn") as finn:
        card = _card(_get(finn, "?sort=oldest").text, queue["restocks"][0])
    assert "+101 boxes of Wood screw 5x80 mm at WH-BER, requested by restock-bot for olivia" in card
    assert "Wood screw 5x80 mm (box of 500) (SKU-0002) at WH-BER" in card
    assert '<th scope="row">On hand</th>' in card
    assert '<th scope="row">Available to sell</th>' in card
    assert "on_hand" not in card
    assert "<pre>" not in card


def test_queue_credit_card_shows_money_with_currency_and_customer_name(
    console: Console, queue: dict[str, list[str]]
) -> None:
    with console.signed_in("finn") as finn:
        card = _card(_get(finn, "?kind=credit_note.issue").text, queue["sams"][1])
    assert re.search(
        r"Credit note of 2,000\.00 EUR to [^<(]+ \(C-00101\) on order SO-100432, "
        r"requested by sam",
        card,
    )
    assert "<dt>Amount</dt><dd>2,000.00 EUR</dd>" in card
    assert '<th scope="row">Credited on this order</th>' in card
    assert re.search(r"<td>[0-9,]+\.\d\d EUR</td>", card)
    assert "credited_on_order" not in card
    assert "Balance:" not in card


def test_queue_flags_action_nobody_can_approve_and_offers_no_approve_button(
    console: Console, queue: dict[str, list[str]]
) -> None:
    (stuck,) = queue["stuck"]
    with console.signed_in("finn") as finn:
        card = _card(_get(finn, "?kind=credit_note.issue").text, stuck)
        page = finn.get(f"/console/actions/{stuck}").text
    assert "Nobody can approve this as things stand" in card
    assert "it needs 2 more approvals and only 1 person may give one" in card
    assert f"/actions/{stuck}/approve" not in card
    assert f"/actions/{stuck}/reject" in card  # rejecting it clears it from the queue
    assert f"/actions/{stuck}/approve" not in page
    assert "Nobody can approve this as things stand" in page


def test_queue_buttons_are_named_for_their_action(
    console: Console, queue: dict[str, list[str]]
) -> None:
    with console.signed_in("olivia") as olivia:
        card = _card(_get(olivia, "?mine=1&kind=inventory.adjust").text, queue["sams"][0])
    assert 'aria-label="Approve +1500 boxes of Wood screw 5x80 mm at WH-BER, requested by sam"' in (
        card
    )
    assert 'aria-label="Reject +1500 boxes of Wood screw 5x80 mm at WH-BER' in card
