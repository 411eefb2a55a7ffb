"""customer.update_contact in Tryton: the party's e-mail and phone contact mechanisms,
written through the party with its `_timestamp` as read, so Tryton refuses a party that
changed since (CONFLICT). Writing the same values again changes nothing, so recovery asks
whether the party holds them now.
"""

from __future__ import annotations

from typing import Any

from sources.actions import Effect, Plan
from sources.ordertocash import UpdateCustomerContactContract, UpdateCustomerContactInput
from sources.tryton.connector import TrytonConnector
from sources.tryton_estate.actions.tryton import obeying, read_one

_MECHANISMS = ("email", "phone")


class UpdateCustomerContact(UpdateCustomerContactContract):
    """customer.update_contact: the party's first e-mail and phone, created if missing."""

    async def plan(self, data: UpdateCustomerContactInput, source: TrytonConnector) -> Plan:
        if data.contacts is not None:
            return Plan.refused(
                "Tryton keeps a party's contacts as contact mechanisms: change email and phone",
                "contacts",
                "SUPPORTED_FIELDS",
            )
        customer = await source.read("Customer", data.customer_id)
        party = await read_one(
            source, "party.party", [("code", "=", data.customer_id)], ["contact_mechanisms"]
        )
        if customer is None or party is None:
            return Plan.refused(
                f"unknown customer {data.customer_id}", "customerId", "KNOWN_CUSTOMER"
            )
        before = {name: customer.data.get(name) for name in _MECHANISMS}
        changes = {name: getattr(data, name) for name in _MECHANISMS if getattr(data, name)}
        mechanisms = await source.rpc.read(
            "party.contact_mechanism", party["contact_mechanisms"], ["type", "value"]
        )
        context = {"party": party["id"], "mechanisms": mechanisms}
        return Plan(customer.version, customer, before, {**before, **changes}, context=context)

    async def execute(
        self,
        data: UpdateCustomerContactInput,
        plan: Plan,
        source: TrytonConnector,
        *,
        action_id: str,
    ) -> dict[str, Any]:
        party = plan.context["party"]
        operations = _operations(data, plan.context["mechanisms"])
        timestamps = {party: plan.target_version} if plan.target_version else None
        await obeying(
            source.rpc.write(
                "party.party", [party], {"contact_mechanisms": operations}, timestamps=timestamps
            )
        )
        return {"customer_id": data.customer_id, "changed": sorted(_changed(data))}

    async def find_effect(
        self,
        data: UpdateCustomerContactInput,
        source: TrytonConnector,
        *,
        action_id: str,
        based_on: str | None,
    ) -> Effect:
        customer = await source.read("Customer", data.customer_id)
        holds = customer is not None and all(
            customer.data.get(name) == value for name, value in _changed(data).items()
        )
        result = {"customer_id": data.customer_id, "changed": sorted(_changed(data))}
        return Effect(applied=holds, result=result if holds else None)


def _changed(data: UpdateCustomerContactInput) -> dict[str, str]:
    return {name: getattr(data, name) for name in _MECHANISMS if getattr(data, name)}


def _operations(
    data: UpdateCustomerContactInput, mechanisms: list[dict[str, Any]]
) -> list[list[Any]]:
    """Tryton's one-to-many operations: rewrite the first mechanism of a type, or add one."""
    operations: list[list[Any]] = []
    for kind, value in _changed(data).items():
        existing = next((m for m in mechanisms if m["type"] == kind), None)
        if existing is None:
            operations.append(["create", [{"type": kind, "value": value}]])
        else:
            operations.append(["write", [existing["id"]], {"value": value}])
    return operations
