"""The demo CRM: customers and their contacts behind a small HTTP JSON API, in its own process.

    python -m sources.demo.crm --db PATH [--host 127.0.0.1] [--port 0]
    ├── GET   /health
    ├── GET   /api/customers/{id}                one customer, with an ETag
    ├── GET   /api/customers?ids=C-00001,...     a batch in one round trip (at most 500 ids)
    ├── GET   /api/customers?q=&limit=&offset=   a page of a case-insensitive search, with total
    └── PATCH /api/customers/{id}                honours If-Match and Idempotency-Key

The data lives in one SQLite file (`crm_store.py`: `seed_crm` fills it); `CrmProcess` in
`process.py` runs this module as a child process.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from sources.demo.crm_store import CustomerStore, Json, Outcome, seed_crm
from sources.demo.sqlite_service import SqliteService, serve

__all__ = ["create_crm_app", "main", "seed_crm"]

MAX_IDS = 500
MAX_LIMIT = 500
READY_LINE = "CRM listening on {url}"


class ContactIn(BaseModel):
    """A contact as a PATCH body gives it."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(min_length=1, max_length=200)
    email: StrictStr = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    role: StrictStr = Field(max_length=100)


class CustomerPatch(BaseModel):
    """The fields a PATCH may change; absent fields are left as they are."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    email: StrictStr | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: StrictStr | None = Field(default=None, min_length=3, max_length=40)
    region: Literal["EU-NORTH", "EU-WEST", "EU-SOUTH"] | None = None
    segment: Literal["smb", "mid-market", "enterprise"] | None = None
    contacts: list[ContactIn] | None = Field(default=None, max_length=20)

    @model_validator(mode="after")
    def _set_fields_are_values(self) -> CustomerPatch:
        # Every stored field is required, so an explicit null would blank a required value.
        if not self.model_fields_set:
            raise ValueError("the body changes no field")
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"fields cannot be null: {', '.join(nulls)}")
        return self


def create_crm_app(db_path: Path) -> FastAPI:
    """The CRM's HTTP API over the SQLite file at `db_path`."""
    store = CustomerStore(db_path)
    app = FastAPI(title="Demo CRM", openapi_url=None, docs_url=None, redoc_url=None)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    @app.get("/health")
    def health() -> Json:
        return {"status": "ok"}

    @app.get("/api/customers/{customer_id}")
    def get_customer(customer_id: str) -> JSONResponse:
        found = store.get_many([customer_id])
        if not found:
            return _respond(Outcome(HTTPStatus.NOT_FOUND, {"error": "not_found"}))
        return _respond(Outcome(HTTPStatus.OK, found[0], etag=found[0]["etag"]))

    @app.get("/api/customers")
    def list_customers(
        ids: str | None = None,
        q: str = "",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> JSONResponse:
        if ids is None:
            data, total = store.search(q, limit=limit, offset=offset)
            return _respond(Outcome(HTTPStatus.OK, {"data": data, "total": total}))
        wanted = list(dict.fromkeys(part.strip() for part in ids.split(",") if part.strip()))
        if len(wanted) > MAX_IDS:
            body = {"error": "too_many_ids", "max": MAX_IDS, "given": len(wanted)}
            return _respond(Outcome(HTTPStatus.BAD_REQUEST, body))
        return _respond(Outcome(HTTPStatus.OK, {"data": store.get_many(wanted)}))

    @app.patch("/api/customers/{customer_id}")
    def patch_customer(
        customer_id: str,
        changes: CustomerPatch,
        if_match: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> JSONResponse:
        fields = changes.model_dump(exclude_unset=True)
        return _respond(store.patch(customer_id, fields, if_match, idempotency_key))

    return app


def _respond(outcome: Outcome) -> JSONResponse:
    headers = {"ETag": f'"{outcome.etag}"'} if outcome.etag else {}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(outcome.body, status_code=int(outcome.status), headers=headers)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": [str(part) for part in error["loc"]], "msg": str(error["msg"])}
        for error in exc.errors()
    ]
    body = {"error": "invalid_request", "detail": detail}
    return JSONResponse(body, status_code=HTTPStatus.UNPROCESSABLE_ENTITY)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
    return JSONResponse({"error": code}, status_code=exc.status_code, headers=exc.headers)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the CRM until SIGTERM or SIGINT; the first stdout line says where."""
    serve(_SERVICE, argv)


_SERVICE = SqliteService(
    prog="python -m sources.demo.crm",
    description=__doc__,
    db_help="the SQLite file seed_crm made",
    missing_db="no CRM database at {db}: create it with seed_crm() first",
    create_app=create_crm_app,
    ready_line=READY_LINE,
)


if __name__ == "__main__":
    main()
