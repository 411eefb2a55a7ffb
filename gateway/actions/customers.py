"""Customer actions: correct a customer's contact data in the CRM."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import Field, StringConstraints, model_validator

from gateway.actions.base import ActionInput, Plan, WriteEnv

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

    async def plan(self, data: UpdateCustomerContactInput, env: WriteEnv) -> Plan:
        customer = await env.crm.read("Customer", data.customer_id)
        if customer is None:
            return Plan.refused(
                f"unknown customer {data.customer_id}", "customerId", "KNOWN_CUSTOMER"
            )
        changes = _changes(data)
        before = {name: customer.data[name] for name in changes}
        return Plan(customer.version, customer, before, {**before, **changes})

    async def execute(
        self, data: UpdateCustomerContactInput, plan: Plan, env: WriteEnv, *, idempotency_key: str
    ) -> dict[str, Any]:
        record = await env.crm.update(
            "Customer",
            data.customer_id,
            _changes(data),
            idempotency_key=idempotency_key,
            if_version=plan.target_version,
        )
        return {"version": record.version}


def _changes(data: UpdateCustomerContactInput) -> dict[str, Any]:
    dumped = data.model_dump(include=set(_CHANGEABLE), exclude_none=True)
    return dict(dumped)
