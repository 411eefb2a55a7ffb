"""The demo storefront: its own copy of stock per SKU behind a small HTTP JSON API, in its own
process. Gatehouse's drift checks compare it with the ERP, the stock's system of record.

    python -m sources.demo.storefront --db PATH [--host 127.0.0.1] [--port 0]
    ├── GET  /health
    ├── GET  /api/stock/{sku}               {sku, available, updated_at}
    ├── GET  /api/stock?limit=&offset=      a page in SKU order, with total
    └── PATCH /api/stock/{sku}              {available}: sets the copy (honours Idempotency-Key)

The copy is what the shop shows as "in stock" for one warehouse (WH-BER). It is synced from the
ERP now and then, not on every order: orders placed through the gateway change the ERP at once
and the storefront only when it is set again, so it drifts as orders come in. `seed_storefront`
(storefront_store.py) copies the ERP's stock and leaves a few SKUs off by some units, as a
missed sync would; `StorefrontProcess` (process.py) runs this module as a child process.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StrictInt

from sources.demo.sqlite_service import SqliteService, serve
from sources.demo.storefront_store import LOCATION, connect, seed_storefront

__all__ = ["LOCATION", "create_storefront_app", "main", "seed_storefront"]

MAX_LIMIT = 1000
READY_LINE = "Storefront listening on {url}"

Json = dict[str, Any]


class StockIn(BaseModel):
    """A PATCH body: the copy's new value."""

    model_config = ConfigDict(extra="forbid")

    available: StrictInt


def create_storefront_app(db_path: Path) -> FastAPI:
    """The storefront's HTTP API over the SQLite file at `db_path`."""
    app = FastAPI(title="Demo storefront", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/health")
    def health() -> Json:
        return {"status": "ok"}

    @app.get("/api/stock/{sku}")
    def get_stock(sku: str) -> JSONResponse:
        with connect(db_path) as connection:
            row = connection.execute("SELECT * FROM stock WHERE sku = ?", (sku,)).fetchone()
        if row is None:
            return JSONResponse({"error": "not_found"}, status_code=HTTPStatus.NOT_FOUND)
        return JSONResponse(dict(row))

    @app.get("/api/stock")
    def list_stock(
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Json:
        with connect(db_path) as connection:
            total = connection.execute("SELECT COUNT(*) FROM stock").fetchone()[0]
            rows = connection.execute(
                "SELECT * FROM stock ORDER BY sku LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
        return {"data": [dict(row) for row in rows], "total": total}

    @app.patch("/api/stock/{sku}")
    def patch_stock(
        sku: str,
        body: StockIn,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> JSONResponse:
        return _put(db_path, sku, body.available, idempotency_key)

    return app


def _put(db_path: Path, sku: str, available: int, key: str | None) -> JSONResponse:
    now = datetime.now(UTC).isoformat()
    with connect(db_path) as connection:
        connection.execute("BEGIN IMMEDIATE")
        replayed = (
            key is not None
            and connection.execute(
                "SELECT 1 FROM idempotency_keys WHERE key = ?", (key,)
            ).fetchone()
        )
        if not replayed:
            changed = connection.execute(
                "UPDATE stock SET available = ?, updated_at = ? WHERE sku = ?",
                (available, now, sku),
            ).rowcount
            if not changed:
                connection.execute("ROLLBACK")
                return JSONResponse({"error": "not_found"}, status_code=HTTPStatus.NOT_FOUND)
            if key is not None:
                connection.execute(
                    "INSERT INTO idempotency_keys VALUES (?, ?, ?)", (key, sku, available)
                )
        row = connection.execute("SELECT * FROM stock WHERE sku = ?", (sku,)).fetchone()
        connection.execute("COMMIT")
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return JSONResponse(dict(row), headers=headers)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the storefront until SIGTERM or SIGINT; the first stdout line says where."""
    serve(_SERVICE, argv)


_SERVICE = SqliteService(
    prog="python -m sources.demo.storefront",
    description=__doc__,
    db_help="the file seed_storefront made",
    missing_db="no storefront database at {db}: create it with seed_storefront()",
    create_app=create_storefront_app,
    ready_line=READY_LINE,
)


if __name__ == "__main__":
    main()
