"""The write path through GraphQL: mutations, WriteResult, action(s), can, auditEvents."""

from __future__ import annotations

from gateway.services import Services
from tests.factories import run_query

ADJUST = """
mutation($delta: Int!, $key: String, $dry: Boolean! = false) {
  adjustInventory(input: {sku: "SKU-0003", location: "WH-MAD", delta: $delta,
                          reason: "cycle count"}, idempotencyKey: $key, dryRun: $dry) {
    status
    errors { code message field }
    action {
      id kind status principal onBehalfOf channel target
      decision { outcome rule reason approvalsRequired }
      approvers
      validation { field message rule }
      diff { before after freshness { system cached version } }
      traceId
    }
  }
}
"""


async def test_adjust_inventory_mutation_returns_write_result(governed: Services) -> None:
    result = await run_query(
        governed, ADJUST, principal="restock-bot", variables={"delta": 150, "dry": True}
    )
    assert result.errors is None
    payload = result.data["adjustInventory"]
    assert payload["status"] == "DRY_RUN"
    action = payload["action"]
    assert action["decision"]["outcome"] == "review"
    assert action["decision"]["rule"] == "RESTOCK_OVER_LIMIT"
    assert action["approvers"] == []  # only pending actions have approvers to ask
    assert action["diff"]["freshness"]["system"] == "erp"
    assert action["diff"]["after"]["on_hand"] - action["diff"]["before"]["on_hand"] == 150
    assert action["channel"] == "graphql"
    assert action["onBehalfOf"] == "olivia"


async def test_invalid_mutation_input_lists_messages_per_field(governed: Services) -> None:
    result = await run_query(
        governed,
        'mutation { recordPayment(input: {customerId: "C-00001", amount: "-5", currency: "eur",'
        ' reference: ""}) { status errors { code field message } } }',
    )
    assert result.errors is None
    payload = result.data["recordPayment"]
    assert payload["status"] == "INVALID"
    assert {e["field"] for e in payload["errors"]} == {"amount", "currency", "reference"}


async def test_denied_mutation_names_the_rule(governed: Services) -> None:
    result = await run_query(
        governed,
        'mutation { recordPayment(input: {customerId: "C-00001", amount: "5.00", currency: '
        '"EUR", reference: "bank-1"}) { status errors { code message } action { decision '
        "{ rule reason } } } }",
        principal="support-bot",
    )
    payload = result.data["recordPayment"]
    assert payload["status"] == "DENIED"
    assert payload["action"]["decision"]["rule"] == "AGENT_NO_PAYMENTS"
    assert payload["errors"][0]["code"] == "DENIED"


async def test_pending_action_is_followed_approved_and_listed(governed: Services) -> None:
    submitted = await run_query(
        governed, ADJUST, principal="restock-bot", variables={"delta": 120, "key": "pallet-7"}
    )
    action = submitted.data["adjustInventory"]["action"]
    assert submitted.data["adjustInventory"]["status"] == "PENDING_APPROVAL"
    assert action["approvers"] == ["finn"]

    approved = await run_query(
        governed,
        f'mutation {{ approveAction(id: "{action["id"]}", comment: "checked the pallet") '
        "{ status action { status approvals { approver verdict comment } } } }",
        principal="finn",
    )
    assert approved.errors is None
    assert approved.data["approveAction"]["status"] == "APPLIED"
    assert approved.data["approveAction"]["action"]["approvals"] == [
        {"approver": "finn", "verdict": "approve", "comment": "checked the pallet"}
    ]
    followed = await run_query(
        governed, f'{{ action(id: "{action["id"]}") {{ status }} }}', principal="restock-bot"
    )
    assert followed.data["action"]["status"] == "APPLIED"
    listed = await run_query(
        governed, "{ actions(status: APPLIED) { edges { node { id } } } }", principal="olivia"
    )
    assert [e["node"]["id"] for e in listed.data["actions"]["edges"]] == [action["id"]]


async def test_approving_twice_is_a_coded_graphql_error(governed: Services) -> None:
    submitted = await run_query(governed, ADJUST, principal="restock-bot", variables={"delta": 130})
    action_id = submitted.data["adjustInventory"]["action"]["id"]
    approve = f'mutation {{ approveAction(id: "{action_id}") {{ status }} }}'
    await run_query(governed, approve, principal="finn")
    again = await run_query(governed, approve, principal="finn")
    assert again.errors is not None
    assert again.errors[0].extensions == {"code": "ACTION_NOT_PENDING"}
    assert "APPLIED" in again.errors[0].message


async def test_can_answers_without_side_effects(governed: Services) -> None:
    query = (
        '{ can(action: "adjustInventory", input: {sku: "SKU-0003", location: "WH-MAD", '
        'delta: 500, reason: "restock"}) { decision { outcome rule reason } approvers '
        "validation { field } } }"
    )
    result = await run_query(governed, query, principal="restock-bot")
    assert result.errors is None
    assert result.data["can"]["decision"]["outcome"] == "review"
    assert result.data["can"]["decision"]["rule"] == "RESTOCK_OVER_LIMIT"
    assert result.data["can"]["approvers"] == ["finn"]
    denied = await run_query(
        governed,
        '{ can(action: "recordPayment", input: {customerId: "C-00001", amount: "1.00", '
        'currency: "EUR", reference: "x"}) { decision { outcome rule } } }',
        principal="restock-bot",
    )
    assert denied.data["can"]["decision"] == {"outcome": "deny", "rule": "AGENT_NO_PAYMENTS"}
    events, _ = await governed.audit.query(limit=10)
    assert events == []


async def test_audit_events_are_for_compliance_only(governed: Services) -> None:
    await run_query(governed, ADJUST, principal="olivia", variables={"delta": 2})
    query = (
        '{ auditEvents(filter: {principalKind: "human"}) { edges { node { seq event '
        "principal outcome payload hash prevHash } } } }"
    )
    compliance = await run_query(governed, query, principal="carla")
    assert compliance.errors is None
    (edge,) = compliance.data["auditEvents"]["edges"]
    assert edge["node"]["event"] == "action.applied"
    assert edge["node"]["payload"]["decision"]["rule"] == "OPS_WRITES"
    refused = await run_query(governed, query, principal="olivia")
    assert refused.errors is not None
    assert refused.errors[0].extensions == {"code": "FORBIDDEN"}


CONTROL_CHARACTERS = [
    (
        "AdjustInventoryInput",
        "adjustInventory",
        {"sku": "SKU-0003", "location": "WH-MAD", "delta": 1, "reason": "cycle\u0000count"},
        "reason",
    ),
    (
        "RecordPaymentInput",
        "recordPayment",
        {
            "customerId": "C-00001",
            "amount": "5.00",
            "currency": "EUR",
            "reference": "BB\u001b[2JX3",
        },
        "reference",
    ),
    (
        "CancelOrderInput",
        "cancelOrder",
        {"orderId": "SO-100001", "reason": "customer \u202eregnahc"},
        "reason",
    ),
    (
        "UpdateCustomerContactInput",
        "updateCustomerContact",
        {
            "customerId": "C-00001",
            "contacts": [{"name": "Jane\nDoe", "email": "jane@example.com", "role": "buyer"}],
        },
        "contacts.0.name",
    ),
    (
        "PlaceOrderInput",
        "placeOrder",
        {
            "customerId": "C-00001",
            "lines": [{"sku": "SKU-0001\t", "quantity": 1, "location": "WH-\u0085MAD"}],
        },
        "lines.0.location",
    ),
]


async def test_control_characters_in_free_text_are_invalid_naming_the_field(
    services: Services,
) -> None:
    for type_name, mutation, data, field in CONTROL_CHARACTERS:
        result = await run_query(
            services,
            f"mutation($input: {type_name}!) {{ {mutation}(input: $input, dryRun: true) "
            "{ status errors { code field message } } }",
            variables={"input": data},
        )
        assert result.errors is None, result.errors
        payload = result.data[mutation]
        assert payload["status"] == "INVALID", (mutation, payload)
        assert field in {e["field"] for e in payload["errors"]}, (mutation, payload)
        assert any("control characters" in e["message"] for e in payload["errors"])


async def test_tab_and_line_feed_are_kept_in_a_multiline_reason(services: Services) -> None:
    result = await run_query(
        services,
        'mutation { adjustInventory(input: {sku: "SKU-0003", location: "WH-MAD", delta: 1, '
        'reason: "cycle count\\n\\tsee sheet 4"}, dryRun: true) { status errors { field } } }',
    )
    assert result.data is not None
    assert result.data["adjustInventory"] == {"status": "DRY_RUN", "errors": []}


async def test_control_characters_in_approval_texts_are_a_bad_argument(
    services: Services,
) -> None:
    for mutation in (
        'approveAction(id: "A-1", comment: "ok\\u0007")',
        'rejectAction(id: "A-1", reason: "no\\u0000 way")',
        'resolveAction(id: "A-1", applied: true, note: "found \\u001b it")',
    ):
        result = await run_query(services, f"mutation {{ {mutation} {{ status }} }}")
        assert result.errors is not None, mutation
        (error,) = result.errors
        assert error.extensions is not None
        assert error.extensions["code"] == "BAD_ARGUMENT", mutation
        assert "control characters" in error.message
