"""Customer actions: correct a customer's contact data in the CRM."""

from __future__ import annotations

from typing import Any

from sources.actions import Effect, Plan
from sources.errors import SourceConflict
from sources.http import HttpConnector
from sources.ordertocash import (
    CHANGEABLE,
    UpdateCustomerContactContract,
    UpdateCustomerContactInput,
)


class UpdateCustomerContact(UpdateCustomerContactContract):
    """customer.update_contact: a PATCH to the CRM, bound to the version that was read."""

    async def plan(self, data: UpdateCustomerContactInput, source: HttpConnector) -> Plan:
        customer = await source.read("Customer", data.customer_id)
        if customer is None:
            return Plan.refused(
                f"unknown customer {data.customer_id}", "customerId", "KNOWN_CUSTOMER"
            )
        changes = _changes(data)
        before = {name: customer.data[name] for name in changes}
        return Plan(customer.version, customer, before, {**before, **changes})

    async def execute(
        self, data: UpdateCustomerContactInput, plan: Plan, source: HttpConnector, *, action_id: str
    ) -> dict[str, Any]:
        return await _patch(data, source, action_id, plan.target_version)

    async def find_effect(
        self,
        data: UpdateCustomerContactInput,
        source: HttpConnector,
        *,
        action_id: str,
        based_on: str | None,
    ) -> Effect:
        """The same PATCH under the same key: the CRM replays it if it applied it, or applies
        it now against the version that was validated; a changed record means it never did."""
        try:
            return Effect(True, await _patch(data, source, action_id, based_on))
        except SourceConflict:
            return Effect(False)


async def _patch(
    data: UpdateCustomerContactInput, source: HttpConnector, action_id: str, version: str | None
) -> dict[str, Any]:
    # The action's own id is the CRM's idempotency key: unique across principals and kept
    # by retries of the action, never a client's key that another principal may also use.
    record = await source.update(
        "Customer",
        data.customer_id,
        _changes(data),
        idempotency_key=f"gatehouse-{action_id}",
        if_version=version,
    )
    return {"version": record.version}


def _changes(data: UpdateCustomerContactInput) -> dict[str, Any]:
    dumped = data.model_dump(include=set(CHANGEABLE), exclude_none=True)
    return dict(dumped)
