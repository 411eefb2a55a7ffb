"""GraphQL-wide concerns, as Strawberry extensions rather than code in every resolver.

QueryLimits      depth, cost and aliases, checked at validation: nothing runs over budget;
                 tokens, counted by the parser, which stops at the limit
DocumentCache    parses each document text once
MutationBudget   at most `max_mutations` mutation fields per request, batches included
NoIntrospection  refuses `__schema` and `__type` where introspection is off
ErrorCodes       every error gets `extensions.code`; anything not ours is masked
ClassifiedFields finds the masked values and the fields an agent read, in the response
MaskedPaths      lists, in `extensions.masked`, the paths masked by classification
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NamedTypeNode,
    Node,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
    get_named_type,
    get_operation_ast,
    parse,
)
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, SchemaExtension
from strawberry.extensions.max_aliases import count_fields_with_alias
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from gateway.audit import AuditEvent
from gateway.config import LimitsConfig
from gateway.errors import GatehouseError
from gateway.graphql.classified import inspect_response
from gateway.telemetry import current_trace_id, tracer

log = logging.getLogger("gatehouse.graphql")

# How many items a list may hold: a page's size either way (`last` pages the ledger newer),
# or the keys asked for.
_LIST_ARGUMENTS = ("first", "last", "skus")
# A field taking one of these is a page: left out, the default page size applies.
_PAGE_ARGUMENTS = frozenset({"first", "last"})
# graphql-core's words when the parser stops at `max_tokens`.
_TOKEN_LIMIT = re.compile(r"Document contains more than (\d+) tokens")


def query_limits(limits: LimitsConfig) -> list[Callable[[], SchemaExtension]]:
    """Extensions refusing, before anything runs, documents over the limits: tokens while
    parsing; depth, cost and aliases while validating; mutation fields per request."""

    class QueryLimits(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            fragments = _fragments(self.context.document.definitions)
            schema = self.context.schema
            measure = _Measure(fragments, schema, limits.max_page_size, limits.default_page_size)
            root = schema.get_root_type(node.operation)
            depth, cost = measure.selection(node.selection_set, 0, root)
            aliases = count_fields_with_alias(node, fragments)
            if depth > limits.max_depth:
                self._reject("max_depth", f"query depth {depth} exceeds", limits.max_depth, node)
            elif cost > limits.max_complexity:
                self._reject(
                    "max_complexity",
                    f"query cost {cost} exceeds (ask for smaller pages or fewer nested lists)",
                    limits.max_complexity,
                    node,
                )
            elif aliases > limits.max_aliases:
                self._reject("max_aliases", f"{aliases} aliases exceed", limits.max_aliases, node)

        def _reject(self, limit: str, what: str, bound: int, node: OperationDefinitionNode) -> None:
            self.report_error(rejected(limit, f"{what} the limit {limit} = {bound}", node))

    return [
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        lambda: AddValidationRules([QueryLimits]),
        mutation_budget(limits.max_mutations),
    ]


def rejected(limit: str, message: str, node: Node | None = None) -> GraphQLError:
    """The error refusing an operation over a limit, naming the limit's configuration key."""
    return GraphQLError(message, node, extensions={"code": "QUERY_REJECTED", "limit": limit})


def _fragments(definitions: Iterable[Node]) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in definitions if isinstance(d, FragmentDefinitionNode)}


def mutation_budget(max_mutations: int) -> type[SchemaExtension]:
    """Refuses a mutation operation whose fields, added to those the same request (a batch)
    already ran, exceed `max_mutations`; the refused operation runs none of them."""

    class MutationBudget(SchemaExtension):
        def on_execute(self) -> Iterator[None]:
            execution = self.execution_context
            if execution.operation_type is OperationType.MUTATION:
                context = execution.context
                spent = context.mutation_fields + _mutation_fields(execution)
                if spent > max_mutations:
                    error = rejected(
                        "max_mutations",
                        f"{spent} mutation fields in one request exceed the limit "
                        f"max_mutations = {max_mutations}; send each mutation on its own",
                    )
                    execution.result = GraphQLExecutionResult(data=None, errors=[error])
                else:
                    context.mutation_fields = spent
            yield

    return MutationBudget


def _mutation_fields(execution: ExecutionContext) -> int:
    document = execution.graphql_document
    assert document is not None  # executing: parsed and valid
    operation = get_operation_ast(document, execution.operation_name)
    if operation is None:
        return 0
    measure = _Measure(_fragments(document.definitions))
    return sum(
        1
        for field, _, _ in measure.fields(operation.selection_set, None)
        if not field.name.value.startswith("__")
    )


class NoIntrospection(ValidationRule):
    """Refuses `__schema` and `__type` (`__typename` stays: clients need it)."""

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        if node.name.value in ("__schema", "__type"):
            self.report_error(
                GraphQLError(
                    f"introspection is off on this gateway ('{node.name.value}' refused; "
                    "[graphql] introspection)",
                    node,
                    extensions={"code": "INTROSPECTION_DISABLED"},
                )
            )


class _Measure:
    """Depth, and cost: one per field, times the page size of every list it sits in.

    A page asked for without its size counts at the default page size, which is what it
    returns; the schema says which fields are pages, so the walk follows the types."""

    def __init__(
        self,
        fragments: dict[str, FragmentDefinitionNode],
        schema: GraphQLSchema | None = None,
        max_page: int = 1,
        default_page: int = 1,
    ) -> None:
        self.fragments = fragments
        self.schema = schema
        self.max_page = max_page
        self.default_page = default_page
        self.seen: set[str] = set()

    def selection(
        self, selection_set: SelectionSetNode | None, depth: int, parent: GraphQLNamedType | None
    ) -> tuple[int, int]:
        if selection_set is None:
            return depth, 0
        deepest, cost = depth, 0
        for field, nested, owner in self.fields(selection_set, parent):
            definition = _definition(owner, field.name.value)
            multiplier = self._multiplier(field, definition) if nested is not None else 1
            child = None if definition is None else get_named_type(definition.type)
            child_depth, child_cost = self.selection(nested, depth + 1, child)
            deepest = max(deepest, child_depth if nested is not None else depth + 1)
            cost += 1 + multiplier * child_cost
        return deepest, cost

    def fields(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None
    ) -> Iterator[tuple[FieldNode, SelectionSetNode | None, GraphQLNamedType | None]]:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                yield selection, selection.selection_set, parent
            elif isinstance(selection, InlineFragmentNode):
                owner = self._type(selection.type_condition, parent)
                yield from self.fields(selection.selection_set, owner)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is not None and selection.name.value not in self.seen:
                    self.seen.add(selection.name.value)  # a fragment cycle is its own error
                    owner = self._type(fragment.type_condition, parent)
                    yield from self.fields(fragment.selection_set, owner)
                    self.seen.discard(selection.name.value)

    def _type(
        self, condition: NamedTypeNode | None, parent: GraphQLNamedType | None
    ) -> GraphQLNamedType | None:
        if condition is None or self.schema is None:
            return parent
        return self.schema.get_type(condition.name.value)

    def _multiplier(self, field: FieldNode, definition: GraphQLField | None) -> int:
        for argument in field.arguments or ():
            if argument.name.value not in _LIST_ARGUMENTS:
                continue
            value = argument.value
            if isinstance(value, IntValueNode):
                return max(1, min(int(value.value), self.max_page))
            if isinstance(value, ListValueNode):
                return max(1, len(value.values))
            return self.max_page  # a variable: assume the largest page it could ask for
        if definition is not None and _PAGE_ARGUMENTS & set(definition.args):
            return self.default_page
        return 1


def _definition(owner: GraphQLNamedType | None, name: str) -> GraphQLField | None:
    """The field `name` of an object or interface type (unknown names fail validation)."""
    if isinstance(owner, GraphQLObjectType | GraphQLInterfaceType):
        found: GraphQLField | None = owner.fields.get(name)
        return found
    return None


def document_cache(maxsize: int) -> type[SchemaExtension]:
    """Parses each document text once (agents and apps send the same few over and over),
    and gives a document that does not parse its code.

    Raised from this hook, as from Strawberry's `ParserCache`, a syntax error reaches the
    caller past `ErrorCodes`: it is coded here, GRAPHQL_PARSE_FAILED, or QUERY_REJECTED
    naming `max_tokens` when the parser stopped at the limit.
    """
    parse_once = functools.lru_cache(maxsize=maxsize)(parse)

    class DocumentCache(SchemaExtension):
        def on_parse(self) -> Iterator[None]:
            execution = self.execution_context
            if execution.query:
                try:
                    execution.graphql_document = parse_once(
                        execution.query, **execution.parse_options
                    )
                except GraphQLError as error:
                    raise _parse_failure(error) from None
            yield

    return DocumentCache


def _parse_failure(error: GraphQLError) -> GraphQLError:
    message, extensions = error.message, {"code": "GRAPHQL_PARSE_FAILED"}
    if tokens := _TOKEN_LIMIT.search(message):
        message = f"the document has more than {tokens.group(1)} tokens, the limit max_tokens"
        extensions = {"code": "QUERY_REJECTED", "limit": "max_tokens"}
    return GraphQLError(
        message, source=error.source, positions=error.positions, extensions=extensions
    )


class ErrorCodes(SchemaExtension):
    """Gives every error a stable `extensions.code`; masks anything that is not ours."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is None or not result.errors:
            return
        result.errors = [_coded(error) for error in result.errors]


def _coded(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    if isinstance(original, GatehouseError):
        return GraphQLError(
            error.message, error.nodes, path=error.path, extensions=original.extensions()
        )
    if original is None or isinstance(original, GraphQLError):
        extensions = dict(error.extensions or {})
        extensions.setdefault("code", "GRAPHQL_VALIDATION_FAILED")
        return GraphQLError(error.message, error.nodes, path=error.path, extensions=extensions)
    incident = uuid.uuid4().hex
    log.error(
        "unhandled error in resolver",
        exc_info=(type(original), original, original.__traceback__),
        extra={"incident": incident, "path": error.path},
    )
    return GraphQLError(
        f"internal error (incident {incident})",
        error.nodes,
        path=error.path,
        extensions={"code": "INTERNAL", "incident": incident},
    )


class ClassifiedFields(SchemaExtension):
    """Once the operation has run: which masked values and audited fields its response holds
    (gateway/graphql/classified.py), for `MaskedPaths` and `AgentReadAudit`."""

    def on_execute(self) -> Iterator[None]:
        yield
        execution = self.execution_context
        result, document = execution.result, execution.graphql_document
        if not isinstance(result, GraphQLExecutionResult) or document is None:
            return
        operation = get_operation_ast(document, execution.operation_name)
        if operation is not None:
            inspect_response(
                execution.schema,
                execution.context,
                operation,
                _fragments(document.definitions),
                execution.variables or {},
                result.data,
            )


class MaskedPaths(SchemaExtension):
    """Puts the paths of masked values in `extensions.masked`."""

    def get_results(self) -> dict[str, Any]:
        context = self.execution_context.context
        masked = getattr(context, "masked", None)
        return {"masked": sorted(masked)} if masked else {}


class AgentReadAudit(SchemaExtension):
    """Audits which pii and financial fields an agent read (field names, never values)."""

    async def on_operation(self) -> AsyncIterator[None]:
        yield
        context = self.execution_context.context
        reads: set[str] | None = getattr(context, "classified_reads", None)
        if not reads:
            return
        principal = context.principal
        await context.services.audit.append(
            AuditEvent(
                event="read.classified",
                principal=principal.id,
                principal_kind=principal.kind.value,
                on_behalf_of=principal.on_behalf_of,
                channel=context.channel,
                outcome="READ",
                trace_id=uuid.uuid4().hex,
                payload={
                    "fields": sorted(reads),
                    "operation": self.execution_context.operation_name,
                },
            )
        )
        reads.clear()


class Observability(SchemaExtension):
    """A span per operation, its latency and outcome in the metrics, its trace id in the
    response's `extensions.traceId` (the same id the audit trail records)."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        with tracer().start_as_current_span("graphql") as span:
            self.trace_id = current_trace_id()
            try:
                yield
            finally:
                # The document's own operation name is known only once it has been parsed.
                name = self.execution_context.operation_name or "anonymous"
                span.update_name(f"graphql {name}")
                span.set_attribute("graphql.operation.name", name)
        result = self.execution_context.result
        outcome = "ok" if result is not None and not result.errors else "error"
        metrics = self.execution_context.context.services.metrics
        metrics.requests.labels(f"graphql:{name}", outcome).inc()
        metrics.latency.labels(f"graphql:{name}").observe(time.perf_counter() - started)

    def get_results(self) -> dict[str, Any]:
        trace_id = getattr(self, "trace_id", None)
        return {"traceId": trace_id} if trace_id else {}
