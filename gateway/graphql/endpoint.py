"""The GraphQL endpoint: Strawberry's router, charging every operation of a request to the
caller's rate limit before any of them runs, and writing its answers with orjson.

    POST /graphql  -> charge the operations (429 and Retry-After when spent) -> Strawberry
"""

from __future__ import annotations

import logging

import orjson
from cross_web import AsyncHTTPRequestAdapter
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLRequestData
from strawberry.types import ExecutionResult, SubscriptionExecutionResult

from gateway.errors import RateLimited
from gateway.graphql.context import Context

log = logging.getLogger("gatehouse.graphql")


class GraphQLEndpoint(GraphQLRouter[Context, None]):
    """Strawberry's FastAPI router, rate limited per principal in operations."""

    def encode_json(self, data: object) -> bytes:
        """The response body: an answer holds only JSON's own types (scalars are serialized
        by then), which orjson writes several times faster than the standard library."""
        return orjson.dumps(data)

    async def execute_operation(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: Context,
        root_value: None,
        sub_response: Response,
    ) -> ExecutionResult | list[ExecutionResult] | SubscriptionExecutionResult:
        """Refuse the whole request, running nothing, when its operations would overspend."""
        batch = isinstance(request_data, list)
        operations = len(request_data) if isinstance(request_data, list) else 1
        try:
            await context.services.rates.charge(context.principal, operations)
        except RateLimited as exc:
            log.info("rate limited", extra={"code": exc.code, "limit": exc.limit})
            sub_response.status_code = exc.status
            sub_response.headers["Retry-After"] = str(exc.retry_after)
            result = ExecutionResult(
                data=None, errors=[GraphQLError(exc.message, extensions=exc.extensions())]
            )
            return [result] * operations if batch else result
        return await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )
