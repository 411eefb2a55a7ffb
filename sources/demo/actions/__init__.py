"""The demo estate's governed actions, one module per domain, each with the same shape:

Input        a pydantic model: shape, ranges, field-level messages
policy_input the attributes policy conditions see (quantity, amount)
plan()       fresh state read through the bound source (never the cache), the business
             rules against it, and the exact before/after diff
execute()    the write on the system of record: one SQL transaction that also journals the
             action's id, or one HTTP call with the action's own idempotency key
find_effect  after a crash: the journal, or the same call resent under the same key

The demo TOML binds the ERP actions to the `erp` source and the contact change to `crm`.
"""
