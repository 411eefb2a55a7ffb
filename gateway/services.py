"""The frozen bundle of services built once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import AuditTrail
from gateway.authz import Policy
from gateway.catalog import Catalog
from gateway.checkpoints import Checkpointer
from gateway.config import Classification, GatewayConfig
from gateway.counters import Windows
from gateway.metrics import Metrics
from gateway.notifier import Notifier
from gateway.oidc import OpenIdClient
from gateway.pipeline import Writes
from gateway.principals import Authenticator
from gateway.rates import Rates
from gateway.reads import Reads
from gateway.settings import Settings
from gateway.sign_ins import SignIns
from sources.connector import Connector


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request needs, built once per process."""

    settings: Settings
    config: GatewayConfig
    connectors: dict[str, Connector]
    reads: Reads
    policy: Policy
    authenticator: Authenticator
    engine: AsyncEngine
    audit: AuditTrail
    catalog: Catalog
    writes: Writes
    metrics: Metrics
    rates: Rates
    windows: Windows  # the rate windows' counters, which `rates` and `notifier` count in
    sign_ins: SignIns  # console sign-ins: audited, failures throttled
    notifier: Notifier
    checkpointer: Checkpointer | None = None  # signed checkpoints of the audit trail, if set
    oidc: OpenIdClient | None = None  # the console's single sign-on, if [auth.oidc] is set

    def classification(self, entity: str, field: str) -> Classification:
        """A field's classification; `field` may name a child's field as `child.field`."""
        contract = self.config.entities[entity]
        child, _, name = field.rpartition(".")
        fields = contract.children[child].fields if child else contract.fields
        return fields[name].classification

    async def close(self) -> None:
        """Release every connector's connections."""
        await self.notifier.close()
        await self.windows.close()
        for connector in self.connectors.values():
            await connector.close()
        await self.engine.dispose()
