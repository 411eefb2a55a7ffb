"""order.place and order.cancel in Tryton: a sale created, quoted and confirmed through
Tryton's own workflow, so its stock and credit-limit checks apply as well as ours.

    place    sale.sale create (reference: the action's mark) -> quote -> confirm
             Tryton refuses (stock, credit limit) -> the sale is cancelled and deleted,
             nothing is left: INVALID with Tryton's message
             find: the sale bearing the mark: confirmed or later (applied), or a draft
             or quotation a crash left (cancelled and deleted: not applied)
    cancel   confirmed -> draft -> cancelled; draft or quotation -> cancelled, with the
             sale's `_timestamp` as read, so a sale changed since is Tryton's CONFLICT;
             a sale Tryton already processes (shipments, invoices) is refused
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from sources.actions import Effect, Plan, Problem
from sources.errors import SourceError, SourceTimeout, SourceUnavailable
from sources.ordertocash import (
    CancelOrderContract,
    CancelOrderInput,
    OrderLineInput,
    PlaceOrderContract,
    PlaceOrderInput,
)
from sources.tryton.connector import TrytonConnector
from sources.tryton_estate.actions.tryton import mark, obeying, read_one

_SALE_DEFAULTS = ["company", "currency", "warehouse", "invoice_method", "shipment_method"]
_PLACED = ("confirmed", "processing", "done")
_CANCELLABLE = ("draft", "quotation", "confirmed")


class PlaceOrder(PlaceOrderContract):
    """order.place: known salable products; Tryton checks stock and the credit limit."""

    async def plan(self, data: PlaceOrderInput, source: TrytonConnector) -> Plan:
        # One round trip's worth of waiting: Tryton answers these reads side by side.
        balance, party, *products = await asyncio.gather(
            source.read("Balance", data.customer_id),
            read_one(source, "party.party", [("code", "=", data.customer_id)], ["addresses"]),
            *(_product(source, line.sku) for line in data.lines),
        )
        if balance is None or party is None:
            return Plan.refused(
                f"unknown customer {data.customer_id}", "customerId", "KNOWN_CUSTOMER"
            )
        plan = Plan(None, balance, None, None, context={"party": party})
        lines = []
        for index, (line, product) in enumerate(zip(data.lines, products, strict=True)):
            if _sold(line, product, f"lines.{index}", plan):
                lines.append({**_priced(line, product), "quantity": line.quantity})
        total = sum((line["unit_price"] * line["quantity"] for line in lines), Decimal(0))
        plan.context["lines"] = lines
        shown = [
            {
                "sku": line["sku"],
                "quantity": line["quantity"],
                "unit_price": str(line["unit_price"]),
            }
            for line in lines
        ]
        plan.after = {"customer_id": data.customer_id, "lines": shown, "total": str(total)}
        return plan

    async def execute(
        self, data: PlaceOrderInput, plan: Plan, source: TrytonConnector, *, action_id: str
    ) -> dict[str, Any]:
        # A retry of the same action finds what an earlier attempt left: placed (done), or
        # a draft Tryton failed to confirm (discarded now, before placing it again).
        earlier = await self.find_effect(data, source, action_id=action_id, based_on=None)
        if earlier.applied and earlier.result is not None:
            return earlier.result
        sale = await _sale_values(source, plan, mark(action_id))
        (sale_id,) = await obeying(source.rpc.create("sale.sale", [sale]))
        try:
            await obeying(source.rpc.execute("sale.sale", "quote", [sale_id]), "lines")
            await obeying(source.rpc.execute("sale.sale", "confirm", [sale_id]), "lines")
        except Exception as failed:
            if not await _discard(source, sale_id):  # nothing half-placed stays unreported
                raise _left_behind(failed, sale_id, action_id) from failed
            raise
        return await _placed(source, sale_id)

    async def find_effect(
        self,
        data: PlaceOrderInput,
        source: TrytonConnector,
        *,
        action_id: str,
        based_on: str | None,
    ) -> Effect:
        sales = await source.rpc.search_read(
            "sale.sale", [("reference", "=", mark(action_id))], ["state"]
        )
        for sale in sales:
            if sale["state"] in _PLACED:
                return Effect(applied=True, result=await _placed(source, sale["id"]))
        for sale in sales:
            if sale["state"] in ("draft", "quotation"):
                await _discard(source, sale["id"])  # a crash left it unconfirmed
        return Effect(applied=False)


class CancelOrder(CancelOrderContract):
    """order.cancel: a sale Tryton has not started to ship or invoice."""

    async def plan(self, data: CancelOrderInput, source: TrytonConnector) -> Plan:
        order = await source.read("Order", data.order_id)
        sale = await read_one(source, "sale.sale", [("number", "=", data.order_id)], ["state"])
        if order is None or sale is None:
            return Plan.refused(f"unknown order {data.order_id}", "orderId", "KNOWN_ORDER")
        before = {"status": order.data["status"], "tryton_state": sale["state"]}
        after = {"status": "cancelled", "tryton_state": "cancelled"}
        plan = Plan(order.version, order, before, after, context={"sale": sale})
        if sale["state"] == "cancelled":
            plan.problems.append(
                Problem(f"order {data.order_id} is already cancelled", "orderId", "ORDER_OPEN")
            )
        elif sale["state"] not in _CANCELLABLE:
            plan.problems.append(
                Problem(
                    f"Tryton is already {sale['state']} order {data.order_id} (its shipments "
                    "and invoices exist): cancel those in Tryton",
                    "orderId",
                    "TRYTON_WORKFLOW",
                )
            )
        return plan

    async def execute(
        self, data: CancelOrderInput, plan: Plan, source: TrytonConnector, *, action_id: str
    ) -> dict[str, Any]:
        sale = plan.context["sale"]
        timestamps = {sale["id"]: plan.target_version} if plan.target_version else None
        if sale["state"] == "confirmed":  # Tryton cancels a confirmed sale from draft
            await obeying(
                source.rpc.execute("sale.sale", "draft", [sale["id"]], timestamps=timestamps)
            )
            timestamps = None
        await obeying(
            source.rpc.execute("sale.sale", "cancel", [sale["id"]], timestamps=timestamps)
        )
        return {"order_id": data.order_id, "status": "cancelled"}

    async def find_effect(
        self,
        data: CancelOrderInput,
        source: TrytonConnector,
        *,
        action_id: str,
        based_on: str | None,
    ) -> Effect:
        sale = await read_one(source, "sale.sale", [("number", "=", data.order_id)], ["state"])
        cancelled = sale is not None and sale["state"] == "cancelled"
        result = {"order_id": data.order_id, "status": "cancelled"} if cancelled else None
        return Effect(applied=cancelled, result=result)


async def _product(source: TrytonConnector, sku: str) -> dict[str, Any] | None:
    """The product of a SKU, with what an order line needs of it."""
    fields = ["default_uom", "list_price_used", "salable"]
    return await read_one(source, "product.product", [("code", "=", sku)], fields)


def _sold(line: OrderLineInput, product: dict[str, Any] | None, field: str, plan: Plan) -> bool:
    """Whether the line's product exists and is sold; if not, the problem is in the plan."""
    if product is None:
        plan.problems.append(Problem(f"unknown SKU {line.sku}", f"{field}.sku", "KNOWN_SKU"))
        return False
    if not product["salable"]:
        plan.problems.append(Problem(f"{line.sku} is not sold", f"{field}.sku", "ACTIVE_SKU"))
        return False
    return True


def _priced(line: OrderLineInput, product: dict[str, Any]) -> dict[str, Any]:
    return {
        "sku": line.sku,
        "product": product["id"],
        "unit": product["default_uom"],
        "unit_price": product["list_price_used"] or Decimal(0),
    }


async def _sale_values(source: TrytonConnector, plan: Plan, reference: str) -> dict[str, Any]:
    """A new sale for the plan's party and lines, with Tryton's own defaults."""
    defaults = await source.rpc.call("model.sale.sale.default_get", _SALE_DEFAULTS, False)
    addresses = plan.context["party"]["addresses"]
    address = addresses[0] if addresses else None
    lines = [
        {
            "type": "line",
            "product": line["product"],
            "quantity": line["quantity"],
            "unit": line["unit"],
            "unit_price": line["unit_price"],
        }
        for line in plan.context["lines"]
    ]
    return {
        **{k: v for k, v in defaults.items() if k in _SALE_DEFAULTS},
        "party": plan.context["party"]["id"],
        "invoice_address": address,
        "shipment_address": address,
        "reference": reference,
        "description": "Placed through Gatehouse",
        "lines": [["create", lines]],
    }


async def _placed(source: TrytonConnector, sale_id: int) -> dict[str, Any]:
    """What an order placed in Tryton came to."""
    (sale,) = await source.rpc.read("sale.sale", [sale_id], ["number", "state", "total_amount"])
    return {"order_id": sale["number"], "status": sale["state"], "total": str(sale["total_amount"])}


async def _discard(source: TrytonConnector, sale_id: int) -> bool:
    """Cancel and delete a sale the gateway created but did not confirm; False when Tryton
    could not be asked (a retry or recovery finds the sale by its mark and discards it)."""
    try:
        await source.rpc.execute("sale.sale", "cancel", [sale_id])
        await source.rpc.delete("sale.sale", [sale_id])
    except SourceError:
        return False
    return True


class SaleLeftBehind(SourceUnavailable):
    """Tryton failed between creating a sale and confirming it, and could not be asked to
    cancel it: the action says which sale is left, in words a caller may see."""

    public_detail = True


def _left_behind(failed: Exception, sale_id: int, action_id: str) -> Exception:
    """The failure, saying which unconfirmed sale it left in Tryton and what clears it."""
    if not isinstance(failed, SourceUnavailable | SourceTimeout):
        return failed
    return SaleLeftBehind(
        failed.source,
        f"Tryton failed before the sale was confirmed; the unconfirmed sale it created (id "
        f"{sale_id}, reference {mark(action_id)}) could not be cancelled: retrying the action "
        "cancels it first",
    )
