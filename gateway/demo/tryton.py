"""The Tryton estate for `gatehouse demo --estate tryton`: a Tryton server over a fresh copy
of a seeded SQLite database, and the gateway's configuration over it (tryton.toml).

The seeded file is made once per state directory (a minute or two: Tryton activates its
modules and proteus seeds the company, accounts, customers, stock and a sale) and copied
at each start, so every demo starts from the same data. The gateway's Tryton user has a
password of its own, made once and kept in the state directory (mode 0600).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import GatewayConfig, load_config
from gateway.demo import TRYTON_CONFIG_TEMPLATE, key_hashes, new_keys
from gateway.demo.notify import Mailroom
from gateway.errors import ConfigError
from sources.tryton_estate.server import TrytonDatabase, TrytonServer, seeded_sqlite

USER = "gatehouse"
PASSWORD_VARIABLE = "GATEHOUSE_TRYTON_PASSWORD"  # noqa: S105 - the variable's name


@dataclass(frozen=True)
class TrytonEstate:
    """A running Tryton estate: the server, the gateway user's password, the keys."""

    server: TrytonServer
    password: str
    keys: dict[str, str]
    state_dir: Path
    template: Path = TRYTON_CONFIG_TEMPLATE
    mailroom: Mailroom = field(default_factory=Mailroom)  # where notifications land

    def environ(self) -> dict[str, str]:
        """The variables tryton.toml refers to, and the demo principals' key hashes."""
        return {
            "GATEHOUSE_TRYTON_URL": self.server.url,
            "GATEHOUSE_TRYTON_DATABASE": self.server.database.name,
            "GATEHOUSE_TRYTON_USER": USER,
            PASSWORD_VARIABLE: self.password,
            **self.mailroom.environ(),
            **key_hashes(self.keys),
        }

    def config(self) -> GatewayConfig:
        """tryton.toml, expanded for this estate."""
        return load_config(self.template, environ={**os.environ, **self.environ()})

    def systems(self) -> dict[str, str]:
        """Where Tryton answers."""
        inbox = self.mailroom.inbox
        mail = {"Inbox": f"{inbox.url}   (e-mail and webhooks sent)"} if inbox else {}
        return {"Tryton": f"{self.server.url}/{self.server.database.name}/", **mail}


@contextmanager
def running_tryton_estate(state_dir: Path) -> Iterator[TrytonEstate]:
    """Copy the seeded database (seeding it the first time), start Tryton, stop it on exit."""
    if importlib.util.find_spec("trytond") is None:
        raise ConfigError(
            "Tryton is not installed in this environment: pip install -e '.[tryton]' "
            "installs trytond and the modules the Tryton estate uses"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    password = _password(state_dir / "tryton-password")
    seeded = seeded_sqlite(state_dir / "tryton-seed", password=password)
    working = state_dir / "tryton"
    working.mkdir(exist_ok=True)
    shutil.copyfile(
        Path(seeded.location) / f"{seeded.name}.sqlite", working / f"{seeded.name}.sqlite"
    )
    database = TrytonDatabase(seeded.name, "sqlite", str(working))
    mailroom = Mailroom.start(state_dir / "inbox")
    try:
        with TrytonServer.start(database, timeout=60) as server:
            os.environ[PASSWORD_VARIABLE] = password  # the connector reads it from there
            yield TrytonEstate(server, password, new_keys(), state_dir, mailroom=mailroom)
    finally:
        mailroom.stop()


def _password(path: Path) -> str:
    """The gateway user's password in Tryton: made once, readable by the owner only."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    password = secrets.token_urlsafe(24)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(password)
    return password
