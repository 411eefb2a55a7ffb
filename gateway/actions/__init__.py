"""Governed actions, one module per domain, each with the same shape:

Input        a pydantic model: shape, ranges, field-level messages
policy_input the attributes policy conditions see (quantity, amount)
plan()       fresh state read through the connector (never the cache), the business
             rules against it, and the exact before/after diff
execute()    the write on the system of record: one SQL transaction, or one HTTP call
             with the idempotency key, a timeout and bounded retries
"""

from gateway.actions.base import ActionKind, Plan, Problem, WriteEnv
from gateway.actions.customers import UpdateCustomerContact
from gateway.actions.inventory import AdjustInventory
from gateway.actions.ledger import IssueCreditNote, RecordPayment
from gateway.actions.orders import CancelOrder, PlaceOrder

KINDS: dict[str, ActionKind] = {
    kind.kind: kind
    for kind in (
        AdjustInventory(),
        PlaceOrder(),
        CancelOrder(),
        RecordPayment(),
        IssueCreditNote(),
        UpdateCustomerContact(),
    )
}

__all__ = ["KINDS", "ActionKind", "Plan", "Problem", "WriteEnv"]
