"""Readiness: the gateway's own database and every system of record answer, or which not."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from gateway.services import Services
from sources.connector import Connector
from sources.errors import SourceError

CHECK_TIMEOUT = 2.0


async def readiness(services: Services) -> tuple[bool, dict[str, Any]]:
    """Whether the gateway can serve, with a check per dependency."""
    names = list(services.connectors)
    results = await asyncio.gather(
        _database(services), *(_source(services.connectors[n]) for n in names)
    )
    database, *sources = results
    detail = {"database": database, "sources": dict(zip(names, sources, strict=True))}
    ready = all(check["ok"] for check in results)
    not_ready = [name for name, check in detail["sources"].items() if not check["ok"]]
    if not database["ok"]:
        not_ready.insert(0, "database")
    return ready, {"status": "ready" if ready else "not ready", "failing": not_ready, **detail}


async def _database(services: Services) -> dict[str, Any]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT), services.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means not ready; its kind is what we report
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


async def _source(connector: Connector) -> dict[str, Any]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await connector.ping()
    except (SourceError, TimeoutError) as exc:
        # Unauthenticated: what failed, never the detail (that is in the log).
        error = exc.public if isinstance(exc, SourceError) else "did not answer in time"
        return {"ok": False, "kind": connector.kind, "error": error}
    return {"ok": True, "kind": connector.kind}
