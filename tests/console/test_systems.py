"""The sources page: systems of record and their health, entities and their SLAs."""

from __future__ import annotations

from tests.console.flows import Console, csrf_token


def test_sources_lists_every_system_and_entity_sla(console: Console) -> None:
    with console.signed_in("sam") as sam:
        response = sam.get("/console/sources")
    page = response.text
    assert response.status_code == 200
    for system in ("erp", "crm"):
        assert f"<h3>{system} " in page
    for entity in ("Customer", "InventoryItem", "Order", "Balance"):
        assert f'<th scope="row">{entity}<br>' in page
    assert "Supply Chain &lt;inventory@acme.example&gt;" in page  # escaped, not markup
    assert "<td>10 min</td>" in page  # InventoryItem: stale after 10 minutes


def test_sources_check_now_contacts_every_system(console: Console) -> None:
    with console.signed_in("sam") as sam:
        token = csrf_token(sam.get("/console/sources").text)
        response = sam.post("/console/sources/check", data={"csrf_token": token})
        assert response.status_code == 303
        page = sam.get(response.headers["location"]).text
    assert page.count('<p class="badge good">Answering</p>') == 3  # erp, crm, storefront
    assert "Checked just now." in page


def test_sources_check_without_csrf_token_is_403(console: Console) -> None:
    with console.signed_in("sam") as sam:
        response = sam.post("/console/sources/check", data={})
    assert response.status_code == 403


def test_navigation_shows_only_pages_granted(console: Console) -> None:
    with console.signed_in("sam") as sam:
        page = sam.get("/console/sources").text
    assert 'href="/console/sources"' in page
    assert 'href="/console/approvals"' not in page
    assert 'href="/console/audit"' not in page
    assert "Sam Okafor, Support lead" in page


def test_sources_counts_cached_records_by_freshness(console: Console) -> None:
    console.graphql("olivia", '{ balance(customerId: "C-00042") { customerId } }')
    with console.signed_in("sam") as sam:
        page = sam.get("/console/sources").text
    row = page.split('<th scope="row">Balance<br>', 1)[1].split("</tr>", 1)[0]
    fresh = int(row.split(" fresh</span>", 1)[0].rsplit(">", 1)[1])
    assert fresh >= 1
    assert "0 stale</span>" in row
