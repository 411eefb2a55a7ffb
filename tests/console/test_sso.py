"""Single sign-on, end to end over real HTTP: the console, as a browser drives it, against an
OpenID provider in the tests (tests/openid_provider.py), with every refusal audited."""

from __future__ import annotations

import asyncio
import hashlib
import html
import itertools
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from playwright.sync_api import Browser, Page, expect, sync_playwright
from pydantic import SecretStr
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import GatewayConfig, OidcConfig, load_config
from gateway.demo import CONFIG_TEMPLATE, DemoEstate
from gateway.errors import ConfigError
from gateway.settings import Settings
from sources.demo import build_estate, create_erp
from tests.authorization_server import new_key
from tests.console.flows import Console, csrf_token, sign_in
from tests.console.test_browser import ARGS, CHROMIUM
from tests.factories import LiveServer, free_port, live_server, with_source
from tests.openid_provider import Grant, OpenIDProvider, User, s256

CLIENT_SECRET = "oidc-client-secret-for-tests"  # the test provider's client
OLIVIA = User("u-olivia", "olivia@acme.example")
FINN = User("u-finn", "finn@acme.example")  # approves restock-bot's requests (olivia owns it)
# Each test signs in from an address of its own (uvicorn trusts X-Forwarded-For from
# loopback), so the failures one test makes never throttle another's.
_ADDRESSES = (f"10.9.{n // 250}.{n % 250 + 1}" for n in itertools.count())


@dataclass(frozen=True)
class Sso:
    """The console with single sign-on, and the provider it trusts."""

    console: Console
    provider: OpenIDProvider

    def browser(self) -> httpx.Client:
        """A browser-like client from an address of its own; follows no redirect itself."""
        return httpx.Client(
            follow_redirects=False, timeout=15, headers={"X-Forwarded-For": next(_ADDRESSES)}
        )

    def begin(self, client: httpx.Client, next_path: str = "") -> str:
        """Start at the console, sign in at the provider: the callback URL it sends back."""
        query = f"?{urlencode({'next': next_path})}" if next_path else ""
        start = client.get(f"{self.console.url}/console/login/sso{query}")
        assert start.status_code == 303, start.text
        at_provider = client.get(start.headers["location"])
        assert at_provider.status_code == 302, at_provider.text
        location: str = at_provider.headers["location"]
        return location

    def sign_in(self, client: httpx.Client, next_path: str = "") -> httpx.Response:
        """The whole code flow; the callback's response."""
        return client.get(self.begin(client, next_path))

    def sign_out(self, client: httpx.Client) -> httpx.Response:
        """Press Sign out on a console page: the console's answer."""
        page = _session(client, self)
        return client.post(
            f"{self.console.url}/console/logout", data={"csrf_token": csrf_token(page.text)}
        )

    def events(self, name: str) -> list[dict[str, Any]]:
        """Audit events of one kind, newest last, with their payloads read."""
        rows = self.console.sql(
            "SELECT principal, principal_kind, channel, outcome, payload FROM audit_events "
            "WHERE event = ? ORDER BY seq",
            name,
        )
        return [
            {"principal": p, "kind": k, "channel": c, "outcome": o, **json.loads(payload)}
            for p, k, c, o, payload in rows
        ]


@contextmanager
def _serving(provider: OpenIDProvider) -> Iterator[LiveServer]:
    """The provider on loopback, under another host name than the gateway's: another site,
    as a real provider is."""
    with live_server(provider.app()) as running:
        provider.base_url = running.url.replace("127.0.0.1", "localhost")
        yield running


@contextmanager
def _sso_console(
    provider: OpenIDProvider,
    estate: DemoEstate,
    config: GatewayConfig,
    database: Path,
    require_amr: tuple[str, ...] = (),
) -> Iterator[Sso]:
    """A live gateway over `config` whose console trusts `provider`, registered there."""
    oidc = OidcConfig(
        issuer=provider.issuer,
        name="Acme SSO",
        client_id=provider.client_id,
        client_secret=SecretStr(CLIENT_SECRET),
        principals={"olivia@acme.example": "olivia", "finn@acme.example": "finn"},
        require_amr=list(require_amr),
    )
    config = config.model_copy(update={"auth": config.auth.model_copy(update={"oidc": oidc})})
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{database}"), config)
    with live_server(app) as server:
        # Registered beside the module's console for as long as this one serves.
        callback = f"{server.url}/console/login/sso/callback"
        signed_out = f"{server.url}/console/login?signed_out=1"
        provider.redirect_uris.append(callback)
        provider.post_logout_redirect_uris.append(signed_out)
        try:
            yield Sso(Console(url=server.url, keys=estate.keys, database=database), provider)
        finally:
            provider.redirect_uris.remove(callback)
            provider.post_logout_redirect_uris.remove(signed_out)


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenIDProvider]:
    server = OpenIDProvider(client_id="gatehouse-console", client_secret=CLIENT_SECRET, user=None)
    with _serving(server):
        yield server


@pytest.fixture(scope="module")
def sso(
    estate: DemoEstate, provider: OpenIDProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sso]:
    folder = tmp_path_factory.mktemp("sso")
    erp_url = f"sqlite+aiosqlite:///{folder / 'erp.db'}"
    asyncio.run(create_erp(erp_url, build_estate()))
    config = with_source(estate.config(), "erp", url=erp_url, timeout=2.0)
    with _sso_console(provider, estate, config, folder / "gatehouse.db") as sso:
        yield sso


@pytest.fixture(autouse=True)
def olivia_at_the_provider(provider: OpenIDProvider) -> Iterator[None]:
    """olivia is signed in at the provider and nothing is spoilt, unless a test says so."""
    provider.user, provider.fault, provider.end_session = OLIVIA, None, True
    yield
    provider.user, provider.fault, provider.end_session = OLIVIA, None, True


def _session(client: httpx.Client, sso: Sso) -> httpx.Response:
    return client.get(f"{sso.console.url}/console/sources")


def test_sso_login_page_offers_the_provider_beside_the_key(sso: Sso) -> None:
    with sso.browser() as client:
        page = client.get(f"{sso.console.url}/console/login?next=/console/audit")
    assert "Sign in with Acme SSO" in page.text
    assert 'href="/console/login/sso?next=%2Fconsole%2Faudit"' in page.text
    assert 'name="api_key"' in page.text


def test_sso_sign_in_maps_identity_to_principal_and_opens_session(sso: Sso) -> None:
    with sso.browser() as client:
        done = sso.sign_in(client, "/console/approvals")
        session = _session(client, sso)
    assert done.status_code == 200
    assert '<meta http-equiv="refresh" content="0;url=/console/approvals">' in done.text
    cookie = next(h for h in done.headers.get_list("set-cookie") if "gatehouse_session=" in h)
    assert {"httponly", "samesite=strict", "path=/console"} <= {
        part.strip().lower() for part in cookie.split(";")[1:]
    }
    assert session.status_code == 200
    assert "Olivia" in session.text
    signed_in = sso.events("console.signed_in")[-1]
    assert signed_in["principal"] == "olivia"
    assert signed_in["method"] == "sso"
    assert signed_in["remote_address"].startswith("10.9.")


def test_sso_uses_pkce_s256_state_and_nonce(sso: Sso) -> None:
    with sso.browser() as client:
        start = client.get(f"{sso.console.url}/console/login/sso")
        asked = parse_qs(urlsplit(start.headers["location"]).query)
        client.get(client.get(start.headers["location"]).headers["location"])
    assert asked["code_challenge_method"] == ["S256"]
    assert asked["response_type"] == ["code"]
    assert {"openid", "email"} <= set(asked["scope"][0].split())
    assert asked["state"][0]
    assert asked["nonce"][0]
    exchange = sso.provider.token_requests[-1]
    assert s256(exchange["code_verifier"]) == asked["code_challenge"][0]
    state_cookie = next(
        h for h in start.headers.get_list("set-cookie") if h.startswith("gatehouse_sso=")
    )
    assert "samesite=lax" in state_cookie.lower()
    assert "path=/console/login/sso" in state_cookie.lower()


def test_sso_unknown_identity_is_refused_and_audited(sso: Sso) -> None:
    sso.provider.user = User("u-mallory", "mallory@acme.example")
    with sso.browser() as client:
        done = sso.sign_in(client)
        assert _session(client, sso).status_code == 303
    assert done.status_code == 403
    assert "mallory@acme.example is not a Gatehouse console user" in done.text
    assert "gatehouse_session" not in done.headers.get("set-cookie", "")
    failed = sso.events("console.sign_in_failed")[-1]
    assert failed["principal"] == "unknown"
    assert failed["identity"] == "mallory@acme.example"
    assert failed["reason"] == "unknown_identity"
    assert failed["method"] == "sso"


def test_sso_unverified_email_is_refused(sso: Sso) -> None:
    sso.provider.user = User("u-olivia-2", "olivia@acme.example", email_verified=False)
    with sso.browser() as client:
        done = sso.sign_in(client)
    assert done.status_code == 403
    assert "has not verified the address" in done.text
    assert sso.events("console.sign_in_failed")[-1]["reason"] == "email_unverified"


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("wrong_nonce", "id_token_invalid_claim_nonce"),
        ("expired", "id_token_expired_token_exp"),
        ("unknown_key", "id_token_invalid_key_id"),
        ("forged", "id_token_bad_signature"),
        ("wrong_audience", "id_token_invalid_claim_aud"),
        ("wrong_issuer", "id_token_invalid_claim_iss"),
    ],
)
def test_sso_bad_id_token_is_refused_and_audited(sso: Sso, fault: str, reason: str) -> None:
    sso.provider.fault = fault  # type: ignore[assignment]
    with sso.browser() as client:
        done = sso.sign_in(client)
        assert _session(client, sso).status_code == 303
    assert done.status_code == 401
    assert "could not be verified, so you were not signed in" in done.text
    assert "gatehouse_session" not in done.headers.get("set-cookie", "")
    failed = sso.events("console.sign_in_failed")[-1]
    assert failed["reason"] == reason
    assert failed["principal"] == "unknown"


@pytest.mark.parametrize("tamper", ["other_state", "no_cookie"])
def test_sso_callback_with_bad_state_is_refused_and_audited(sso: Sso, tamper: str) -> None:
    exchanges = len(sso.provider.token_requests)
    with sso.browser() as client:
        callback = sso.begin(client)
        if tamper == "other_state":
            callback = callback.replace("state=", "state=x")
        else:
            client.cookies.clear()
        done = client.get(callback)
    assert done.status_code == 400
    assert "did not start in this browser" in done.text
    assert sso.events("console.sign_in_failed")[-1]["reason"] == "state_mismatch"
    assert len(sso.provider.token_requests) == exchanges  # the code was never sent


def test_sso_callback_replayed_is_refused(sso: Sso) -> None:
    with sso.browser() as client:
        callback = sso.begin(client)
        assert client.get(callback).status_code == 200
        again = client.get(callback)
    assert again.status_code == 400
    assert sso.events("console.sign_in_failed")[-1]["reason"] in ("state_mismatch", "state_expired")


def test_sso_code_used_twice_is_refused_by_the_provider_and_audited(sso: Sso) -> None:
    with sso.browser() as client:
        first = sso.begin(client)
        assert client.get(first).status_code == 200
        used_code = parse_qs(urlsplit(first).query)["code"][0]
        fresh = sso.begin(client)  # a new state and cookie; the old code slipped in
        fresh_code = parse_qs(urlsplit(fresh).query)["code"][0]
        done = client.get(fresh.replace(f"code={fresh_code}", f"code={used_code}"))
    assert done.status_code == 401
    assert "refused the sign-in code (invalid_grant)" in done.text
    assert sso.events("console.sign_in_failed")[-1]["reason"] == "code_refused"


def test_sso_declined_at_provider_is_refused_and_audited(sso: Sso) -> None:
    sso.provider.user = None
    with sso.browser() as client:
        done = sso.sign_in(client)
    assert done.status_code == 401
    assert "did not sign you in (access_denied)" in done.text
    assert sso.events("console.sign_in_failed")[-1]["reason"] == "provider_access_denied"


def test_sso_next_outside_console_goes_home(sso: Sso) -> None:
    with sso.browser() as client:
        done = sso.sign_in(client, "https://evil.example/")
    assert 'content="0;url=/console/"' in done.text


@pytest.mark.parametrize(
    ("amr", "signed_in"),
    [(("pwd",), False), ((), False), (("pwd", "otp"), True), (("mfa",), True)],
)
def test_sso_requiring_a_second_factor_refuses_a_password_alone(
    estate: DemoEstate,
    provider: OpenIDProvider,
    tmp_path: Path,
    amr: tuple[str, ...],
    signed_in: bool,
) -> None:
    provider.user = User("u-olivia", "olivia@acme.example", amr=amr)
    with (
        _sso_console(
            provider, estate, estate.config(), tmp_path / "gh.db", require_amr=("mfa", "otp")
        ) as strict,
        strict.browser() as client,
    ):
        done = strict.sign_in(client)
        failures = strict.events("console.sign_in_failed")
    if signed_in:
        assert done.status_code == 200, done.text
        assert 'content="0;url=/console/"' in done.text  # on to the console, signed in
        assert failures == []
        return
    assert done.status_code == 403
    assert "without a second factor" in html.unescape(done.text)
    (failed,) = failures
    assert failed["reason"] == "second_factor_missing"
    assert failed["identity"] == "olivia@acme.example"


@pytest.mark.parametrize("problem", ["unreachable", "another_issuer"])
def test_sso_provider_unreachable_or_misconfigured_says_so(
    estate: DemoEstate, provider: OpenIDProvider, problem: str
) -> None:
    # Nothing listens on a fresh port; a trailing slash is another issuer than the one the
    # provider's metadata names (OpenID Connect Discovery 1.0, section 4.3).
    issuer = f"http://127.0.0.1:{free_port()}/realms/acme"
    if problem == "another_issuer":
        issuer = f"{provider.issuer}/"
    oidc = OidcConfig(issuer=issuer, client_id=provider.client_id, principals={"a@b.c": "olivia"})
    config = estate.config()
    config = config.model_copy(update={"auth": config.auth.model_copy(update={"oidc": oidc})})
    app = create_app(Settings(database_url="sqlite+aiosqlite://"), config)
    with TestClient(app) as http:
        started = http.get("/console/login/sso", follow_redirects=False)
    assert started.status_code == 502
    assert "Single sign-on is unavailable" in started.text
    expected = "could not be reached" if problem == "unreachable" else "is misconfigured"
    assert expected in started.text
    assert "gatehouse_sso" not in started.headers.get("set-cookie", "")


def test_sso_not_configured_is_404(console: Console) -> None:
    with console.client() as client:
        assert client.get("/console/login/sso").status_code == 404
        assert "/console/login/sso" not in client.get("/console/login").text


def test_api_key_sign_in_and_failures_are_audited_never_the_key(sso: Sso) -> None:
    wrong = "gh_olivia_not-a-real-key-0123456789"
    with sso.browser() as client:
        client.base_url = httpx.URL(sso.console.url)
        assert sign_in(client, wrong).status_code == 401
        assert sign_in(client, sso.console.keys["restock-bot"]).status_code == 403
        assert sign_in(client, sso.console.keys["olivia"]).status_code == 303
    unknown, agent = sso.events("console.sign_in_failed")[-2:]
    assert (unknown["principal"], unknown["reason"], unknown["method"]) == (
        "unknown",
        "unknown_key",
        "api_key",
    )
    assert (agent["principal"], agent["kind"], agent["reason"]) == (
        "restock-bot",
        "agent",
        "not_a_person",
    )
    signed_in = sso.events("console.signed_in")[-1]
    assert (signed_in["principal"], signed_in["method"]) == ("olivia", "api_key")
    trail = str(sso.console.sql("SELECT * FROM audit_events"))
    assert wrong not in trail
    assert sso.console.keys["olivia"] not in trail


def test_failed_sign_ins_are_throttled_per_address_and_audited_once(sso: Sso) -> None:
    with sso.browser() as client:
        client.base_url = httpx.URL(sso.console.url)
        before = len(sso.events("console.sign_in_failed"))
        statuses = [sign_in(client, f"gh_guess_{n}").status_code for n in range(14)]
        refused = sign_in(client, sso.console.keys["olivia"])  # even the right key waits
        callback = sso.sign_in(client)  # and single sign-on from the same address
        with sso.browser() as elsewhere:
            elsewhere.base_url = httpx.URL(sso.console.url)
            assert sign_in(elsewhere, sso.console.keys["olivia"]).status_code == 303
    failed = statuses.count(401)  # 10, or 11 across the minute's turn (see the next test)
    assert failed in (10, 11)
    assert statuses == [401] * failed + [429] * (14 - failed)
    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.text
    assert callback.status_code == 429
    assert len(sso.events("console.sign_in_failed")) - before == failed
    assert len(sso.events("console.sign_in_throttled")) >= 1


def test_sso_starts_are_limited_per_address(sso: Sso) -> None:
    with sso.browser() as client:
        started = [
            client.get(f"{sso.console.url}/console/login/sso").status_code for _ in range(32)
        ]
    # 30 a minute from one address, then refused. A sliding window counter weighs the last
    # minute's count down as the new one goes on: a run across the minute's turn may pass one
    # more (it failed once so).
    allowed = started.count(303)
    assert allowed in (30, 31)
    assert started == [303] * allowed + [429] * (32 - allowed)


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the gateway and its libraries (Authlib, httpx2) logged, down to DEBUG; not
    this test's own client (httpx), nor the SQL driver's trace, which echoes every parameter
    of every statement when someone turns it on (the verifier and the ID token wait in the
    database)."""
    return "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name != "httpx" and not record.name.startswith(("httpcore.", "aiosqlite"))
    )


def test_sso_leaves_no_secret_in_logs_or_trail(sso: Sso, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    issued_before = len(sso.provider.issued)
    with sso.browser() as client:
        callback = sso.begin(client)
        assert client.get(callback).status_code == 200
        sso.provider.fault = "unknown_key"
        bad = sso.begin(client)
        assert client.get(bad).status_code == 401
    secrets = [
        CLIENT_SECRET,
        *sso.provider.issued[issued_before:],
        *(parse_qs(urlsplit(url).query)["code"][0] for url in (callback, bad)),
        *(request["code_verifier"] for request in sso.provider.token_requests[-2:]),
    ]
    trail = str(sso.console.sql("SELECT * FROM audit_events"))
    logged = _logged(caplog)
    assert "refused: id_token_invalid_key_id" in logged  # logged, with its reason
    for secret in secrets:
        assert secret not in logged
        assert secret not in trail


# Signing out (OpenID Connect RP-Initiated Logout 1.0): the console's session ends, then the
# provider's, through its end_session_endpoint; the next sign-on asks the person again.
MOVES_ON = re.compile(r'<meta http-equiv="refresh" content="0;url=([^"]+)">')


def _moves_on_to(page: httpx.Response) -> str:
    found = MOVES_ON.search(page.text)
    assert found is not None, page.text
    return html.unescape(found.group(1))


def _code(callback: str) -> str:
    return parse_qs(urlsplit(callback).query)["code"][0]


def test_sso_sign_out_ends_the_provider_session_and_comes_back_signed_out(sso: Sso) -> None:
    with sso.browser() as client:
        signed_in = sso.begin(client)
        assert client.get(signed_in).status_code == 200
        id_token = sso.provider.issued[-2]  # with the access token after it
        assert sso.provider.grants[_code(sso.begin(client))].silent  # a live provider session
        out = sso.sign_out(client)
        assert out.status_code == 200
        to_provider = _moves_on_to(out)
        back = client.get(to_provider)
        landed = client.get(back.headers["location"])
        assert _session(client, sso).status_code == 303  # the console's session ended
        again = _code(sso.begin(client))
    login = f"{sso.console.url}/console/login?signed_out=1"
    assert to_provider.startswith(f"{sso.provider.issuer}/logout?")
    assert parse_qs(urlsplit(to_provider).query) == {
        "id_token_hint": [id_token],
        "client_id": ["gatehouse-console"],
        "post_logout_redirect_uri": [login],
    }
    assert (back.status_code, back.headers["location"]) == (302, login)
    assert "You are signed out." in landed.text
    assert sso.provider.grants[_code(signed_in)].session not in sso.provider.sessions
    assert not sso.provider.grants[again].silent  # the provider asks who it is again


@pytest.mark.parametrize(
    "spoil", ["signature", "audience", "issuer", "client_id", "post_logout_redirect_uri"]
)
def test_provider_refuses_an_end_session_request_it_cannot_trust(sso: Sso, spoil: str) -> None:
    # The provider the tests start checks what the console sends, as a real one would.
    with sso.browser() as client:
        signed_in = sso.begin(client)
        assert client.get(signed_in).status_code == 200
        query = urlsplit(_moves_on_to(sso.sign_out(client))).query
        asked = {name: values[0] for name, values in parse_qs(query).items()}
        refused = client.get(f"{sso.provider.issuer}/logout", params=_spoilt(sso, asked, spoil))
    assert refused.status_code == 400
    assert sso.provider.grants[_code(signed_in)].session in sso.provider.sessions


def _spoilt(sso: Sso, asked: dict[str, str], spoil: str) -> dict[str, str]:
    if spoil in ("client_id", "post_logout_redirect_uri"):
        return {**asked, spoil: "https://evil.example/"}
    published = sso.provider.keys[0]
    claims = jwt.decode(asked["id_token_hint"], published).claims
    if spoil == "audience":
        claims["aud"] = "someone-else"
    if spoil == "issuer":
        claims["iss"] = "https://evil.example"
    key = new_key() if spoil == "signature" else published
    header = {"alg": "RS256", "kid": published.kid}  # another key's signature, ours named
    return {**asked, "id_token_hint": jwt.encode(header, claims, key)}


def test_sso_sign_out_is_audited_never_the_id_token(
    sso: Sso, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with sso.browser() as client:
        assert sso.sign_in(client).status_code == 200
        id_token = sso.provider.issued[-2]
        kept = "SELECT count(*) FROM console_id_tokens WHERE id_token = ?"
        assert sso.console.sql(kept, id_token) == [(1,)]
        back = client.get(_moves_on_to(sso.sign_out(client)))
    assert id_token not in back.headers["location"]
    assert sso.console.sql(kept, id_token) == [(0,)]  # gone with the session
    signed_out = sso.events("console.signed_out")[-1]
    assert (signed_out["principal"], signed_out["outcome"]) == ("olivia", "SIGNED_OUT")
    assert (signed_out["method"], signed_out["provider_logout"]) == ("sso", "end_requested")
    assert id_token not in str(sso.console.sql("SELECT * FROM audit_events"))
    assert {"gatehouse.http", "httpcore2.http11"} <= {record.name for record in caplog.records}
    assert id_token not in _logged(caplog)


def test_api_key_sign_out_stays_away_from_the_provider(sso: Sso) -> None:
    asked = len(sso.provider.logouts)
    with sso.browser() as client:
        client.base_url = httpx.URL(sso.console.url)
        assert sign_in(client, sso.console.keys["olivia"]).status_code == 303
        out = sso.sign_out(client)
        landed = client.get(out.headers["location"])
        assert _session(client, sso).status_code == 303
    assert (out.status_code, out.headers["location"]) == (303, "/console/login?signed_out=1")
    assert "You are signed out." in landed.text
    assert "may still be open" not in landed.text
    assert len(sso.provider.logouts) == asked
    signed_out = sso.events("console.signed_out")[-1]
    assert (signed_out["principal"], signed_out["method"]) == ("olivia", "api_key")
    assert "provider_logout" not in signed_out


def _sign_out_leaving_the_provider(sso: Sso, client: httpx.Client) -> str:
    """Sign out where the provider's session cannot be ended: the sign-in page's text."""
    out = sso.sign_out(client)
    assert (out.status_code, out.headers["location"]) == (303, "/console/login?signed_out=console")
    assert _session(client, sso).status_code == 303  # the console's session ended all the same
    return client.get(f"{sso.console.url}{out.headers['location']}").text


def test_sso_sign_out_without_end_session_endpoint_says_the_provider_may_be_open(
    sso: Sso,
) -> None:
    with sso.browser() as client:
        assert sso.sign_in(client).status_code == 200
        sso.provider.end_session = False  # read afresh at sign-out
        landed = _sign_out_leaving_the_provider(sso, client)
    assert "signed out of the console, but your Acme SSO session may still be open" in landed
    assert sso.events("console.signed_out")[-1]["provider_logout"] == "no_end_session_endpoint"


def test_sso_sign_out_with_the_provider_unreachable_still_ends_the_session(
    estate: DemoEstate, tmp_path: Path
) -> None:
    provider = OpenIDProvider(
        client_id="gatehouse-console", client_secret=CLIENT_SECRET, user=OLIVIA
    )
    with (
        _serving(provider) as running,
        _sso_console(provider, estate, estate.config(), tmp_path / "gatehouse.db") as sso,
        sso.browser() as client,
    ):
        assert sso.sign_in(client).status_code == 200
        running.stop()
        landed = _sign_out_leaving_the_provider(sso, client)
    assert "your Acme SSO session may still be open" in landed
    assert sso.events("console.signed_out")[-1]["provider_logout"] == "provider_unreachable"


def test_draft_survives_an_expired_session_and_returns_after_sso(sso: Sso) -> None:
    sso.provider.user = FINN
    action_id = sso.console.pending_restock(delta=170)
    page = f"/console/actions/{action_id}"
    with sso.browser() as client:
        assert sso.sign_in(client).status_code == 200
        form = client.get(f"{sso.console.url}{page}")
        _expire(sso.console, client)
        posted = client.post(
            f"{sso.console.url}{page}/approve",
            data={"csrf_token": csrf_token(form.text), "comment": "Pallet counted twice"},
        )
        assert posted.status_code == 303
        back = f"{page}#decision"
        assert posted.headers["location"] == f"/console/login?{urlencode({'next': back})}&ended=1"
        assert "gatehouse_draft=" in posted.headers.get("set-cookie", "")
        login = client.get(f"{sso.console.url}{posted.headers['location']}")
        assert "Your session ended; sign in again to continue." in login.text
        done = sso.sign_in(client, back)
        assert f'content="0;url={back}"' in done.text
        restored = client.get(f"{sso.console.url}{page}")
        again = client.get(f"{sso.console.url}{page}")
    assert "Pallet counted twice</textarea>" in restored.text
    assert "Pallet counted twice" not in again.text  # restored once
    assert sso.console.status_of(action_id) == "PENDING_APPROVAL"  # nothing was decided


def test_draft_of_a_rejection_returns_after_key_sign_in(sso: Sso) -> None:
    action_id = sso.console.pending_restock(delta=160)
    page = f"/console/actions/{action_id}"
    with sso.browser() as client:
        client.base_url = httpx.URL(sso.console.url)
        assert sign_in(client, sso.console.keys["finn"]).status_code == 303
        form = client.get(page)
        _expire(sso.console, client)
        data = {"csrf_token": csrf_token(form.text), "reason": "No such delivery expected"}
        assert client.post(f"{page}/reject", data=data).status_code == 303
        assert sign_in(client, sso.console.keys["finn"], page).headers["location"] == page
        restored = client.get(page)
    assert "No such delivery expected</textarea>" in restored.text


def test_draft_is_not_kept_from_a_form_of_no_session(sso: Sso) -> None:
    action_id = sso.console.pending_restock(delta=150)
    with sso.browser() as client:
        posted = client.post(
            f"{sso.console.url}/console/actions/{action_id}/approve",
            data={"csrf_token": "forged", "comment": "approve this quickly"},
        )
    assert posted.status_code == 303
    assert "gatehouse_draft" not in posted.headers.get("set-cookie", "")
    kept = "SELECT count(*) FROM console_drafts WHERE text = ?"
    assert sso.console.sql(kept, "approve this quickly") == [(0,)]


def test_draft_is_restored_only_to_its_author(sso: Sso) -> None:
    action_id = sso.console.pending_restock(delta=140)
    page = f"/console/actions/{action_id}"
    with sso.browser() as client:
        client.base_url = httpx.URL(sso.console.url)
        assert sign_in(client, sso.console.keys["finn"]).status_code == 303
        form = client.get(page)
        _expire(sso.console, client)
        data = {"csrf_token": csrf_token(form.text), "comment": "finn's private note"}
        client.post(f"{page}/approve", data=data)
        assert sso.sign_in(client, page).status_code == 200  # olivia, on the same browser
        shown = client.get(page)
    assert "finn&#39;s private note" not in shown.text
    assert "finn's private note" not in shown.text


def _expire(console: Console, client: httpx.Client) -> None:
    _end_session(console, client.cookies["gatehouse_session"])


def _end_session(console: Console, token: str) -> None:
    digest = hashlib.sha256(token.encode()).hexdigest()
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    console.sql("UPDATE console_sessions SET expires_at = ? WHERE token_sha256 = ?", past, digest)


OIDC_TOML = """
[auth.oidc]
issuer = "{issuer}"
name = "Acme SSO"
client_id = "gatehouse-console"
client_secret = "${{GATEHOUSE_OIDC_CLIENT_SECRET}}"
claim = "email"
principals = {{ "olivia@acme.example" = "{principal}" }}
"""


def _oidc_config(tmp_path: Path, issuer: str, principal: str = "olivia") -> Path:
    path = tmp_path / "gatehouse.toml"
    extra = OIDC_TOML.format(issuer=issuer, principal=principal)
    path.write_text(CONFIG_TEMPLATE.read_text(encoding="utf-8") + extra, "utf-8")
    return path


def test_oidc_config_loads_with_the_secret_from_the_environment(
    tmp_path: Path, estate: DemoEstate
) -> None:
    path = _oidc_config(tmp_path, "https://login.acme.example/realms/acme")
    environ = {**estate.environ(), "GATEHOUSE_OIDC_CLIENT_SECRET": "from-env"}
    config = load_config(path, environ)
    assert config.auth.oidc is not None
    assert config.auth.oidc.client_secret is not None
    assert config.auth.oidc.client_secret.get_secret_value() == "from-env"
    assert "from-env" not in repr(config.auth.oidc)


@pytest.mark.parametrize(
    ("issuer", "principal", "problem"),
    [
        ("https://login.acme.example", "restock-bot", "is an agent; only people sign in"),
        ("https://login.acme.example", "storefront", "is a service; only people sign in"),
        ("https://login.acme.example", "nobody", "no principal named 'nobody'"),
        ("http://login.acme.example", "olivia", "over https"),
    ],
)
def test_oidc_config_refuses_agents_unknowns_and_plain_http(
    tmp_path: Path, estate: DemoEstate, issuer: str, principal: str, problem: str
) -> None:
    path = _oidc_config(tmp_path, issuer, principal)
    environ = {**estate.environ(), "GATEHOUSE_OIDC_CLIENT_SECRET": "x"}
    with pytest.raises(ConfigError, match="auth") as refused:
        load_config(path, environ)
    assert problem in str(refused.value)


def test_sign_ins_read_in_words_on_the_audit_trail(sso: Sso) -> None:
    with sso.browser() as client:
        client.base_url = httpx.URL(sso.console.url)
        assert sign_in(client, "gh_carla_mistyped").status_code == 401
        assert sign_in(client, sso.console.keys["carla"]).status_code == 303
        assert sso.sign_out(client).status_code == 303
        assert sign_in(client, sso.console.keys["carla"]).status_code == 303
        trail = client.get("/console/audit")
    assert "Console sign-in refused" in trail.text
    assert "Signed in to the console" in trail.text
    assert "Signed out of the console" in trail.text


# In a real Chromium: the provider on `localhost`, the console on 127.0.0.1, two sites, so the
# browser applies its SameSite rules to the way back as it would with a real provider.
SIZES = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


@pytest.fixture(params=sorted(SIZES))
def tab(
    request: pytest.FixtureRequest, chromium: Browser, provider: OpenIDProvider
) -> Iterator[tuple[Page, str]]:
    """A fresh browser at one size; the provider shows its Continue page, as real ones do:
    the way back then starts on the provider's site."""
    context = chromium.new_context(viewport=SIZES[request.param])  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    provider.consent = True
    yield context.new_page(), request.param
    provider.consent = False
    context.close()


def _sso_at_provider(page: Page) -> None:
    page.get_by_role("link", name="Sign in with Acme SSO").click()
    page.get_by_role("button", name="Continue").click()


def test_browser_sso_signs_in_across_sites_and_returns_to_the_page(
    sso: Sso, tab: tuple[Page, str], screenshots: Path
) -> None:
    page, size = tab
    sso.provider.user = FINN
    page.goto(f"{sso.console.url}/console/approvals")
    sso_button = page.get_by_role("link", name="Sign in with Acme SSO")
    expect(sso_button).to_be_visible()
    page.screenshot(path=screenshots / f"sso-login-{size}.png", full_page=True)
    _sso_at_provider(page)
    expect(page).to_have_url(f"{sso.console.url}/console/approvals")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.locator("header.topbar")).to_contain_text("Finn")
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size]["width"]


def test_browser_sso_sign_out_ends_the_provider_session_too(
    sso: Sso, tab: tuple[Page, str], screenshots: Path
) -> None:
    page, size = tab
    page.goto(f"{sso.console.url}/console/sources")
    _sso_at_provider(page)
    expect(page).to_have_url(f"{sso.console.url}/console/sources")
    signed_in = _latest_grant(sso.provider)
    # Across sites from a form's post: the console's CSP (form-action 'self') would stop a
    # redirect to the provider here, so a page moves on instead.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{sso.console.url}/console/login?signed_out=1")
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.screenshot(path=screenshots / f"sso-signed-out-{size}.png", full_page=True)
    assert signed_in.session not in sso.provider.sessions
    _sso_at_provider(page)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    assert not _latest_grant(sso.provider).silent


def _latest_grant(provider: OpenIDProvider) -> Grant:
    return next(reversed(provider.grants.values()))


def test_browser_draft_comes_back_after_the_session_ends(
    sso: Sso, tab: tuple[Page, str], screenshots: Path
) -> None:
    page, size = tab
    sso.provider.user = FINN
    action_id = sso.console.pending_restock(delta=175)
    page.goto(f"{sso.console.url}/console/actions/{action_id}")
    _sso_at_provider(page)
    expect(page).to_have_url(f"{sso.console.url}/console/actions/{action_id}")
    comment = page.get_by_label("Comment")
    comment.fill("Counted the pallet twice; 175 is right")
    cookie = next(c for c in page.context.cookies() if c["name"] == "gatehouse_session")
    _end_session(sso.console, cookie["value"])
    page.get_by_role("button", name="Approve").click()
    ended = "Your session ended; sign in again to continue."
    expect(page.get_by_role("status")).to_have_text(ended)
    page.screenshot(path=screenshots / f"sso-session-ended-{size}.png", full_page=True)
    _sso_at_provider(page)
    expect(page).to_have_url(f"{sso.console.url}/console/actions/{action_id}#decision")
    expect(page.get_by_label("Comment")).to_have_value("Counted the pallet twice; 175 is right")
    expect(page.get_by_label("Comment")).to_be_in_viewport()
    expect(page.get_by_text("is back in its box")).to_be_visible()
    page.screenshot(path=screenshots / f"sso-draft-restored-{size}.png")
    assert sso.console.status_of(action_id) == "PENDING_APPROVAL"
