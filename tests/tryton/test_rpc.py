"""TrytonRpc against a real trytond over a seeded PostgreSQL copy, and against a stub."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from sources.errors import (
    SourceConflict,
    SourceDataError,
    SourceRefused,
    SourceRejected,
    SourceTimeout,
    SourceUnavailable,
)
from sources.tryton import TrytonRpc
from sources.tryton_estate.server import TrytonServer
from tests.tryton.conftest import ServerFactory, StubTryton, rpc_for
from tests.tryton.estate import PASSWORD

pytestmark = pytest.mark.postgres


async def _party(rpc: TrytonRpc, code: str, fields: list[str]) -> dict[str, Any]:
    (party,) = await rpc.search_read("party.party", [("code", "=", code)], fields)
    return party


async def _draft_sale(rpc: TrytonRpc, code: str, sku: str, quantity: float) -> int:
    party = await _party(rpc, code, ["addresses"])
    (product,) = await rpc.search_read(
        "product.product", [("code", "=", sku)], ["default_uom", "list_price_used"]
    )
    line = {
        "product": product["id"],
        "quantity": quantity,
        "unit": product["default_uom"],
        "unit_price": product["list_price_used"],
    }
    (sale_id,) = await rpc.create(
        "sale.sale",
        [
            {
                "party": party["id"],
                "invoice_address": party["addresses"][0],
                "shipment_address": party["addresses"][0],
                "lines": [["create", [line]]],
            }
        ],
    )
    return sale_id


async def test_rpc_login_reads_party_with_contact_mechanisms(rpc: TrytonRpc) -> None:
    party = await _party(
        rpc, "C-00002", ["name", "email", "phone", "contact_mechanisms", "write_date"]
    )
    mechanisms = await rpc.read(
        "party.contact_mechanism", party["contact_mechanisms"], ["type", "value"]
    )

    assert rpc.context["company"] > 0
    assert party["name"] == "Brightline Tools"
    assert party["email"] == "buying@brightline.example"
    assert {(m["type"], m["value"]) for m in mechanisms} == {
        ("email", "buying@brightline.example"),
        ("phone", "+32 2 555 01 02"),
    }
    assert party["write_date"].tzinfo is dt.UTC


async def test_rpc_product_quantity_needs_warehouse_in_context(rpc: TrytonRpc) -> None:
    fields = ["quantity", "forecast_quantity"]
    domain = [("code", "=", "SKU-1001")]
    warehouse = {"locations": [rpc.context["warehouse"]]}

    (everywhere,) = await rpc.search_read("product.product", domain, fields)
    (in_warehouse,) = await rpc.search_read("product.product", domain, fields, context=warehouse)

    # Without locations Tryton answers 0, not an error: the context is not optional.
    assert everywhere["quantity"] == 0
    assert in_warehouse["quantity"] == 120
    assert in_warehouse["forecast_quantity"] == 110  # 10 on the seeded sale's shipment


async def test_rpc_decimal_and_date_round_trip(rpc: TrytonRpc) -> None:
    sale_id = await _draft_sale(rpc, "C-00004", "SKU-1004", 3)
    day = dt.date(dt.date.today().year, 1, 15)  # noqa: DTZ011 - in the seeded fiscal year

    await rpc.write("sale.sale", [sale_id], {"sale_date": day, "reference": "PO-1"})
    (line_id,) = (await rpc.read("sale.sale", [sale_id], ["lines"]))[0]["lines"]
    await rpc.write("sale.line", [line_id], {"unit_price": Decimal("9.1234")})
    (sale,) = await rpc.read("sale.sale", [sale_id], ["sale_date", "untaxed_amount", "state"])

    assert sale["sale_date"] == day
    assert sale["untaxed_amount"] == Decimal("27.37")
    assert isinstance(sale["untaxed_amount"], Decimal)
    assert sale["state"] == "draft"


async def test_rpc_confirm_over_credit_limit_refused_with_trytons_message(
    rpc: TrytonRpc,
) -> None:
    sale_id = await _draft_sale(rpc, "C-00003", "SKU-1002", 20)
    await rpc.execute("sale.sale", "quote", [sale_id])

    with pytest.raises(SourceRefused) as refused:
        await rpc.execute("sale.sale", "confirm", [sale_id])

    assert refused.value.code == "SOURCE_REFUSED"
    assert refused.value.detail == (
        'The party "Cobalt Cafe" will exceed their €300.00 credit limit by €2580.00.'
    )
    (sale,) = await rpc.read("sale.sale", [sale_id], ["state"])
    assert sale["state"] == "quotation"


async def test_rpc_write_with_stale_timestamp_conflicts(rpc: TrytonRpc) -> None:
    party = await _party(rpc, "C-00006", ["_timestamp"])
    stale = {party["id"]: party["_timestamp"]}
    await rpc.write("party.party", [party["id"]], {"name": "Fjord Outfitters AS"})

    with pytest.raises(SourceConflict) as conflict:
        await rpc.write("party.party", [party["id"]], {"name": "Lost"}, timestamps=stale)

    assert conflict.value.current_version is None
    assert (await _party(rpc, "C-00006", ["name"]))["name"] == "Fjord Outfitters AS"


async def test_rpc_wrong_password_rejected_clearly(tryton_server: TrytonServer) -> None:
    async with rpc_for(tryton_server, password="not-the-password") as client:
        with pytest.raises(SourceRejected) as rejected:
            await client.login()

    message = str(rejected.value)
    assert message.startswith("source 'tryton': login to database")
    assert "wrong user or password" in message
    assert "not-the-password" not in message


async def test_rpc_wrong_database_named_in_error(tryton_server: TrytonServer) -> None:
    # trytond over PostgreSQL answers 404 for an unknown database only after 30 s.
    client = TrytonRpc(
        "tryton",
        url=tryton_server.url,
        database="no_such_db",
        user="gatehouse",
        password="x",
        timeout=0.5,
    )
    async with client:
        with pytest.raises(SourceTimeout) as timed_out:
            await client.ping()

    assert "login to database 'no_such_db'" in str(timed_out.value)
    assert "does the database exist?" in str(timed_out.value)


async def test_rpc_unknown_database_404_rejected_clearly(stub_tryton: StubTryton) -> None:
    stub_tryton.answer(404, "text/html", b"<!doctype html><title>404 Not Found</title>")

    async with TrytonRpc(
        "tryton", url=stub_tryton.url, database="nope", user="u", password=PASSWORD
    ) as client:
        with pytest.raises(SourceRejected, match="database 'nope' does not exist"):
            await client.login()


async def test_rpc_server_killed_unavailable(tryton_servers: ServerFactory) -> None:
    server = tryton_servers()
    async with rpc_for(server) as client:
        await client.ping()
        server.kill()
        with pytest.raises(SourceUnavailable):
            await client.ping()


async def test_rpc_expired_session_renewed_once(tryton_servers: ServerFactory) -> None:
    server = tryton_servers(session_max_age=1)
    logins: list[str] = []

    class Counting(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if json.loads(request.content)["method"] == "common.db.login":
                logins.append("login")
            return await super().handle_async_request(request)

    async with rpc_for(server, transport=Counting()) as client:
        await client.ping()
        await _sleep_past_session(1.2)
        await client.ping()

    assert logins == ["login", "login"]


async def _sleep_past_session(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_rpc_refused_session_after_renewal_rejected(stub_tryton: StubTryton) -> None:
    stub_tryton.answer_json({"id": 1, "result": [2, "token", None]})
    stub_tryton.answer_json({"id": 2, "result": {"company": 1}})
    stub_tryton.answer(401, "text/html", b"<html>Unauthorized</html>")
    stub_tryton.answer_json({"id": 4, "result": [2, "token2", None]})
    stub_tryton.answer_json({"id": 5, "result": {"company": 1}})
    stub_tryton.answer(401, "text/html", b"<html>Unauthorized</html>")

    async with TrytonRpc(
        "tryton", url=stub_tryton.url, database="db", user="u", password=PASSWORD
    ) as client:
        with pytest.raises(SourceRejected, match="HTTP 401"):
            await client.call("model.party.party.search", [])

    assert stub_tryton.methods.count("common.db.login") == 2


async def test_rpc_html_answer_data_error(stub_tryton: StubTryton) -> None:
    stub_tryton.answer(200, "text/html", b"<html><body>Welcome to nginx</body></html>")

    async with TrytonRpc(
        "tryton", url=stub_tryton.url, database="db", user="u", password=PASSWORD
    ) as client:
        with pytest.raises(SourceDataError, match="not JSON"):
            await client.login()


async def test_rpc_user_warning_refused(stub_tryton: StubTryton) -> None:
    stub_tryton.answer_json({"id": 1, "result": [2, "token", None]})
    stub_tryton.answer_json({"id": 2, "result": {"company": 1}})
    warning = ["UserWarning", ["credit_limit_amount.1", "Over the credit limit. ", ""]]
    stub_tryton.answer_json({"id": 3, "error": warning})

    async with TrytonRpc(
        "tryton", url=stub_tryton.url, database="db", user="u", password=PASSWORD
    ) as client:
        with pytest.raises(SourceRefused) as refused:
            await client.execute("sale.sale", "confirm", [1])

    assert refused.value.detail == "Over the credit limit."


async def test_rpc_slow_answer_times_out(stub_tryton: StubTryton) -> None:
    stub_tryton.answer_json({"id": 1, "result": [2, "token", None]})
    stub_tryton.delay = 0.5

    async with TrytonRpc(
        "tryton", url=stub_tryton.url, database="db", user="u", password=PASSWORD, timeout=0.1
    ) as client:
        with pytest.raises(SourceTimeout, match=r"no answer within 0\.1s"):
            await client.login()
