"""Storefront actions: set the shop's copy of a SKU's available stock to the ERP's value.

The repair of a drift finding (gateway/drift.py). The ERP is the system of record and is not
touched; the storefront's copy is, so the write is bound to the storefront source and governed,
approved and audited like any other. Its input carries the value to set (the ERP's, as the
finding showed it): the action reaches only the system it is bound to.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sources.actions import ActionInput, Effect, Plan
from sources.errors import SourceError
from sources.http import HttpConnector
from sources.ordertocash import Contract


class SyncStorefrontStockInput(ActionInput):
    """The storefront's available stock for one SKU, as the ERP has it."""

    sku: str = Field(min_length=1, max_length=32, description="The item's SKU.")
    available: int = Field(
        ge=-100_000,
        le=1_000_000,
        description="Units the ERP has available at the shop's warehouse.",
    )
    reason: str = Field(
        default="drift repair",
        min_length=3,
        max_length=500,
        description="Why, for the audit trail.",
    )


class SyncStorefrontStock(Contract):
    """storefront.sync_stock: the storefront's copy of one SKU's available stock, set."""

    kind: ClassVar[str] = "storefront.sync_stock"
    mutation: ClassVar[str] = "syncStorefrontStock"
    entity: ClassVar[str] = "InventoryItem"
    summary: ClassVar[str] = "Set the storefront's copy of one item's available stock."
    Input: ClassVar[type[ActionInput]] = SyncStorefrontStockInput

    def target(self, data: SyncStorefrontStockInput) -> str:
        return data.sku

    def policy_input(self, data: SyncStorefrontStockInput) -> dict[str, Any]:
        return {"available": data.available}

    async def plan(self, data: SyncStorefrontStockInput, source: HttpConnector) -> Plan:
        held = await source.read(_mapping(source), data.sku)
        if held is None:
            return Plan.refused(f"the storefront has no SKU {data.sku}", "sku", "KNOWN_SKU")
        before = {"available": held.data["value"]}
        return Plan(held.version, held, before, {"available": data.available})

    async def execute(
        self, data: SyncStorefrontStockInput, plan: Plan, source: HttpConnector, *, action_id: str
    ) -> dict[str, Any]:
        return await _set(data, source, action_id)

    async def find_effect(
        self,
        data: SyncStorefrontStockInput,
        source: HttpConnector,
        *,
        action_id: str,
        based_on: str | None,
    ) -> Effect | None:
        """The same PATCH under the same key: replayed if it applied, applied now if not
        (setting a value twice is setting it once)."""
        try:
            return Effect(True, await _set(data, source, action_id))
        except SourceError:
            return None


def _mapping(source: HttpConnector) -> str:
    # The storefront's stock copy as the gateway maps it on this source ([entities.
    # InventoryItem.copies.*]): the action reads and writes through that mapping, so the
    # source's timeout and breaker apply.
    found = [name for name in source.copies() if name.startswith("InventoryItem copy ")]
    if len(found) != 1:
        raise SourceError(source.name, "expected one InventoryItem copy held by this source")
    return found[0]


async def _set(
    data: SyncStorefrontStockInput, source: HttpConnector, action_id: str
) -> dict[str, Any]:
    record = await source.update(
        _mapping(source),
        data.sku,
        {"available": data.available},
        idempotency_key=f"gatehouse-{action_id}",
    )
    return {"sku": record.key, "available": record.data["value"]}
