"""The MCP front door for AI agents: the same reads and governed writes as GraphQL.

    tools/list   the tools this agent's policy could ever allow (the rest are not listed)
    tools/call   reads   -> a fixed GraphQL document, run with the agent's context
                 writes  -> pipeline.Writes.submit, channel "mcp"; retry_action -> Writes.retry
                 refusals -> tool errors whose structured content is one `WriteOutput`: the
                            status, the decision, errors named by the tool's own arguments, and
                            the next step as a sentence and as a `Hint`

Served over streamable HTTP at /mcp (the caller's `Authorization: Bearer <api key>`) and over
stdio by `gatehouse mcp` (the key from GATEHOUSE_API_KEY). Tool input schemas are the
actions' pydantic models, the same ones the GraphQL inputs are generated from.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import mcp.types as types
from graphql import OperationDefinitionNode, OperationType, parse
from graphql.error import GraphQLSyntaxError
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.types.graphql import OperationType as StrawberryOperation

from gateway import mcp_follow as follow
from gateway import mcp_resources
from gateway.actions.store import Status
from gateway.catalog import Catalog
from gateway.errors import GatehouseError, Unauthenticated
from gateway.graphql.context import Context
from gateway.graphql.schema import build_schema
from gateway.outcomes import WriteRequest, WriteResult
from gateway.principals import Authenticator, Principal
from gateway.services import Services
from sources.actions import ActionKind

INSTRUCTIONS = (
    "Gatehouse gives you current operational state (customers, inventory, orders, balances) "
    "and governed writes, audited as yours on behalf of your human owner.\n"
    "Freshness: every record read carries `freshness`: its system, when the gateway read it "
    "(`fetchedAt`, `ageSeconds` against its SLA) and `status` FRESH, AGING or STALE (old, or "
    "served from cache because the system is down, with `error`); treat STALE as possibly out "
    "of date. Its `version` is what a write's `expected_version` takes.\n"
    "Masking: fields your policy withholds come back null and are listed in `masked`; null "
    "there is not the real value. A read whose system is down is an error with "
    "`errors: [{code: SOURCE_UNAVAILABLE, source}]` and null data, never 'not found'.\n"
    "Writes: policy decides allow, deny or review; business rules are checked on the "
    "system's current state. A write needing approval returns PENDING_APPROVAL with its "
    "approvers: do not send it again, follow it with get_action. Try dry_run or can_i first "
    "when unsure. Resending with the same idempotency_key never applies a write twice; "
    "dry_run runs every step but the write; expected_version (the target record's "
    "freshness.version) turns a change you never saw into CONFLICT. "
    "Every result has `status`, `next_step` and `hint`: retry_with_new_key, "
    "reread_then_retry, wait_for_approval, call_retry_action or stop.\n"
    "Resources: gatehouse://contracts (systems of record, owners, SLAs, classifications) and "
    "gatehouse://policy/me (what you may read and write, under which limits, who approves)."
)
FRESHNESS = (
    "freshness { system fetchedAt sourceUpdatedAt ageSeconds version status cached error "
    "warnAfterSeconds errorAfterSeconds }"
)


class Args(BaseModel):
    """Tool arguments: unknown arguments are mistakes."""

    model_config = ConfigDict(extra="forbid")


First = "Page size."
After = "Previous page's endCursor."
MaxAge = Field(
    default=None,
    ge=0,
    description="Max cache age; 0 reads now.",
)


class CustomerArgs(Args):
    customer_id: str = Field(min_length=1, description="E.g. C-00001.")
    max_age_seconds: float | None = MaxAge


class FindCustomersArgs(Args):
    search: str | None = Field(default=None, description="Part of a name, e-mail or id.")
    first: int = Field(default=20, ge=1, le=100, description=First)
    after: str | None = Field(default=None, description=After)


class InventoryArgs(Args):
    skus: list[str] | None = Field(default=None, max_length=100, description="SKUs to get.")
    location: str | None = Field(default=None, description="Warehouse code, e.g. WH-BER.")
    below_reorder_point: bool = Field(default=False, description="Only items to restock.")
    first: int = Field(default=50, ge=1, le=200, description=First)
    after: str | None = Field(default=None, description=After)


class OrderArgs(Args):
    order_id: str = Field(min_length=1, description="Order id, e.g. SO-100001.")
    max_age_seconds: float | None = MaxAge


class CustomerOrdersArgs(Args):
    customer_id: str = Field(min_length=1, description="E.g. C-00001.")
    status: str | None = Field(
        default=None, pattern="^(OPEN|SHIPPED|DELIVERED|CANCELLED)$", description="Only these."
    )
    first: int = Field(default=20, ge=1, le=100, description=First)
    after: str | None = Field(default=None, description=After)


class NoArgs(Args):
    pass


class GraphQLArgs(Args):
    query: str = Field(min_length=1, description="A GraphQL query document (no mutations).")
    variables: dict[str, Any] | None = Field(default=None, description="Its variables.")


class ActionArgs(Args):
    action_id: str = Field(min_length=1, description="The id a write tool returned.")


class CanArgs(Args):
    action: str = Field(description="A write tool's name, e.g. adjust_inventory.")
    input: dict[str, Any] = Field(description="The arguments you would call it with.")


class ReadError(BaseModel):
    """A part of a read that failed: SOURCE_UNAVAILABLE is a system down, not 'not found'."""

    code: str
    message: str
    source: str | None = None
    path: str | None = None


class ReadOutput(BaseModel):
    """What a read tool returns: data null with errors when nothing could be read."""

    data: dict[str, Any] | None
    masked: list[str] = []
    errors: list[ReadError] = []


Hint = Literal[
    "retry_with_new_key", "reread_then_retry", "wait_for_approval", "call_retry_action", "stop"
]


class DecisionOutput(BaseModel):
    """What policy decided, and by which rule."""

    outcome: str | None
    rule: str | None
    reason: str | None
    approvals_required: int = 0


class FieldError(BaseModel):
    """Why it did not apply; `argument` is the tool's own argument, snake_case."""

    code: str
    message: str
    argument: str | None = None


class HistoryEvent(BaseModel):
    """One audit event of an action."""

    event: str
    at: str
    principal: str
    outcome: str


class WriteOutput(BaseModel):
    """Every result of a write tool, retry_action, get_action and can_i, refusals too."""

    status: str
    action_id: str | None = None
    decision: DecisionOutput | None = None
    errors: list[FieldError] = []
    current_version: str | None = None
    approvers: list[str] = []
    diff: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    history: list[HistoryEvent] = []
    follow: str | None = None  # the action's resource: listen for its updates
    next_step: str = ""
    hint: Hint | None = None


Run = Callable[["Call", BaseModel], Awaitable[types.CallToolResult]]

_TITLES = {"can_i": "Can I", "graphql_query": "GraphQL query"}

READ_ONLY = types.ToolAnnotations(read_only_hint=True, open_world_hint=False)


def write_annotations(*, destructive: bool) -> types.ToolAnnotations:
    """A governed write: keyed (so idempotent), and only our configured systems (closed world)."""
    return types.ToolAnnotations(  # readOnlyHint false is the default
        destructive_hint=destructive,
        idempotent_hint=True,
        open_world_hint=False,
    )


@dataclass(frozen=True)
class Tool:
    """One MCP tool: its schema, who may see it, what it runs, and hints for clients."""

    name: str
    description: str
    args: type[BaseModel]
    output: type[BaseModel]
    run: Run
    visible: Callable[[Services, Principal], bool]
    annotations: types.ToolAnnotations = field(default_factory=lambda: READ_ONLY)

    @property
    def title(self) -> str:
        """get_customer -> Get customer."""
        return _TITLES.get(self.name) or self.name.replace("_", " ").capitalize()

    def listing(self) -> types.Tool:
        """The tool as tools/list shows it: no output schema (README's "Results" has them),
        and the input schema without what a refusal would say anyway (titles, lengths)."""
        return types.Tool(
            name=self.name,
            title=self.title,
            description=self.description,
            input_schema=compact({**self.args.model_json_schema(), "description": None}),
            annotations=self.annotations,
        )


def compact(schema: Any) -> Any:
    """A JSON schema without titles, lengths or null defaults; `anyOf [X, null]` as X."""
    if isinstance(schema, list):
        return [compact(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    options = schema.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options and len(options) == 2:
        (kept,) = (option for option in options if option != {"type": "null"})
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return compact({**kept, **rest})
    return {
        key: compact(value)
        for key, value in schema.items()
        if not (key in _UNSAID and isinstance(value, (str, int)))
        and not (key == _UNSAID_FALSE and value is False)
        and not (key in ("default", "description") and value is None)
    }


# Said by the error naming the argument, when it matters: too long to list for every argument.
_UNSAID = frozenset({"title", "minLength", "maxLength", "minItems", "maxItems"})
_UNSAID_FALSE = "additionalProperties"  # unknown arguments are refused, naming them


@dataclass(frozen=True)
class Call:
    """One tool call: the services and the agent making it."""

    services: Services
    principal: Principal

    async def graphql(self, document: str, variables: Mapping[str, Any]) -> types.CallToolResult:
        """Run a read through the GraphQL read path, as this principal, on channel mcp."""
        context = Context(services=self.services, principal=self.principal, channel="mcp")
        config = self.services.config
        schema = build_schema(config.limits, self.services.catalog.kinds(), config.graphql)
        result = await schema.execute(
            document,
            variable_values=dict(variables),
            context_value=context,
            allowed_operation_types={StrawberryOperation.QUERY},
        )
        errors = [_read_error(e.message, e.extensions, e.path) for e in result.errors or []]
        data = result.data
        if errors and data is not None and all(value is None for value in data.values()):
            data = None  # nothing read: a failure, which must not look like "not found"
        output = ReadOutput(data=data, masked=sorted(context.masked), errors=errors)
        if data is None:
            return refused(output, "The read failed: " + "; ".join(map(_said, errors)))
        return success(output, _read_summary(output))


_READ_ADVICE = {
    "FORBIDDEN": " (your policy does not allow this read; ask your human owner)",
    "SOURCE_UNAVAILABLE": " (the system of record is down, which is not 'not found'; retry later)",
    "SOURCE_TIMEOUT": " (the system of record is slow; retry later)",
    "BAD_ARGUMENT": " (fix the argument and call again)",
}


def _read_error(
    message: str, extensions: Mapping[str, Any] | None, path: list[str | int] | None
) -> ReadError:
    found = extensions or {}
    source = found.get("source")
    return ReadError(
        code=str(found.get("code", "ERROR")),
        message=message,
        source=None if source is None else str(source),
        path=".".join(map(str, path)) if path else None,
    )


def _said(error: ReadError) -> str:
    return f"{error.code}: {error.message}{_READ_ADVICE.get(error.code, '')}"


def _read_summary(output: ReadOutput) -> str:
    note = ""
    if output.masked:
        note += f" Masked for you (null is not the real value): {', '.join(output.masked)}."
    if output.errors:
        note += f" Partly failed: {'; '.join(map(_said, output.errors))}."
    return json.dumps(output.data, default=str) + note


def success(output: BaseModel, text: str) -> types.CallToolResult:
    """A tool result with structured content and the same as text."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=output.model_dump(mode="json"),
    )


def tool_error(text: str) -> types.CallToolResult:
    """A tool error whose text tells the agent what to do next."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def refused(output: BaseModel, text: str) -> types.CallToolResult:
    """A tool error with structured content: what failed and what to do next."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=output.model_dump(mode="json"),
        is_error=True,
    )


def refusal(status: str, message: str, hint: Hint | None, next_step: str) -> types.CallToolResult:
    """A refusal with no action behind it (a bad argument, an unknown action, a limit)."""
    output = WriteOutput(
        status=status,
        errors=[FieldError(code=status, message=message)],
        next_step=next_step,
        hint=hint,
    )
    return refused(output, f"{status}: {message}. {next_step}")


# ---- read tools ------------------------------------------------------------------------


def _reader(document: str, variables: Callable[[Any], dict[str, Any]]) -> Run:
    async def run(call: Call, args: BaseModel) -> types.CallToolResult:
        return await call.graphql(document, variables(args))

    return run


def _can_read(*entities: str) -> Callable[[Services, Principal], bool]:
    return lambda services, principal: all(services.policy.can_read(principal, e) for e in entities)


CUSTOMER_FIELDS = f"id name email phone region segment contacts {{ name email role }} {FRESHNESS}"
ITEM_FIELDS = (
    "sku name description active unitPrice { amount currency } levels { location onHand "
    f"reserved available reorderPoint belowReorderPoint }} {FRESHNESS}"
)
ORDER_FIELDS = (
    "id customerId status placedAt total { amount currency } lines { lineNo sku quantity "
    f"unitPrice {{ amount currency }} lineTotal {{ amount currency }} }} {FRESHNESS}"
)
BALANCE_FIELDS = (
    "customerId currency creditLimit { amount } outstanding { amount } overdue { amount } "
    f"availableCredit {{ amount }} {FRESHNESS}"
)

READ_TOOLS = [
    Tool(
        "get_customer",
        "One customer's contact data (CRM); data.customer null if there is none.",
        CustomerArgs,
        ReadOutput,
        _reader(
            f"query($id: ID!, $maxAge: Float) {{ customer(id: $id, maxAge: $maxAge) "
            f"{{ {CUSTOMER_FIELDS} }} }}",
            lambda a: {"id": a.customer_id, "maxAge": a.max_age_seconds},
        ),
        _can_read("Customer"),
    ),
    Tool(
        "find_customers",
        "Customers whose name, e-mail or id contains `search`, a page at a time.",
        FindCustomersArgs,
        ReadOutput,
        _reader(
            f"query($search: String, $first: Int, $after: String) {{ customers(search: $search, "
            f"first: $first, after: $after) {{ edges {{ node {{ {CUSTOMER_FIELDS} }} }} "
            "pageInfo { hasNextPage endCursor } } }",
            lambda a: {"search": a.search, "first": a.first, "after": a.after},
        ),
        _can_read("Customer"),
    ),
    Tool(
        "get_inventory",
        "Items with stock per location; `available` (on hand less reserved) can be promised.",
        InventoryArgs,
        ReadOutput,
        _reader(
            "query($skus: [ID!], $location: String, $below: Boolean, $first: Int, "
            "$after: String) { inventory(skus: $skus, location: $location, "
            "belowReorderPoint: $below, first: $first, after: $after) { edges { node { "
            f"{ITEM_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}",
            lambda a: {
                "skus": a.skus,
                "location": a.location,
                "below": a.below_reorder_point,
                "first": a.first,
                "after": a.after,
            },
        ),
        _can_read("InventoryItem"),
    ),
    Tool(
        "get_order",
        "One order with its lines; data.order null if there is none.",
        OrderArgs,
        ReadOutput,
        _reader(
            f"query($id: ID!, $maxAge: Float) {{ order(id: $id, maxAge: $maxAge) "
            f"{{ {ORDER_FIELDS} }} }}",
            lambda a: {"id": a.order_id, "maxAge": a.max_age_seconds},
        ),
        _can_read("Order"),
    ),
    Tool(
        "list_customer_orders",
        "A customer's orders, oldest first.",
        CustomerOrdersArgs,
        ReadOutput,
        _reader(
            "query($id: ID!, $status: OrderStatus, $first: Int, $after: String) { orders("
            "customerId: $id, status: $status, first: $first, after: $after) { edges { node { "
            f"{ORDER_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}",
            lambda a: {"id": a.customer_id, "status": a.status, "first": a.first, "after": a.after},
        ),
        _can_read("Order"),
    ),
    Tool(
        "get_balance",
        "A customer's ERP account: credit limit, outstanding, overdue, available credit "
        "(decimal strings, in its currency).",
        CustomerArgs,
        ReadOutput,
        _reader(
            f"query($id: ID!, $maxAge: Float) {{ balance(customerId: $id, maxAge: $maxAge) "
            f"{{ {BALANCE_FIELDS} }} }}",
            lambda a: {"id": a.customer_id, "maxAge": a.max_age_seconds},
        ),
        _can_read("Balance"),
    ),
    Tool(
        "describe_contracts",
        "Each field's system of record, owner, freshness SLA and classification.",
        NoArgs,
        ReadOutput,
        _reader(
            "{ contracts { entity system owner description warnAfterSeconds errorAfterSeconds "
            "fields { name system owner classification type description } } }",
            lambda a: {},
        ),
        lambda services, principal: True,
    ),
]


async def _graphql_query(call: Call, args: BaseModel) -> types.CallToolResult:
    assert isinstance(args, GraphQLArgs)
    try:
        document = parse(args.query)
    except GraphQLSyntaxError as exc:
        return tool_error(f"The query does not parse: {exc.message}. Fix it and call again.")
    for definition in document.definitions:
        if (
            isinstance(definition, OperationDefinitionNode)
            and definition.operation is not OperationType.QUERY
        ):
            return tool_error(
                f"graphql_query runs queries only; this is a {definition.operation.value}. "
                "To change data, use the write tools (they are governed and audited)."
            )
    return await call.graphql(args.query, args.variables or {})


GRAPHQL_TOOL = Tool(
    "graphql_query",
    "Any read-only GraphQL query; mutations are refused.",
    GraphQLArgs,
    ReadOutput,
    _graphql_query,
    lambda services, principal: any(
        services.policy.can_read(principal, e) for e in services.config.entities
    ),
)


# ---- write tools -----------------------------------------------------------------------

_CONTROL = ("dry_run", "idempotency_key", "expected_version")


_READ_TOOL = {
    "Customer": "get_customer",
    "InventoryItem": "get_inventory",
    "Order": "get_order",
    "Balance": "get_balance",
}
_DRY_RUN = Field(default=False, description="Decide and diff only; change nothing.")
_KEY = Field(default=None, max_length=200, description="Unique per intended write.")


def write_args(kind: ActionKind) -> type[BaseModel]:
    """The tool's arguments: the action's own input model, plus the write controls."""
    controls: dict[str, Any] = {
        "dry_run": (bool, _DRY_RUN),
        "idempotency_key": (str | None, _KEY),
    }
    if not kind.creates:  # a new record has no version to expect
        controls["expected_version"] = (str | None, _expected_version(kind))
    return create_model(
        kind.Input.__name__.removesuffix("Input") + "Args",
        __base__=kind.Input,
        __doc__=kind.Input.__doc__,
        **controls,
    )


def _expected_version(kind: ActionKind) -> Any:
    reader = _READ_TOOL.get(kind.entity)
    read = f" (from {reader})" if reader else ""
    return Field(
        default=None,
        max_length=64,
        description=f"Version of the {kind.entity} you read{read}.",
    )


def _writer(kind: ActionKind) -> Run:
    async def run(call: Call, args: BaseModel) -> types.CallToolResult:
        values = args.model_dump()
        request = WriteRequest(
            kind=kind.kind,
            input={k: v for k, v in values.items() if k not in _CONTROL},
            channel="mcp",
            idempotency_key=values["idempotency_key"],
            dry_run=values["dry_run"],
            expected_version=values.get("expected_version"),
        )
        return outcome(await call.services.writes.submit(request, call.principal))

    return run


def tool_name(kind: ActionKind) -> str:
    """adjustInventory -> adjust_inventory: MCP tools are conventionally snake_case."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in kind.mutation)


def _may_write(kind: ActionKind) -> Callable[[Services, Principal], bool]:
    return lambda services, principal: services.policy.could_ever(principal, kind.kind, "write")


def write_tools(kinds: list[ActionKind]) -> list[Tool]:
    """One tool per configured action."""
    return [_write_tool(kind) for kind in kinds]


def _write_tool(kind: ActionKind) -> Tool:
    return Tool(
        tool_name(kind),
        f"{kind.summary} May answer PENDING_APPROVAL.",
        write_args(kind),
        WriteOutput,
        _writer(kind),
        _may_write(kind),
        # Optional in the contract: a write changes or removes what was there unless it says not.
        write_annotations(destructive=getattr(kind, "destructive", True)),
    )


_NEXT: dict[Status, tuple[str, Hint | None]] = {
    Status.APPLIED: ("Applied. Read the record again to see its new state and version.", None),
    Status.PENDING_APPROVAL: (
        "Not applied yet: a human must approve it ({approvers}). Do not send it again; "
        "listen for updates of its resource ({follow}), or call get_action(action_id).",
        "wait_for_approval",
    ),
    Status.DRY_RUN: (
        "Nothing was written. The decision is {outcome}; call again without dry_run to submit it.",
        None,
    ),
    Status.DENIED: (
        "Denied by policy rule {rule}: {reason}. Do not retry; if this should be allowed, "
        "ask your human owner ({owner}).",
        "stop",
    ),
    Status.INVALID: (
        "Invalid: {problems}. Fix these arguments and call again with a new idempotency_key.",
        "retry_with_new_key",
    ),
    Status.CONFLICT: (
        "{target} changed since the version you read{now}. Read it again, check the change "
        "still makes sense, and call again with expected_version set to its new version and "
        "a new idempotency_key.",
        "reread_then_retry",
    ),
    Status.FAILED: (
        "The system of record failed and nothing was changed: {error}. Once it is back, call "
        "retry_action(action_id={action_id}): it runs this same action again under the same id.",
        "call_retry_action",
    ),
    Status.REJECTED: ("A human rejected it: {error}. Do not resubmit it unchanged.", "stop"),
    Status.EXPIRED: (
        "Nobody approved it in time. Submit it again, with a new idempotency_key, if it is "
        "still needed.",
        "retry_with_new_key",
    ),
    Status.IN_DOUBT: (
        "The gateway stopped while applying it and cannot yet tell whether it was applied. "
        "Do not send it again; an operator settles action {action_id}: follow it with "
        "get_action.",
        "stop",
    ),
}
_TOOL_ERRORS = {
    Status.DENIED,
    Status.INVALID,
    Status.CONFLICT,
    Status.FAILED,
    Status.REJECTED,
    Status.EXPIRED,
    Status.IN_DOUBT,
}


def outcome(result: WriteResult, history: Sequence[HistoryEvent] = ()) -> types.CallToolResult:
    """A write result as a tool result: refusals are tool errors saying what to do next."""
    output = write_output(result, history)
    text = f"{result.status.value}: {output.next_step}"
    if result.status in _TOOL_ERRORS:
        return refused(output, text)
    return success(output, text + "\n" + json.dumps(output.model_dump(mode="json"), default=str))


def write_output(result: WriteResult, history: Sequence[HistoryEvent] = ()) -> WriteOutput:
    """The structured form of a write result, its errors named by the tool's arguments."""
    action = result.action
    errors = [
        FieldError(code=e.code, message=e.message, argument=argument(e.field))
        for e in result.errors
    ]
    current = next((e.current_version for e in result.errors if e.current_version), None)
    template, hint = _NEXT.get(result.status, ("", None))
    problems = "; ".join(f"{e.argument or 'input'}: {e.message}" for e in errors)
    facts = {
        "approvers": ", ".join(result.approvers) or "an approver",
        "problems": problems,
        "now": "" if current is None else f"; it is now at version {current}",
        "target": "The record",
        "outcome": "unknown",
        "rule": "",
        "reason": "",
        "owner": "your owner",
        "error": problems,
        "action_id": "",
        "follow": "",
    }
    if action is not None:
        facts |= {
            "target": f"The record {action.target}",
            "outcome": action.decision or "unknown",
            "rule": action.rule,
            "reason": action.reason,
            "owner": action.on_behalf_of or "your owner",
            "error": action.error or problems,
            "action_id": action.id,
            "follow": follow.action_uri(action.id),
        }
    output = WriteOutput(
        status=result.status.value,
        errors=errors,
        current_version=current,
        approvers=list(result.approvers),
        history=list(history),
        next_step=template.format_map(facts),
        hint=hint,
    )
    if action is None:
        return output
    return output.model_copy(
        update={
            "action_id": action.id,
            "decision": DecisionOutput(
                outcome=action.decision,
                rule=action.rule,
                reason=action.reason,
                approvals_required=action.approvals_required,
            ),
            "diff": _diff(action.diff, result),
            "result": action.result,
            "follow": follow.action_uri(action.id),
        }
    )


def argument(field: str | None) -> str | None:
    """A pipeline field path (GraphQL's camelCase: lines.0.unitPrice) as the tool's argument."""
    if field is None:
        return None
    return ".".join(
        "".join(f"_{c.lower()}" if c.isupper() else c for c in part) for part in field.split(".")
    )


def _diff(diff: Mapping[str, Any] | None, result: WriteResult) -> dict[str, Any] | None:
    if diff is None:
        return None
    shown = dict(diff)
    if result.freshness is not None:
        shown["freshness"] = {
            "system": result.freshness.system,
            "version": result.freshness.version,
            "fetched_at": result.freshness.fetched_at.isoformat(),
            "source_updated_at": (
                result.freshness.source_updated_at.isoformat()
                if result.freshness.source_updated_at
                else None
            ),
        }
    return shown


async def _history(call: Call, action_id: str) -> list[HistoryEvent]:
    events, _ = await call.services.audit.query(action_id=action_id, limit=100)
    return [
        HistoryEvent(event=e.event, at=e.at.isoformat(), principal=e.principal, outcome=e.outcome)
        for e in events
    ]


async def _get_action(call: Call, args: BaseModel) -> types.CallToolResult:
    assert isinstance(args, ActionArgs)
    writes = call.services.writes
    await writes.expire_due()
    action = await writes.get(args.action_id)
    mine = action is not None and call.principal.id in (action.principal, action.on_behalf_of)
    if action is None or not mine:
        return refusal(
            "NOT_FOUND",
            f"No action {args.action_id} of yours",
            "stop",
            "Check the id a write tool returned.",
        )
    return outcome(writes.result(action), await _history(call, action.id))


async def _retry_action(call: Call, args: BaseModel) -> types.CallToolResult:
    assert isinstance(args, ActionArgs)
    result = await call.services.writes.retry(args.action_id, call.principal, channel="mcp")
    history = [] if result.action is None else await _history(call, result.action.id)
    return outcome(result, history)


async def _can_i(call: Call, args: BaseModel) -> types.CallToolResult:
    assert isinstance(args, CanArgs)
    by_tool = {tool_name(kind): kind.kind for kind in call.services.catalog.kinds()}
    if args.action not in by_tool:
        return refusal(
            "NOT_FOUND",
            f"No write tool named {args.action}",
            "stop",
            f"Use one of {sorted(by_tool)}.",
        )
    verdict = call.services.writes.can(by_tool[args.action], args.input, call.principal)
    d = verdict.decision
    output = WriteOutput(
        status=d.outcome.value.upper(),
        decision=DecisionOutput(
            outcome=d.outcome.value,
            rule=d.rule,
            reason=d.reason,
            approvals_required=d.approvals_required,
        ),
        approvers=list(verdict.approvers),
        errors=[
            FieldError(code="INVALID", message=p.message, argument=argument(p.field))
            for p in verdict.problems
        ],
        next_step={
            "allow": "You may submit it.",
            "review": "Submitting it creates a request a human must approve.",
            "deny": "Policy refuses it; do not submit it.",
        }[d.outcome.value],
        hint=_CAN_HINTS[d.outcome.value],
    )
    return success(output, f"{d.outcome.value} by rule {d.rule}: {d.reason}. {output.next_step}")


_CAN_HINTS: dict[str, Hint | None] = {"allow": None, "review": "wait_for_approval", "deny": "stop"}


def _may_retry(services: Services, principal: Principal) -> bool:
    """The requester may retry its own FAILED actions, an approver those of kinds it approves."""
    return any(
        services.policy.could_ever(principal, kind.kind, act)
        for kind in services.catalog.kinds()
        for act in ("write", "approve")
    )


FOLLOW_TOOLS = [
    Tool(
        "get_action",
        "Follow a write of yours: status, decision, diff, history.",
        ActionArgs,
        WriteOutput,
        _get_action,
        lambda services, principal: True,
    ),
    Tool(
        "retry_action",
        "Run a FAILED action again once its system is back; it keeps its id.",
        ActionArgs,
        WriteOutput,
        _retry_action,
        _may_retry,
        write_annotations(destructive=True),
    ),
    Tool(
        "can_i",
        "What policy says to a write: allow, deny or review, why, who approves.",
        CanArgs,
        WriteOutput,
        _can_i,
        lambda services, principal: True,
    ),
]


@functools.cache
def tools(catalog: Catalog) -> dict[str, Tool]:
    """Every tool, by name: the reads, the configured actions' writes, and following them."""
    listed = [*READ_TOOLS, GRAPHQL_TOOL, *write_tools(catalog.kinds()), *FOLLOW_TOOLS]
    return {tool.name: tool for tool in listed}


# ---- the server ------------------------------------------------------------------------

PrincipalOf = Callable[[ServerRequestContext[Any]], Principal | None]


def build_server(services: Callable[[], Services], principal_of: PrincipalOf) -> Server[Any]:
    """The MCP server; `principal_of` says who is calling (from HTTP headers or stdio env)."""
    feed = follow.ActionFeed(services)

    def visible(
        context: ServerRequestContext[Any],
    ) -> tuple[Services, Principal | None, list[Tool]]:
        current = services()
        principal = principal_of(context)
        if principal is None:
            return current, None, []
        listed = tools(current.catalog).values()
        return current, principal, [t for t in listed if t.visible(current, principal)]

    async def list_tools(
        context: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        _, _, tools = visible(context)
        return types.ListToolsResult(tools=[tool.listing() for tool in tools])

    async def call_tool(
        context: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        current, principal, listed = visible(context)
        tool = next((t for t in listed if t.name == params.name), None)
        writes = {tool_name(kind) for kind in current.catalog.kinds()}
        if tool is None and principal is not None and params.name in writes:
            # A write its policy never allows is not listed; asked for anyway, it goes through
            # the pipeline like any write, and is denied and audited there, not "unknown".
            tool = tools(current.catalog)[params.name]
        if principal is None or tool is None:
            return tool_error(f"Unknown tool: {params.name}. List the tools to see yours.")
        try:
            args = tool.args.model_validate(params.arguments or {})
        except ValidationError as exc:
            return _argument_errors(exc)
        try:
            await current.rates.charge(principal)  # one tool call, one operation
            return await tool.run(Call(current, principal), args)
        except GatehouseError as exc:
            hint, next_step = _ADVICE.get(exc.code, (None, "See the message."))
            return refusal(exc.code, exc.message, hint, next_step)

    async def list_resources(
        context: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=mcp_resources.LISTING)

    async def list_resource_templates(
        context: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[follow.TEMPLATE])

    async def read_resource(
        context: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        current, principal, _ = visible(context)
        if principal is None:
            raise MCPError(code=-32001, message="Authenticate first.")
        uri = str(params.uri)
        if (action := follow.action_id(uri)) is not None:
            answer = await _get_action(Call(current, principal), ActionArgs(action_id=action))
            if answer.structured_content and answer.structured_content["status"] == "NOT_FOUND":
                raise MCPError(code=-32002, message=f"No action {action} of yours.")
            text = json.dumps(answer.structured_content)
            return types.ReadResourceResult(
                contents=[
                    types.TextResourceContents(uri=uri, mime_type="application/json", text=text)
                ]
            )
        return mcp_resources.read(current, principal, uri)

    def input_schema(name: str) -> dict[str, Any] | None:
        tool = tools(services().catalog).get(name)
        return None if tool is None else tool.args.model_json_schema()

    return Server(
        "gatehouse",
        version="0.1.0",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
        on_subscriptions_listen=feed.listen,
        get_tool_input_schema=input_schema,
    )


_ADVICE: dict[str, tuple[Hint | None, str]] = {
    "IDEMPOTENCY_KEY_REUSED": ("retry_with_new_key", "Use a new idempotency_key for a new write."),
    "NOT_FOUND": ("stop", "Check the action id a write tool returned."),
    "NOT_FAILED": ("stop", "Only FAILED actions are retried; follow it with get_action."),
    "RETRY_REFUSED": ("stop", "Ask your human owner to retry it."),
    "RATE_LIMITED": (None, "Wait a little, then call again."),
    "IDEMPOTENCY_IN_PROGRESS": (None, "Wait a few seconds, then send the same call again."),
}


def _argument_errors(exc: ValidationError) -> types.CallToolResult:
    errors = [
        FieldError(
            code="INVALID_ARGUMENT",
            message=e["msg"],
            argument=".".join(str(p) for p in e["loc"]) or None,
        )
        for e in exc.errors(include_url=False)
    ]
    problems = "; ".join(f"argument '{e.argument or 'arguments'}': {e.message}" for e in errors)
    output = WriteOutput(
        status="INVALID",
        errors=errors,
        next_step="Fix these arguments and call again.",
        hint="retry_with_new_key",
    )
    return refused(output, f"Invalid arguments: {problems}. Fix them and call again.")


# ---- transports -------------------------------------------------------------------------


class BearerGate:
    """Refuses /mcp requests without a valid API key or OAuth token with 401, before any MCP
    handling; the 401 names the protected resource metadata when OAuth is configured."""

    def __init__(self, app: ASGIApp, authenticator: Callable[[], Authenticator]) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1") or None
            authenticator = self.authenticator()
            try:
                principal = await authenticator.verify(header)
            except Unauthenticated as exc:
                response = JSONResponse(
                    {"error": "unauthenticated", "message": exc.message},
                    status_code=401,
                    headers={"WWW-Authenticate": authenticator.challenge(header)},
                )
                await response(scope, receive, send)
                return
            # The MCP handler's request shares this scope: it reads the caller from here.
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def http_transport(services: Callable[[], Services]) -> StreamableHTTPSessionManager:
    """Streamable HTTP for /mcp: stateless, JSON replies, the caller from its bearer key."""

    def principal_of(context: ServerRequestContext[Any]) -> Principal | None:
        request = context.request
        if request is None:
            return None
        if isinstance(found := getattr(request.state, "principal", None), Principal):
            return found
        try:
            return services().authenticator.authenticate(request.headers.get("authorization"))
        except Unauthenticated:
            return None

    return StreamableHTTPSessionManager(
        app=build_server(services, principal_of),
        stateless=True,
        json_response=True,
        # Every request must carry a valid API key (BearerGate), which a page in a browser
        # cannot forge; the Host check meant for unauthenticated local servers stays off.
        security_settings=None,
    )


async def run_stdio(services: Services, principal: Principal) -> None:
    """Serve MCP over stdin/stdout as one principal (a desktop agent's local command)."""
    server = build_server(lambda: services, lambda context: principal)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
