"""The composition root: `create_app` builds every service once, in the lifespan.

POST /graphql   the GraphQL API (GET serves GraphiQL)
GET  /healthz   the process is alive
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import alerts, graphiql, outbox
from gateway.access_log import AccessLog
from gateway.actions.store import Action, Status, count_by_status
from gateway.audit import AuditTrail
from gateway.authz import Policy
from gateway.body_limit import BodyLimit
from gateway.catalog import Catalog, action_kinds, load_catalog
from gateway.checkpoints import checkpointer_from_settings
from gateway.config import GatewayConfig, load_config
from gateway.connectors import build_connectors
from gateway.console import console_router
from gateway.counters import Windows
from gateway.database import create_engine, create_schema
from gateway.drift import drift_alerts, sweep_if_due
from gateway.errors import Unauthenticated
from gateway.execution import Execution
from gateway.graphql.context import Context
from gateway.graphql.endpoint import GraphQLEndpoint
from gateway.graphql.schema import build_schema
from gateway.health import readiness
from gateway.invalidation import Listener
from gateway.leases import Leases
from gateway.mcp import BearerGate, http_transport
from gateway.metrics import Metrics
from gateway.moves import Moves
from gateway.nesting import NestingLimit
from gateway.notifier import Notifier
from gateway.oauth import metadata_routes
from gateway.oidc import OpenIdClient
from gateway.outcomes import Outcomes
from gateway.pipeline import Writes
from gateway.principals import Authenticator
from gateway.rates import Rates
from gateway.reads import Reads
from gateway.recovery import Recovery
from gateway.services import Services
from gateway.settings import Settings
from gateway.sign_ins import SignIns
from gateway.telemetry import configure_tracing

log = logging.getLogger("gatehouse")


def build_services(settings: Settings, config: GatewayConfig) -> Services:
    """Every long-lived service, built once (the database schema is made in `start`)."""
    connectors = build_connectors(config)
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    metrics = Metrics(lambda: connectors)
    reads = Reads(
        entities=config.entities,
        connectors=connectors,
        on_lookup=lambda entity, hit: metrics.cache.labels(entity, "hit" if hit else "miss").inc(),
        read_retry={name: source.read_retry for name, source in config.sources.items()},
    )
    policy = Policy(
        config.policy_path("model"),
        config.policy_path("policy"),
        roles={name: p.roles for name, p in config.principals.items()},
    )
    authenticator = Authenticator(config.principals, auth=config.auth, jwt_secret=secret)
    engine = create_engine(settings.database_url)
    audit = AuditTrail(engine)
    catalog = load_catalog(config.actions, connectors, config.entities)
    writes = build_writes(
        engine=engine,
        audit=audit,
        policy=policy,
        catalog=catalog,
        authenticator=authenticator,
        reads=reads,
        config=config,
        on_outcome=lambda action: _outcome(metrics, notifier, action),
    )
    # One count of rate windows for principals and channels, shared across replicas if Redis.
    windows = Windows(config.limits.counters, prefix=config.limits.counters_prefix)
    notifier = Notifier(
        engine=engine,
        windows=windows,
        config=config,
        catalog=catalog,
        reads=reads,
        connectors=connectors,
        approvers_for=writes.approvers_for,
        clock=lambda: datetime.now(UTC),
        on_delivery=lambda channel, outcome: metrics.deliveries.labels(channel, outcome).inc(),
        conditions=[drift_alerts],
    )
    return Services(
        settings=settings,
        config=config,
        connectors=connectors,
        reads=reads,
        policy=policy,
        authenticator=authenticator,
        engine=engine,
        audit=audit,
        catalog=catalog,
        writes=writes,
        metrics=metrics,
        rates=Rates(config.limits.rate, windows),
        windows=windows,
        notifier=notifier,
        # A configured checkpoint directory without a usable signing key stops start-up here.
        checkpointer=checkpointer_from_settings(settings),
        sign_ins=SignIns(
            audit,
            windows,
            failures=config.limits.sign_in_failures,
            starts=config.limits.sso_starts,
        ),
        oidc=OpenIdClient(config.auth.oidc) if config.auth.oidc else None,
    )


def _outcome(metrics: Metrics, notifier: Notifier, action: Action) -> None:
    metrics.writes.labels(action.kind, action.status.value).inc()
    notifier.wake()  # what the write owes someone goes out now


def build_writes(
    *,
    engine: AsyncEngine,
    audit: AuditTrail,
    policy: Policy,
    catalog: Catalog,
    authenticator: Authenticator,
    reads: Reads,
    config: GatewayConfig,
    on_outcome: Callable[[Action], None],
) -> Writes:
    """The write path's parts, each built once: outcomes, execution, moves, the pipeline."""
    clock = lambda: datetime.now(UTC)  # noqa: E731 - one clock shared by every part
    outcomes = Outcomes(
        engine=engine,
        audit=audit,
        policy=policy,
        catalog=catalog,
        authenticator=authenticator,
        leases=Leases(engine, seconds=config.writes.lease, clock=clock),
        clock=clock,
        on_outcome=on_outcome,
    )
    execution = Execution(
        outcomes, reads, entities=config.entities, approval_ttl=config.writes.approval_ttl
    )
    return Writes(
        outcomes=outcomes,
        execution=execution,
        moves=Moves(outcomes, execution),
        recovery=Recovery(outcomes),
        idempotency_ttl=config.writes.idempotency_ttl,
    )


async def start(services: Services) -> None:
    """Prepare what needs I/O before the first request: the gateway's own tables; then
    settle what a process that died left in flight."""
    await create_schema(services.engine)
    await services.notifier.start()
    await services.writes.recover_due()


async def housekeeping(services: Services, every: float = 2.0) -> None:
    """Every `every` seconds: pick up edited policy files without a restart, expire pending
    actions when due, recover actions a dead process left in flight, and checkpoint the
    audit trail when due.

    Reading or approving actions expires the due ones too; this records an expiry in the
    audit trail on time when nobody looks.
    """
    while True:
        await asyncio.sleep(every)
        for chore in _chores(services):
            try:
                await chore()
            except Exception:
                log.exception("housekeeping: %s failed", chore.__name__)


def _chores(services: Services) -> list[Callable[[], Awaitable[object]]]:
    chores: list[Callable[[], Awaitable[object]]] = [
        services.writes.refresh_policy,
        services.writes.expire_due,
        services.writes.recover_due,
    ]
    if (checkpointer := services.checkpointer) is not None:

        async def audit_checkpoint() -> None:
            await checkpointer.checkpoint_if_due(services.engine)

        chores.append(audit_checkpoint)
    if services.metrics.shared:
        # /metrics is answered by one worker: the others publish what only they know.

        async def publish_metrics() -> None:
            publish_worker_gauges(services)

        chores.append(publish_metrics)
    if (every := services.config.drift.every) is not None:
        # Copies compared with their systems of record when due, by one replica at a time.

        async def drift_sweep() -> None:
            await sweep_if_due(services, every=every)

        chores.append(drift_sweep)
    return chores


async def refresh_gauges(services: Services) -> None:
    """Gauges read at scrape time: pending approvals, cached records by freshness."""
    async with services.engine.connect() as connection:
        counts = await count_by_status(connection)
        queued = await outbox.counts(connection)
        open_alerts = await alerts.listed(connection, status=alerts.AlertStatus.OPEN, limit=10_000)
    services.metrics.pending.set(counts.get(Status.PENDING_APPROVAL.value, 0))
    services.metrics.notifications.clear()
    for (channel, status), count in queued.items():
        services.metrics.notifications.labels(channel, status).set(count)
    services.metrics.alerts.clear()
    for alert in open_alerts:
        services.metrics.alerts.labels(alert.kind, alert.owner).inc()
    publish_worker_gauges(services)


def publish_worker_gauges(services: Services) -> None:
    """What this process alone knows: its cached records by freshness, its source counters."""
    for entity in services.config.entities:
        for status, count in services.reads.cache_status(entity).items():
            services.metrics.freshness.labels(entity, status.value).set(count)
    services.metrics.publish()


async def get_services(request: Request) -> Services:
    """The process's services, from the app state set in the lifespan."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def graphql_context(request: Request) -> Context:
    """A fresh GraphQL context per request, for its caller; 401 with no data without one.

    One plain dependency on the request: FastAPI's solving of nested dependencies and header
    parameters is a visible share of a small query's cost.
    """
    services: Services = request.app.state.services
    authorization = request.headers.get("authorization")
    try:
        principal = await services.authenticator.verify(authorization)
    except Unauthenticated as exc:
        challenge = services.authenticator.challenge(authorization)
        raise HTTPException(401, exc.message, headers={"WWW-Authenticate": challenge}) from exc
    return Context(services=services, principal=principal)


def create_app(settings: Settings, config: GatewayConfig | None = None) -> FastAPI:
    """The ASGI application; services are built when it starts and closed when it stops."""
    config = config or load_config(settings.config)
    configure_tracing(otlp_endpoint=settings.otlp_endpoint)

    mcp = http_transport(lambda: app.state.services)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, config)
        await start(services)
        app.state.services = services
        chores = asyncio.create_task(housekeeping(services))
        renewals = asyncio.create_task(services.writes.leases.renew_forever())
        notifications = asyncio.create_task(services.notifier.run_forever())
        evictions = Listener(services.engine, services.reads)
        try:
            async with evictions.running(), mcp.run():
                yield
        finally:
            # Stopped and awaited before the engine is disposed: a task cancelled mid-round
            # rolls back on its connection, which must still be there.
            background = (chores, renewals, notifications)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await services.close()

    app = FastAPI(title="Gatehouse", lifespan=lifespan, docs_url=None, redoc_url=None)
    # Added first, so it runs last: the body it reads has been bounded by BodyLimit.
    app.add_middleware(NestingLimit, max_depth=config.limits.max_json_depth)
    app.add_middleware(BodyLimit, max_bytes=config.limits.max_body_bytes)
    app.add_middleware(
        AccessLog,
        metrics=lambda: app.state.services.metrics if hasattr(app.state, "services") else None,
    )

    @app.get("/graphql", include_in_schema=False)
    async def graphiql_page() -> HTMLResponse:
        # The IDE page itself needs no credential; its queries carry the caller's key.
        if not config.graphql.graphiql:
            raise HTTPException(404, "GraphiQL is off here ([graphql] graphiql)")
        if graphiql.missing():
            raise HTTPException(
                503, "GraphiQL's assets are not installed: python -m gateway.graphiql"
            )
        return HTMLResponse(graphiql.page())

    @app.get("/graphql/assets/{name:path}", include_in_schema=False)
    async def graphiql_asset(name: str) -> FileResponse:
        # Only the files the page names: the name is a key, never a path to resolve.
        if not config.graphql.graphiql or name not in graphiql.assets():
            raise HTTPException(404, "no such asset")
        return FileResponse(graphiql.ASSETS / name)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz(services: ServicesDep) -> JSONResponse:
        ready, detail = await readiness(services)
        return JSONResponse(detail, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics(services: ServicesDep) -> Response:
        await refresh_gauges(services)
        return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    router = GraphQLEndpoint(
        build_schema(config.limits, action_kinds(config.actions), config.graphql),
        context_getter=graphql_context,
        graphql_ide=None,
        allow_queries_via_get=False,
    )
    app.include_router(router, prefix="/graphql")
    gate = BearerGate(mcp.handle_request, lambda: app.state.services.authenticator)
    # Starlette serves a class instance as a raw ASGI app (a Mount would redirect to /mcp/).
    app.add_route("/mcp", gate, methods=["GET", "POST", "DELETE"])  # type: ignore[arg-type]
    app.include_router(console_router(), prefix="/console")
    if config.auth.oauth is not None:  # RFC 9728 metadata: how to get a token for /mcp
        app.router.routes.extend(metadata_routes(config.auth.oauth))
    return app
