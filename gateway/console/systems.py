"""The sources page: each system of record's health, and each entity's contract and SLA.

    GET  /console/sources         per system: kind, health from its own call counters (last
                                  success, last error and when), calls and errors; per
                                  entity: its system, owner, freshness SLA, cache time, and
                                  how many of its cached records are fresh, aging, stale now
    POST /console/sources/check   ping every system now (CSRF-checked), then back to the page

Health is what the gateway saw on its last calls; "Check now" makes a fresh call so the
page does not have to wait for traffic to find out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from gateway.config import EntityConfig
from gateway.console.access import Page, Viewer
from gateway.console.pages import ROOT, ConsoleRoute, redirect, render
from gateway.console.signin import CSRF_FIELD, FormDep, ServicesDep, allowed
from sources.connector import Connector
from sources.errors import SourceError

ReaderDep = Annotated[Viewer, Depends(allowed(Page.SOURCES))]
CHECK_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class System:
    """One system of record as the page shows it."""

    name: str
    kind: str
    description: str
    healthy: bool | None
    calls: int
    errors: int
    last_ok_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    entities: list[str]


def router() -> APIRouter:
    """The sources page and its check."""
    routes = APIRouter(route_class=ConsoleRoute)
    routes.add_api_route("/sources", sources, methods=["GET"], include_in_schema=False)
    routes.add_api_route("/sources/check", check, methods=["POST"], include_in_schema=False)
    return routes


async def sources(services: ServicesDep, viewer: ReaderDep, checked: str | None = None) -> Response:
    """Every system's health and every entity's contract."""
    systems = [
        _system(connector, services.config.sources[name].description)
        for name, connector in services.connectors.items()
    ]
    entities: dict[str, EntityConfig] = dict(services.config.entities)
    return render(
        "sources.html",
        viewer=viewer,
        active=Page.SOURCES.value,
        systems=systems,
        health={s.name: s.healthy for s in systems},
        entities=entities,
        freshness={
            name: {
                status.value: count for status, count in services.reads.cache_status(name).items()
            }
            for name in entities
        },
        checked=checked is not None,
        csrf_field=CSRF_FIELD,
    )


async def check(services: ServicesDep, viewer: ReaderDep, _: FormDep) -> Response:
    """Call every system once now, so its health is current."""
    await asyncio.gather(*(_ping(c) for c in services.connectors.values()))
    return redirect(f"{ROOT}/sources?checked=1")


async def _ping(connector: Connector) -> None:
    # The connector records the outcome in its stats; the page reads them from there.
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await connector.ping()
    except (SourceError, TimeoutError):
        return


def _system(connector: Connector, description: str) -> System:
    stats = connector.stats
    return System(
        name=connector.name,
        kind=connector.kind,
        description=description,
        healthy=stats.healthy,
        calls=stats.calls,
        errors=stats.errors,
        last_ok_at=stats.last_ok_at,
        last_error=stats.last_error,
        last_error_at=stats.last_error_at,
        entities=list(connector.entities()),
    )
