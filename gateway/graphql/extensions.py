"""GraphQL-wide concerns, as Strawberry extensions rather than code in every resolver.

QueryLimits      depth and cost budget, checked at validation: nothing runs over budget
ErrorCodes       every error gets `extensions.code`; anything not ours is masked
MaskedPaths      lists, in `extensions.masked`, the paths masked by classification
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
)
from strawberry.extensions import AddValidationRules, SchemaExtension

from gateway.audit import AuditEvent
from gateway.config import LimitsConfig
from gateway.errors import GatehouseError
from gateway.telemetry import current_trace_id, tracer

log = logging.getLogger("gatehouse.graphql")

_LIST_ARGUMENTS = ("first", "skus")


def query_limits(limits: LimitsConfig) -> Callable[[], SchemaExtension]:
    """A validation rule refusing operations deeper or costlier than the limits."""

    class QueryLimits(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            fragments = {
                d.name.value: d
                for d in self.context.document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }
            measure = _Measure(fragments, limits.max_page_size)
            depth, cost = measure.selection(node.selection_set, 0)
            if depth > limits.max_depth:
                self._reject(f"query depth {depth} exceeds the limit of {limits.max_depth}", node)
            elif cost > limits.max_complexity:
                self._reject(
                    f"query cost {cost} exceeds the budget of {limits.max_complexity}; "
                    "ask for smaller pages or fewer nested lists",
                    node,
                )

        def _reject(self, message: str, node: OperationDefinitionNode) -> None:
            self.report_error(GraphQLError(message, node, extensions={"code": "QUERY_REJECTED"}))

    return lambda: AddValidationRules([QueryLimits])


class _Measure:
    """Depth, and cost: one per field, times the page size of every list it sits in."""

    def __init__(self, fragments: dict[str, FragmentDefinitionNode], max_page: int) -> None:
        self.fragments = fragments
        self.max_page = max_page
        self.seen: set[str] = set()

    def selection(self, selection_set: SelectionSetNode | None, depth: int) -> tuple[int, int]:
        if selection_set is None:
            return depth, 0
        deepest, cost = depth, 0
        for field, nested in self._fields(selection_set):
            multiplier = self._multiplier(field) if nested is not None else 1
            child_depth, child_cost = self.selection(nested, depth + 1)
            deepest = max(deepest, child_depth if nested is not None else depth + 1)
            cost += 1 + multiplier * child_cost
        return deepest, cost

    def _fields(
        self, selection_set: SelectionSetNode
    ) -> Iterator[tuple[FieldNode, SelectionSetNode | None]]:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                yield selection, selection.selection_set
            elif isinstance(selection, InlineFragmentNode):
                yield from self._fields(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is not None and selection.name.value not in self.seen:
                    self.seen.add(selection.name.value)  # a fragment cycle is its own error
                    yield from self._fields(fragment.selection_set)
                    self.seen.discard(selection.name.value)

    def _multiplier(self, field: FieldNode) -> int:
        for argument in field.arguments or ():
            if argument.name.value not in _LIST_ARGUMENTS:
                continue
            value = argument.value
            if isinstance(value, IntValueNode):
                return max(1, min(int(value.value), self.max_page))
            if isinstance(value, ListValueNode):
                return max(1, len(value.values))
            return self.max_page  # a variable: assume the largest page it could ask for
        return 1


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
