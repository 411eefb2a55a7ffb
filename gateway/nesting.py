"""An ASGI middleware that refuses JSON bodies nested deeper than a limit, with 400.

A client's variables (GraphQL) or arguments (MCP) are JSON of any shape; parsing and then
coercing them recurse once per level, so 100,000 nested lists end in a RecursionError.
The depth is measured on the raw bytes, without recursing, before anything parses them.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(body: bytes, limit: int) -> int:
    """How deep the JSON in `body` nests, counting no further than `limit + 1`."""
    depth = deepest = 0
    for byte in _STRING.sub(b"", body).translate(None, _NOT_BRACKETS):
        if byte in b"[{":
            depth += 1
            if depth > limit:
                return depth
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class NestingLimit:
    """Reads a JSON request body (already bounded in size) and refuses it when it nests
    deeper than `max_depth`; passes it on, unchanged, otherwise."""

    def __init__(self, app: ASGIApp, *, max_depth: int) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", ()))
        if scope["type"] != "http" or b"json" not in headers.get(b"content-type", b""):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        if json_depth(body, self.max_depth) > self.max_depth:
            await self._refuse(send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        message = (
            f"request JSON (variables, arguments) nests deeper than {self.max_depth} levels, "
            "the limit (limits.max_json_depth)"
        )
        body = json.dumps(
            {"errors": [{"message": message, "extensions": {"code": "QUERY_REJECTED"}}]}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
