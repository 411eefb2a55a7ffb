"""The demo estates and the gateway over them: what `gatehouse demo` starts, and what tests use.

demo (default)
  ERP   a SQL database (SQLite file by default), seeded with the order-to-cash estate
  CRM   an HTTP JSON service in its own process, on a free loopback port
  Storefront  an HTTP JSON service in its own process holding a copy of stock (drift checks)
tryton (gateway/demo/tryton.py)
  ERP   Tryton serving a copy of a seeded SQLite database, in its own process
keys  a fresh API key per demo principal, printed once; only hashes reach the config
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from gateway.demo.notify import Mailroom
from sources.demo import CrmProcess, build_estate, create_erp, seed_crm
from sources.demo.process import StorefrontProcess
from sources.demo.storefront_store import seed_storefront

if TYPE_CHECKING:  # imported where used: the inbox process (a module of this package) starts
    # without the gateway's configuration and principals, which take seconds to import
    from gateway.config import GatewayConfig

CONFIG_TEMPLATE = Path(__file__).with_name("gatehouse.toml")
TRYTON_CONFIG_TEMPLATE = Path(__file__).with_name("tryton.toml")
_NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers
PRINCIPALS = ("olivia", "finn", "carla", "sam", "storefront", "restock-bot", "support-bot")


class Estate(Protocol):
    """A running estate `gatehouse demo` serves: its configuration and its systems."""

    @property
    def keys(self) -> dict[str, str]:
        """A fresh API key per demo principal."""
        ...

    @property
    def state_dir(self) -> Path:
        """Where it keeps its files."""
        ...

    @property
    def template(self) -> Path:
        """Its configuration file."""
        ...

    def environ(self) -> dict[str, str]:
        """The GATEHOUSE_* variables its configuration refers to."""
        ...

    def config(self) -> GatewayConfig:
        """Its configuration, expanded."""
        ...

    def systems(self) -> dict[str, str]:
        """Where its systems of record answer, by name."""
        ...


@dataclass(frozen=True)
class DemoEstate:
    """A running demo estate: where its systems are and the principals' keys."""

    erp_url: str
    crm: CrmProcess
    keys: dict[str, str]
    state_dir: Path
    template: Path = CONFIG_TEMPLATE
    storefront: StorefrontProcess | None = None  # its copy of stock drifts from the ERP's
    mailroom: Mailroom = field(default_factory=Mailroom)  # where notifications land

    def systems(self) -> dict[str, str]:
        """The ERP's database, and the CRM's, the storefront's and the inbox's URLs."""
        storefront = {"Storefront": self.storefront.url} if self.storefront else {}
        inbox = self.mailroom.inbox
        mail = {"Inbox": f"{inbox.url}   (e-mail and webhooks sent)"} if inbox else {}
        return {"ERP": self.erp_url, "CRM": self.crm.url, **storefront, **mail}

    def environ(self) -> dict[str, str]:
        """The GATEHOUSE_* variables the demo configuration refers to."""
        urls = {"GATEHOUSE_ERP_URL": self.erp_url, "GATEHOUSE_CRM_URL": self.crm.url}
        # Without a storefront (an estate built by hand) its copy is read where none listens.
        urls["GATEHOUSE_STOREFRONT_URL"] = self.storefront.url if self.storefront else _NOWHERE
        return {**urls, **self.mailroom.environ(), **key_hashes(self.keys)}

    def config(self) -> GatewayConfig:
        """The demo configuration, expanded with this estate's URLs and key hashes."""
        from gateway.config import load_config

        return load_config(CONFIG_TEMPLATE, environ={**os.environ, **self.environ()})


def key_hashes(keys: dict[str, str]) -> dict[str, str]:
    """The GATEHOUSE_DEMO_HASH_* variables for the demo principals' keys."""
    from gateway.principals import hash_key

    return {_hash_variable(name): hash_key(key) for name, key in keys.items()}


def _hash_variable(principal: str) -> str:
    return "GATEHOUSE_DEMO_HASH_" + principal.upper().replace("-", "_")


def new_keys() -> dict[str, str]:
    """A fresh random API key for every demo principal."""
    return {name: f"gh_{name.replace('-', '')}_{secrets.token_urlsafe(18)}" for name in PRINCIPALS}


def seed_erp(url: str, *, schema: str | None = None) -> None:
    """Create and seed the ERP database at `url`."""
    asyncio.run(create_erp(url, build_estate(), schema=schema))


@contextmanager
def running_estate(state_dir: Path, *, erp_url: str | None = None) -> Iterator[DemoEstate]:
    """Seed the ERP and CRM, start the CRM process, and stop it on exit."""
    state_dir.mkdir(parents=True, exist_ok=True)
    estate = build_estate()
    erp_url = erp_url or f"sqlite+aiosqlite:///{(state_dir / 'erp.db').resolve()}"
    asyncio.run(create_erp(erp_url, estate))
    seed_crm(state_dir / "crm.db", estate)
    crm = CrmProcess.start(state_dir / "crm.db")
    seed_storefront(state_dir / "storefront.db", estate)
    mailroom = Mailroom.start(state_dir / "inbox")
    try:
        with StorefrontProcess.start(state_dir / "storefront.db") as storefront:
            yield DemoEstate(
                erp_url=erp_url,
                crm=crm,
                keys=new_keys(),
                state_dir=state_dir,
                storefront=storefront,
                mailroom=mailroom,
            )
    finally:
        mailroom.stop()
        crm.stop()


def write_keys_file(estate: Estate, *, database_url: str) -> Path:
    """The demo keys as shell exports, and every GATEHOUSE_* setting of this demo, so other
    `gatehouse` commands (audit, policy) work against it; both readable by the owner only."""
    keys = estate.state_dir / "keys.env"
    _write_private(
        keys,
        {
            f"GATEHOUSE_KEY_{name.upper().replace('-', '_')}": key
            for name, key in estate.keys.items()
        },
    )
    settings = {
        "GATEHOUSE_CONFIG": str(estate.template),
        "GATEHOUSE_DATABASE_URL": database_url,
        **estate.environ(),
    }
    _write_private(estate.state_dir / "gatehouse.env", settings)
    return keys


def _write_private(path: Path, values: dict[str, str]) -> None:
    # Created private, not chmod-ed afterwards: the keys are never readable by others.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write("".join(f"export {k}={v}\n" for k, v in values.items()))
