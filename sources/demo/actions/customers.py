"""Customer actions: correct a customer's contact data in the CRM."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import Field, StringConstraints, model_validator

from sources.actions import ActionInput, Effect, Plan
from sources.errors import SourceConflict
from sources.http import HttpConnector

Email = Annotated[
    str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$", max_length=254)
]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9 ()./-]{5,24}$")]


class ContactInput(ActionInput):
    """A person at the customer."""

    name: str = Field(min_length=1, max_length=120)
    email: Email
    role: str = Field(min_length=1, max_length=80)


class UpdateCustomerContactInput(ActionInput):
    """New contact data for a customer; fields left out stay as they are."""

    customer_id: str = Field(min_length=1, max_length=32)
    email: Email | None = None
    phone: Phone | None = None
    contacts: list[ContactInput] | None = Field(default=None, max_length=20)

    @model_validator(mode="after")
    def _something_to_change(self) -> UpdateCustomerContactInput:
        if self.email is None and self.phone is None and self.contacts is None:
            raise ValueError("give at least one of email, phone, contacts")
        return self


_CHANGEABLE = ("email", "phone", "contacts")


class UpdateCustomerContact:
    """customer.update_contact: a PATCH to the CRM, bound to the version that was read."""

    kind: ClassVar[str] = "customer.update_contact"
    mutation: ClassVar[str] = "updateCustomerContact"
    entity: ClassVar[str] = "Customer"
    summary: ClassVar[str] = "Change a customer's e-mail, phone or contacts in the CRM."
    Input: ClassVar[type[ActionInput]] = UpdateCustomerContactInput
    pii_fields: ClassVar[frozenset[str]] = frozenset({"email", "phone", "contacts"})
    creates: ClassVar[bool] = False

    def target(self, data: UpdateCustomerContactInput) -> str:
        return data.customer_id

    def policy_input(self, data: UpdateCustomerContactInput) -> dict[str, Any]:
        return {"fields": [name for name in _CHANGEABLE if getattr(data, name) is not None]}

    def amount(self, data: UpdateCustomerContactInput) -> Decimal | None:
        return None

    def touched(self, data: UpdateCustomerContactInput, plan: Plan) -> list[tuple[str, str]]:
        return []

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
    dumped = data.model_dump(include=set(_CHANGEABLE), exclude_none=True)
    return dict(dumped)
