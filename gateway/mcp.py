"""The MCP front door for AI agents: the same reads and governed writes as GraphQL.

    tools/list   the tools this agent's policy could ever allow (the rest are not listed)
    tools/call   reads   -> a fixed GraphQL document, run with the agent's context
                 writes  -> pipeline.Writes.submit, channel "mcp"
                 errors  -> tool errors whose text says what to do next

Served over streamable HTTP at /mcp (the caller's `Authorization: Bearer <api key>`) and over
stdio by `gatehouse mcp` (the key from GATEHOUSE_API_KEY). Tool input schemas are the
actions' pydantic models, the same ones the GraphQL inputs are generated from.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import mcp.types as types
from graphql import OperationDefinitionNode, OperationType, parse
from graphql.error import GraphQLSyntaxError
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.types.graphql import OperationType as StrawberryOperation

from gateway.actions.store import Status
from gateway.catalog import Catalog
from gateway.errors import GatehouseError, Unauthenticated
from gateway.graphql.context import Context
from gateway.graphql.schema import build_schema
from gateway.outcomes import WriteRequest, WriteResult
from gateway.principals import Authenticator, Principal
from gateway.services import Services
from sources.actions import ActionKind

FRESHNESS_NOTE = (
    " Every record carries `freshness`: which system it came from (`system`), when the "
    "gateway read it (`fetchedAt`), how old that is (`ageSeconds`) against its SLA, and "
    "`status`: FRESH, AGING, or STALE (old, or served from cache because the system is down, "
    "with `error`). Treat STALE data as possibly out of date. `version` is what to pass as "
    "`expected_version` when you write."
)
FRESHNESS = (
    "freshness { system fetchedAt sourceUpdatedAt ageSeconds version status cached error "
    "warnAfterSeconds errorAfterSeconds }"
)


class Args(BaseModel):
    """Tool arguments: unknown arguments are mistakes."""

    model_config = ConfigDict(extra="forbid")


MaxAge = Field(
    default=None,
    ge=0,
    description="Accept a cached value at most this many seconds old; 0 reads the system now.",
)


class CustomerArgs(Args):
    customer_id: str = Field(min_length=1, description="Customer id, e.g. C-00001.")
    max_age_seconds: float | None = MaxAge


class FindCustomersArgs(Args):
    search: str | None = Field(default=None, description="Part of a name, e-mail or id.")
    first: int = Field(default=20, ge=1, le=100)
    after: str | None = Field(default=None, description="endCursor of the previous page.")


class InventoryArgs(Args):
    skus: list[str] | None = Field(default=None, max_length=100, description="SKUs to get.")
    location: str | None = Field(default=None, description="Warehouse code, e.g. WH-BER.")
    below_reorder_point: bool = Field(default=False, description="Only items to restock.")
    first: int = Field(default=50, ge=1, le=200)
    after: str | None = None


class OrderArgs(Args):
    order_id: str = Field(min_length=1, description="Order id, e.g. SO-100001.")
    max_age_seconds: float | None = MaxAge


class CustomerOrdersArgs(Args):
    customer_id: str = Field(min_length=1)
    status: str | None = Field(default=None, pattern="^(OPEN|SHIPPED|DELIVERED|CANCELLED)$")
    first: int = Field(default=20, ge=1, le=100)
    after: str | None = None


class NoArgs(Args):
    pass


class GraphQLArgs(Args):
    query: str = Field(min_length=1, description="A GraphQL query document (no mutations).")
    variables: dict[str, Any] | None = None


class ActionArgs(Args):
    action_id: str = Field(min_length=1, description="The id a write tool returned.")


class CanArgs(Args):
    action: str = Field(description="A write tool's name, e.g. adjust_inventory.")
    input: dict[str, Any] = Field(description="The arguments you would call it with.")


class ReadOutput(BaseModel):
    """What a read tool returns."""

    data: dict[str, Any] | None = Field(description="The records, each with its freshness.")
    masked: list[str] = Field(default=[], description="Fields withheld from you by policy.")
    errors: list[str] = Field(default=[], description="Parts that could not be read.")


class WriteOutput(BaseModel):
    """What a write tool, get_action and can_i return."""

    status: str
    action_id: str | None = None
    decision: dict[str, Any] | None = None
    approvers: list[str] = []
    validation: list[dict[str, Any]] = []
    diff: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = []
    next_step: str = ""


Run = Callable[["Call", BaseModel], Awaitable[types.CallToolResult]]


@dataclass(frozen=True)
class Tool:
    """One MCP tool: its schema, who may see it, and what it runs."""

    name: str
    description: str
    args: type[BaseModel]
    output: type[BaseModel]
    run: Run
    visible: Callable[[Services, Principal], bool]

    def listing(self) -> types.Tool:
        """The tool as tools/list shows it."""
        return types.Tool(
            name=self.name,
            description=self.description,
            input_schema=self.args.model_json_schema(),
            output_schema=self.output.model_json_schema(),
        )


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
        errors = [_graphql_error(e.message, e.extensions) for e in result.errors or []]
        output = ReadOutput(data=result.data, masked=sorted(context.masked), errors=errors)
        if result.data is None:
            return tool_error("The read failed: " + "; ".join(errors))
        return success(output, _read_summary(output))


def _graphql_error(message: str, extensions: Mapping[str, Any] | None) -> str:
    code = (extensions or {}).get("code", "ERROR")
    hint = {
        "FORBIDDEN": " (your policy does not allow this read; ask your human owner)",
        "SOURCE_UNAVAILABLE": " (the system of record is down; retry later)",
        "SOURCE_TIMEOUT": " (the system of record is slow; retry later)",
        "BAD_ARGUMENT": " (fix the argument and call again)",
    }.get(code, "")
    return f"{code}: {message}{hint}"


def _read_summary(output: ReadOutput) -> str:
    note = ""
    if output.masked:
        note += f" Masked for you (null is not the real value): {', '.join(output.masked)}."
    if output.errors:
        note += f" Partly failed: {'; '.join(output.errors)}."
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
        "Get one customer (contact data from the CRM) by id. Returns null data.customer when "
        "there is no such customer. Personal data you are not granted comes back null and "
        "is listed in `masked`." + FRESHNESS_NOTE,
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
        "Find customers whose name, e-mail or id contains `search`; pages of `first`, pass "
        "pageInfo.endCursor as `after` for the next page." + FRESHNESS_NOTE,
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
        "Get items with their stock at each location: by SKUs, or those stocked at a "
        "location, or only those below their reorder point. `available` is on hand less "
        "reserved: what can still be promised. Reading never changes stock." + FRESHNESS_NOTE,
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
        "Get one order with its lines, by id; null data.order when there is none." + FRESHNESS_NOTE,
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
        "List one customer's orders, oldest first, optionally by status (OPEN, SHIPPED, "
        "DELIVERED, CANCELLED)." + FRESHNESS_NOTE,
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
        "Get a customer's account from the ERP ledger: credit limit, outstanding, overdue and "
        "available credit, as exact decimal strings. Check available credit before placing "
        "an order." + FRESHNESS_NOTE,
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
        "Describe the data contracts: for each entity and field, which system of record owns "
        "it, who answers for its accuracy, its freshness SLA (warn/error after seconds) and "
        "its classification (public, internal, pii, financial).",
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
    "Run a read-only GraphQL query against the gateway (the same schema internal apps use: "
    "customer, customers, inventoryItem, inventory, order, orders, balance, contracts, "
    "sources, me). Mutations and subscriptions are refused; use the write tools." + FRESHNESS_NOTE,
    GraphQLArgs,
    ReadOutput,
    _graphql_query,
    lambda services, principal: any(
        services.policy.can_read(principal, e) for e in services.config.entities
    ),
)


# ---- write tools -----------------------------------------------------------------------

_CONTROL = ("dry_run", "idempotency_key", "expected_version")


def write_args(kind: ActionKind) -> type[BaseModel]:
    """The tool's arguments: the action's own input model, plus the write controls."""
    return create_model(
        kind.Input.__name__.removesuffix("Input") + "Args",
        __base__=kind.Input,
        __doc__=kind.Input.__doc__,
        dry_run=(
            bool,
            Field(
                default=False,
                description=(
                    "Run every step but the write: see the decision, validation, who would approve "
                    "and the exact diff. Nothing is changed."
                ),
            ),
        ),
        idempotency_key=(
            str | None,
            Field(
                default=None,
                max_length=200,
                description=(
                    "Any unique string for this intended write. Retrying with the same key never "
                    "applies it twice, even hours later; a new write needs a new key."
                ),
            ),
        ),
        expected_version=(
            str | None,
            Field(
                default=None,
                max_length=64,
                description=(
                    "The freshness.version of the record you read. If it changed since, the write "
                    "is refused as CONFLICT instead of overwriting what you never saw."
                ),
            ),
        ),
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
            expected_version=values["expected_version"],
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
        f"{kind.summary} Governed: policy decides allow, deny or review; business rules are "
        "checked against the system's current state. It never applies a write that needs "
        "approval: then it returns PENDING_APPROVAL with who can approve; follow it with "
        "get_action and do not send it again. Use dry_run first when unsure, and can_i to "
        "learn the rule before trying. A refused write returns an error saying why and what "
        "to do next.",
        write_args(kind),
        WriteOutput,
        _writer(kind),
        _may_write(kind),
    )


_NEXT = {
    Status.APPLIED: "Applied. Read the record again to see its new state and version.",
    Status.PENDING_APPROVAL: (
        "Not applied yet: a human must approve it ({approvers}). Do not send it again; "
        "follow it with get_action(action_id)."
    ),
    Status.DRY_RUN: (
        "Nothing was written. The decision is {outcome}; call again without dry_run to submit it."
    ),
    Status.DENIED: (
        "Denied by policy rule {rule}: {reason}. Do not retry; if this should be allowed, "
        "ask your human owner ({owner})."
    ),
    Status.INVALID: "Invalid: {problems}. Fix these fields and call again with a new key.",
    Status.CONFLICT: (
        "The record changed since the version you read. Read it again, check the change "
        "still makes sense, and call again with expected_version set to its new version."
    ),
    Status.FAILED: (
        "The system of record failed and nothing was changed: {error}. Retry later with the "
        "same idempotency_key, or ask a human to retry action {action_id}."
    ),
    Status.REJECTED: "A human rejected it: {error}. Do not resubmit it unchanged.",
    Status.EXPIRED: "Nobody approved it in time. Submit it again if it is still needed.",
    Status.IN_DOUBT: (
        "The gateway stopped while applying it and cannot yet tell whether it was applied. "
        "Do not send it again; an operator settles action {action_id}: follow it with "
        "get_action."
    ),
}
_TOOL_ERRORS = {
    Status.DENIED,
    Status.INVALID,
    Status.CONFLICT,
    Status.FAILED,
    Status.REJECTED,
    Status.EXPIRED,
}


def outcome(result: WriteResult) -> types.CallToolResult:
    """A write result as a tool result: refusals are tool errors saying what to do next."""
    output = write_output(result)
    if result.status in _TOOL_ERRORS:
        return tool_error(f"{result.status.value}: {output.next_step}")
    return success(
        output,
        f"{result.status.value}: {output.next_step}\n"
        + json.dumps(output.model_dump(mode="json"), default=str),
    )


def write_output(result: WriteResult) -> WriteOutput:
    """The structured form of a write result."""
    action = result.action
    problems = "; ".join(f"{e.field or 'input'}: {e.message}" for e in result.errors)
    errors = [{"code": e.code, "message": e.message, "field": e.field} for e in result.errors]
    if action is None:
        return WriteOutput(
            status=result.status.value,
            errors=errors,
            next_step=_NEXT.get(result.status, "").format(problems=problems),
        )
    approvers = list(result.approvers)
    next_step = _NEXT.get(result.status, "").format(
        approvers=", ".join(approvers) or "an approver",
        outcome=action.decision or "unknown",
        rule=action.rule,
        reason=action.reason,
        owner=action.on_behalf_of or "your owner",
        problems=problems,
        error=action.error or problems,
        action_id=action.id,
    )
    diff = None if action.diff is None else dict(action.diff)
    if diff is not None and result.freshness is not None:
        diff["freshness"] = {
            "system": result.freshness.system,
            "version": result.freshness.version,
            "fetched_at": result.freshness.fetched_at.isoformat(),
            "source_updated_at": (
                result.freshness.source_updated_at.isoformat()
                if result.freshness.source_updated_at
                else None
            ),
        }
    return WriteOutput(
        status=result.status.value,
        action_id=action.id,
        decision={
            "outcome": action.decision,
            "rule": action.rule,
            "reason": action.reason,
            "approvals_required": action.approvals_required,
        },
        approvers=approvers,
        validation=action.validation,
        diff=diff,
        result=action.result,
        errors=errors,
        next_step=next_step,
    )


async def _get_action(call: Call, args: BaseModel) -> types.CallToolResult:
    assert isinstance(args, ActionArgs)
    writes = call.services.writes
    await writes.expire_due()
    action = await writes.get(args.action_id)
    mine = action is not None and call.principal.id in (action.principal, action.on_behalf_of)
    if action is None or not mine:
        return tool_error(
            f"No action {args.action_id} of yours. Check the id a write tool returned."
        )
    approvers = (
        tuple(writes.approvers_for(action)) if (action.status is Status.PENDING_APPROVAL) else ()
    )
    result = WriteResult(action.status, action, (), None, approvers)
    output = write_output(result)
    return success(output, f"{action.status.value}: {output.next_step}")


async def _can_i(call: Call, args: BaseModel) -> types.CallToolResult:
    assert isinstance(args, CanArgs)
    by_tool = {tool_name(kind): kind.kind for kind in call.services.catalog.kinds()}
    if args.action not in by_tool:
        return tool_error(f"No write tool named {args.action}; one of {sorted(by_tool)}.")
    verdict = call.services.writes.can(by_tool[args.action], args.input, call.principal)
    d = verdict.decision
    output = WriteOutput(
        status=d.outcome.value.upper(),
        decision={
            "outcome": d.outcome.value,
            "rule": d.rule,
            "reason": d.reason,
            "approvals_required": d.approvals_required,
        },
        approvers=list(verdict.approvers),
        validation=[p.as_dict() for p in verdict.problems],
        next_step={
            "allow": "You may submit it.",
            "review": "Submitting it creates a request a human must approve.",
            "deny": "Policy refuses it; do not submit it.",
        }[d.outcome.value],
    )
    return success(output, f"{d.outcome.value} by rule {d.rule}: {d.reason}. {output.next_step}")


FOLLOW_TOOLS = [
    Tool(
        "get_action",
        "Follow a write you submitted: its status (PENDING_APPROVAL until a human decides, "
        "then APPLIED, REJECTED, EXPIRED or FAILED), the decision, approvals and diff.",
        ActionArgs,
        WriteOutput,
        _get_action,
        lambda services, principal: True,
    ),
    Tool(
        "can_i",
        "Ask, without any side effect, what would happen to a write: allow, deny or review, "
        "the rule and its reason, and who could approve. Use it to plan instead of probing "
        "with real writes.",
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
        current, principal, tools = visible(context)
        tool = next((t for t in tools if t.name == params.name), None)
        if principal is None or tool is None:
            return tool_error(f"Unknown tool: {params.name}. List the tools to see yours.")
        try:
            args = tool.args.model_validate(params.arguments or {})
        except ValidationError as exc:
            return tool_error(_argument_errors(exc))
        try:
            current.rates.charge(principal)  # one tool call, one operation
            return await tool.run(Call(current, principal), args)
        except GatehouseError as exc:
            return tool_error(f"{exc.code}: {exc.message}")

    def input_schema(name: str) -> dict[str, Any] | None:
        tool = tools(services().catalog).get(name)
        return None if tool is None else tool.args.model_json_schema()

    return Server(
        "gatehouse",
        version="0.1.0",
        instructions=(
            "Gatehouse gives you current operational state (customers, inventory, orders, "
            "balances) with its freshness, and governed writes: every write is checked by "
            "policy and business rules, may need a human's approval, and is audited as yours "
            "on behalf of your human owner."
        ),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        get_tool_input_schema=input_schema,
    )


def _argument_errors(exc: ValidationError) -> str:
    problems = [
        f"argument '{'.'.join(str(p) for p in e['loc']) or 'arguments'}': {e['msg']}"
        for e in exc.errors(include_url=False)
    ]
    return "Invalid arguments: " + "; ".join(problems) + ". Fix them and call again."


# ---- transports -------------------------------------------------------------------------


class BearerGate:
    """Refuses /mcp requests without a valid API key with 401, before any MCP handling."""

    def __init__(self, app: ASGIApp, authenticator: Callable[[], Authenticator]) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            try:
                self.authenticator().authenticate(header or None)
            except Unauthenticated as exc:
                response = JSONResponse(
                    {"error": "unauthenticated", "message": exc.message},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_transport(services: Callable[[], Services]) -> StreamableHTTPSessionManager:
    """Streamable HTTP for /mcp: stateless, JSON replies, the caller from its bearer key."""

    def principal_of(context: ServerRequestContext[Any]) -> Principal | None:
        request = context.request
        if request is None:
            return None
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
