"""Console responses when something goes wrong: a console page, never JSON or a traceback."""

from __future__ import annotations

import logging

import pytest
from fastapi import APIRouter, FastAPI, HTTPException, Response
from fastapi.testclient import TestClient

from gateway.console.pages import ConsoleRoute


async def _broken() -> Response:
    raise RuntimeError("connection string postgres://secret@db")


async def _gone() -> Response:
    raise HTTPException(status_code=410)


def _app() -> FastAPI:
    """Console routes that fail, served as the console serves its own."""
    routes = APIRouter(route_class=ConsoleRoute)
    routes.add_api_route("/broken", _broken, methods=["GET"])
    routes.add_api_route("/gone", _gone, methods=["GET"])
    app = FastAPI()
    app.include_router(routes, prefix="/console")
    return app


def test_console_route_failing_answers_a_500_page_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, "gatehouse.console"), TestClient(_app()) as client:
        response = client.get("/console/broken")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/html")
    assert "Something went wrong" in response.text
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    assert response.headers["X-Frame-Options"] == "DENY"  # the console's headers still
    assert any(r.message == "console page failed" for r in caplog.records)


def test_console_route_http_error_answers_a_page_with_its_status() -> None:
    with TestClient(_app()) as client:
        response = client.get("/console/gone")
    assert response.status_code == 410
    assert response.headers["content-type"].startswith("text/html")
    assert "Gone" in response.text
    assert '"detail"' not in response.text
