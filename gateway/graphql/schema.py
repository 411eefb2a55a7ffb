"""The GraphQL schema, with its limits and extensions."""

from __future__ import annotations

import functools

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
from gateway.graphql.mutations import ActionQueries, Mutation
from gateway.graphql.queries import Query as ReadQueries

Query = merge_types("Query", (ReadQueries, ActionQueries))


@functools.cache
def build_schema(limits: LimitsConfig) -> strawberry.Schema:
    """The schema, refusing over-limit operations before anything runs.

    Built once per set of limits: the app and every MCP tool call share it.
    """
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
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
