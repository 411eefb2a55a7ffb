"""One span, one log event and the request metrics for every HTTP request."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import Metrics
from gateway.telemetry import tracer

log = logging.getLogger("gatehouse.http")


class AccessLog:
    """Wraps the app: a server span per request, then `request` logged with its trace id."""

    def __init__(self, app: ASGIApp, *, metrics: Callable[[], Metrics | None]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # The path only, never the query string: it may carry search terms or ids.
        with tracer().start_as_current_span(
            f"http {scope['method']}", attributes={"http.route": scope["path"]}
        ):
            try:
                await self.app(scope, receive, recording_send)
            finally:
                self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        log.info(
            "request",
            extra={
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
            },
        )
        metrics = self.metrics()
        if metrics is not None:
            operation = f"http {scope['method']} {route}"
            metrics.requests.labels(operation, "ok" if status < 500 else "error").inc()
            metrics.latency.labels(operation).observe(seconds)
