"""The GraphQL schema, with its limits and extensions."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import strawberry
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types

from gateway.config import LimitsConfig
from gateway.graphql.extensions import (
    AgentReadAudit,
    ErrorCodes,
    MaskedPaths,
    Observability,
    query_limits,
)
from gateway.graphql.mutations import ActionQueries, build_mutation, untypeable_input
from gateway.graphql.queries import Query as ReadQueries
from sources.actions import ActionKind

Query = merge_types("Query", (ReadQueries, ActionQueries))


def build_schema(limits: LimitsConfig, kinds: Sequence[ActionKind]) -> strawberry.Schema:
    """The schema, with a mutation per configured action, refusing over-limit operations
    before anything runs.

    Built once per set of limits and of action classes: the app and every MCP tool call
    share it.
    """
    try:
        return _schema(limits, tuple(type(kind) for kind in kinds))
    except TypeError as exc:
        raise untypeable_input(kinds) or exc from exc


@functools.cache
def _schema(limits: LimitsConfig, classes: tuple[type[ActionKind], ...]) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        mutation=build_mutation([cls() for cls in classes]),
        config=StrawberryConfig(batching_config={"max_operations": limits.max_operations}),
        # Parsing and validating the same document again is wasted work; agents and apps
        # send the same few documents over and over.
        extensions=[
            Observability,
            lambda: ParserCache(maxsize=256),
            lambda: ValidationCache(maxsize=256),
            query_limits(limits),
            ErrorCodes,
            MaskedPaths,
            AgentReadAudit,
        ],
    )
