"""The GraphQL schema, with its limits and extensions."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence

import strawberry
from graphql import GraphQLError
from strawberry.extensions import AddValidationRules, ValidationCache
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from gateway.config import GraphQLConfig, LimitsConfig
from gateway.errors import GatehouseError
from gateway.graphql.drift import DriftQueries
from gateway.graphql.extensions import (
    AgentReadAudit,
    ClassifiedFields,
    ErrorCodes,
    MaskedPaths,
    NoIntrospection,
    Observability,
    document_cache,
    query_limits,
)
from gateway.graphql.ledger import LedgerQueries
from gateway.graphql.mutations import ActionQueries, build_mutation, untypeable_input
from gateway.graphql.owners import OwnerQueries
from gateway.graphql.queries import Query as ReadQueries
from sources.actions import ActionKind

Query = merge_types(
    "Query", (ReadQueries, ActionQueries, LedgerQueries, DriftQueries, OwnerQueries)
)

log = logging.getLogger("gatehouse.graphql")
# graphql-core appends its suggestions to the end of a message.
_SUGGESTION = re.compile(r"\s*Did you mean .*\Z", re.DOTALL)


class Schema(strawberry.Schema):
    """Strawberry's schema, logging each error as one JSON event by its code and path.

    Strawberry's own logger writes the message, the query text around it and a traceback:
    a syntax or validation message quotes the query's literals, and a refused approval or
    a failed source is an outcome, not an exception. Errors that are none of ours are
    logged by `ErrorCodes`, with the incident id the caller is given.
    """

    @staticmethod
    def remove_field_suggestion(error: GraphQLError) -> None:
        """Every "Did you mean ...?" goes, not only field names': argument names, types and
        enum values leak the schema too (called when `disable_field_suggestions` is set)."""
        error.message = _SUGGESTION.sub("", error.message)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """One info event per expected error: code and path, never the message."""
        for error in errors:
            original = error.original_error
            if isinstance(original, GatehouseError):
                code = original.code
            elif original is None or isinstance(original, GraphQLError):
                code = str((error.extensions or {}).get("code", "GRAPHQL_VALIDATION_FAILED"))
            else:
                continue
            log.info("graphql error", extra={"code": code, "path": error.path})


def build_schema(
    limits: LimitsConfig, kinds: Sequence[ActionKind], graphql: GraphQLConfig | None = None
) -> strawberry.Schema:
    """The schema, with a mutation per configured action, refusing over-limit operations
    before anything runs; introspection and suggestions only where `graphql` allows them
    (off when it is not given).

    Built once per set of limits, GraphQL settings and action classes: the app and every MCP
    tool call share it.
    """
    try:
        return _schema(limits, graphql or GraphQLConfig(), tuple(type(kind) for kind in kinds))
    except TypeError as exc:
        raise untypeable_input(kinds) or exc from exc


@functools.cache
def _schema(
    limits: LimitsConfig, graphql: GraphQLConfig, classes: tuple[type[ActionKind], ...]
) -> strawberry.Schema:
    return Schema(
        query=Query,
        mutation=build_mutation([cls() for cls in classes]),
        config=StrawberryConfig(
            batching_config={"max_operations": limits.max_operations},
            disable_field_suggestions=not graphql.introspection,
        ),
        # Parsing and validating the same document again is wasted work; agents and apps
        # send the same few documents over and over.
        extensions=[
            Observability,
            *query_limits(limits),
            document_cache(maxsize=256),
            lambda: ValidationCache(maxsize=256),
            *([] if graphql.introspection else [lambda: AddValidationRules([NoIntrospection])]),
            ErrorCodes,
            ClassifiedFields,
            MaskedPaths,
            AgentReadAudit,
        ],
    )
