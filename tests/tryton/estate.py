"""The Tryton estate's configuration over a test's Tryton server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from gateway.app import start
from gateway.config import GatewayConfig, load_config
from gateway.demo import TRYTON_CONFIG_TEMPLATE, key_hashes, new_keys
from gateway.demo.notify import Mailroom
from gateway.services import Services
from sources.tryton_estate.server import TrytonServer
from tests.factories import services_for

PASSWORD = "gatehouse-test-secret"  # the seeded gateway user's, in every test database
USER = "gatehouse"


def tryton_environ(server: TrytonServer, url: str | None = None) -> dict[str, str]:
    """The variables tryton.toml refers to, for `server` (reached at `url`, when given)."""
    return {
        "GATEHOUSE_TRYTON_URL": url or server.url,
        "GATEHOUSE_TRYTON_DATABASE": server.database.name,
        "GATEHOUSE_TRYTON_USER": USER,
        "GATEHOUSE_TRYTON_PASSWORD": PASSWORD,
        # The demo's channels, pointed where nothing listens: these tests start no inbox.
        **Mailroom().environ(),
    }


def tryton_config(
    server: TrytonServer, keys: dict[str, str] | None = None, url: str | None = None
) -> GatewayConfig:
    """tryton.toml expanded for `server` (reached at `url`), the demo principals holding
    `keys` (new ones by default)."""
    hashes = key_hashes(new_keys() if keys is None else keys)
    environ = {**tryton_environ(server, url), **hashes}
    return load_config(TRYTON_CONFIG_TEMPLATE, environ=environ)


@contextlib.asynccontextmanager
async def governed_tryton(
    server: TrytonServer,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    url: str | None = None,
) -> AsyncIterator[Services]:
    """The gateway's services over the Tryton estate on `server` (reached at `url`)."""
    for name, value in tryton_environ(server, url).items():
        monkeypatch.setenv(name, value)  # the password is read from the environment
    built = services_for(tryton_config(server, url=url), database_url)
    await start(built)
    try:
        yield built
    finally:
        await built.close()
