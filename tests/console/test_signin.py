"""Signing in and out: the session cookie, who may sign in, CSRF, redirects to sign-in."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from gateway.app import create_app
from gateway.demo import DemoEstate
from gateway.settings import Settings
from tests.console.flows import Console, csrf_token, sign_in
from tests.factories import live_server


def _session_cookie(response: httpx.Response) -> str:
    (header,) = [h for h in response.headers.get_list("set-cookie") if "gatehouse_session=" in h]
    return header


def test_login_with_person_key_sets_hardened_session_cookie(console: Console) -> None:
    with console.client() as client:
        response = sign_in(client, console.keys["finn"])
    assert response.status_code == 303
    flags = {part.strip().lower() for part in _session_cookie(response).split(";")[1:]}
    assert flags >= {"httponly", "samesite=strict", "path=/console", "max-age=28800"}
    assert "secure" not in flags


def test_login_over_https_marks_cookie_secure(console: Console) -> None:
    https = {"X-Forwarded-Proto": "https"}  # as a TLS-terminating proxy on loopback says
    with console.client() as client:
        form = client.get("/console/login", headers=https)
        login_cookie = form.cookies["gatehouse_login_csrf"]
        response = client.post(
            "/console/login",
            data={"api_key": console.keys["carla"], "csrf_token": csrf_token(form.text)},
            headers={**https, "Cookie": f"gatehouse_login_csrf={login_cookie}"},
        )
    assert response.status_code == 303
    assert "secure" in _session_cookie(response).lower().split("; ")


def test_login_stores_only_the_token_digest(console: Console) -> None:
    with console.signed_in("carla") as client:
        token = client.cookies["gatehouse_session"]
        rows = console.sql(
            "SELECT token_sha256, principal, created_at, expires_at FROM console_sessions "
            "WHERE token_sha256 = ?",
            hashlib.sha256(token.encode()).hexdigest(),
        )
    assert [row[1] for row in rows] == ["carla"]
    assert token not in str(console.sql("SELECT * FROM console_sessions"))


def test_login_session_expires_after_eight_hours(console: Console) -> None:
    with console.signed_in("carla") as client:
        digest = hashlib.sha256(client.cookies["gatehouse_session"].encode()).hexdigest()
        created, expires = console.sql(
            "SELECT created_at, expires_at FROM console_sessions WHERE token_sha256 = ?", digest
        )[0]
    lifetime = datetime.fromisoformat(expires) - datetime.fromisoformat(created)
    assert lifetime == timedelta(hours=8)


@pytest.mark.parametrize("principal", ["restock-bot", "storefront"])
def test_login_with_agent_or_service_key_is_refused_with_reason(
    console: Console, principal: str
) -> None:
    with console.client() as client:
        response = sign_in(client, console.keys[principal])
    assert response.status_code == 403
    assert "The console is for people" in response.text
    assert "gatehouse_session" not in response.headers.get("set-cookie", "")


def test_login_with_wrong_key_is_401_without_session(console: Console) -> None:
    with console.client() as client:
        response = sign_in(client, "gh_finn_not-a-real-key")
    assert response.status_code == 401
    assert "not recognised" in response.text
    assert "gatehouse_session" not in response.headers.get("set-cookie", "")


def test_login_without_form_token_is_403(console: Console) -> None:
    with console.client() as client:
        response = client.post("/console/login", data={"api_key": console.keys["finn"]})
    assert response.status_code == 403
    assert "gatehouse_session" not in response.headers.get("set-cookie", "")


@pytest.mark.parametrize("page", ["/console/approvals", "/console/audit?outcome=APPLIED"])
def test_page_signed_out_redirects_to_login_with_next(console: Console, page: str) -> None:
    with console.client() as client:
        response = client.get(page)
    assert response.status_code == 303
    assert response.headers["location"] == f"/console/login?{urlencode({'next': page})}"


def test_login_goes_back_to_next_page(console: Console) -> None:
    with console.client() as client:
        response = sign_in(client, console.keys["carla"], "/console/audit?outcome=APPLIED")
    assert response.headers["location"] == "/console/audit?outcome=APPLIED"


@pytest.mark.parametrize(
    "next_path", ["https://evil.example/", "//evil.example/console", "/graphql", "/\\evil.example"]
)
def test_login_next_outside_console_goes_home(console: Console, next_path: str) -> None:
    with console.client() as client:
        response = sign_in(client, console.keys["carla"], next_path)
    assert response.headers["location"] == "/console/"


def test_home_sends_each_person_to_their_first_page(console: Console) -> None:
    with console.signed_in("finn") as finn, console.signed_in("carla") as carla:
        assert finn.get("/console/").headers["location"] == "/console/approvals"
        assert carla.get("/console/").headers["location"] == "/console/audit"


def test_logout_deletes_session_and_old_cookie_stops_working(console: Console) -> None:
    with console.signed_in("finn") as client:
        token = client.cookies["gatehouse_session"]
        page = client.get("/console/sources")
        response = client.post("/console/logout", data={"csrf_token": csrf_token(page.text)})
        assert response.status_code == 303
        assert 'gatehouse_session=""' in response.headers["set-cookie"]
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert console.sql("SELECT * FROM console_sessions WHERE token_sha256 = ?", digest) == []
    with console.client() as replay:
        replay.cookies.set("gatehouse_session", token, path="/console")
        assert replay.get("/console/sources").status_code == 303


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_logout_without_right_token_is_403_and_session_stays(
    console: Console, token: str | None
) -> None:
    with console.signed_in("finn") as client:
        data = {} if token is None else {"csrf_token": token}
        response = client.post("/console/logout", data=data)
        assert response.status_code == 403
        assert client.get("/console/sources").status_code == 200


def test_expired_session_redirects_to_login(console: Console) -> None:
    with console.signed_in("carla") as client:
        digest = hashlib.sha256(client.cookies["gatehouse_session"].encode()).hexdigest()
        past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
        console.sql(
            "UPDATE console_sessions SET expires_at = ? WHERE token_sha256 = ?", past, digest
        )
        assert client.get("/console/audit").status_code == 303


def test_console_pages_carry_protective_headers(console: Console) -> None:
    with console.client() as client:
        response = client.get("/console/login")
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


def test_failed_sign_ins_count_across_replicas_sharing_redis(
    estate: DemoEstate, tmp_path: Path
) -> None:
    # Three failures a minute from one address, counted in the machine's Redis: a guesser
    # gains nothing by spreading guesses over the replicas behind the load balancer.
    config = estate.config()
    limits = config.limits.model_copy(
        update={
            "sign_in_failures": "3/minute",
            "counters": "redis://127.0.0.1:6379/0",
            "counters_prefix": f"gh-test-{uuid.uuid4().hex[:8]}",
        }
    )
    config = config.model_copy(update={"limits": limits})
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}")
    address = {"X-Forwarded-For": "10.7.0.1"}
    with (
        live_server(create_app(settings, config)) as one,
        live_server(create_app(settings, config)) as two,
    ):
        statuses = []
        for replica in (one, two, one, two):
            with httpx.Client(base_url=replica.url, headers=address, timeout=15) as client:
                statuses.append(sign_in(client, "gh_guess").status_code)
    assert statuses == [401, 401, 401, 429]
