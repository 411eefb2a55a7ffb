"""The per-request GraphQL context: who is asking, the services, and request-scoped loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from gateway.config import Classification, PrincipalKind
from gateway.errors import Forbidden
from gateway.principals import Principal
from gateway.reads import Entry
from gateway.services import Services

_MASKED = {Classification.PII}
_AUDITED = {Classification.PII, Classification.FINANCIAL}


@dataclass
class Context(BaseContext):
    """What every resolver reaches through `info.context` (FastAPI fills in the request)."""

    services: Services
    principal: Principal
    channel: str = "graphql"
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    masked: list[str] = field(default_factory=list)
    _loaders: dict[tuple[str, float | None], DataLoader[str, Entry | None]] = field(
        default_factory=dict
    )
    _grants: dict[tuple[str, str], bool] = field(default_factory=dict)
    classified_reads: set[str] = field(default_factory=set)  # "Entity.field" read by an agent
    mutation_fields: int = 0  # run so far in this request: a batch shares one context

    def loader(self, entity: str, max_age: float | None) -> DataLoader[str, Entry | None]:
        """One batching loader per entity and maxAge, for this request."""
        key = (entity, max_age)
        if key not in self._loaders:
            reads = self.services.reads

            async def load(keys: list[str]) -> list[Entry | BaseException | None]:
                return list(await reads.get_many(entity, keys, max_age=max_age))

            self._loaders[key] = DataLoader(load_fn=load)
        return self._loaders[key]

    def require_read(self, entity: str) -> None:
        """Raise Forbidden unless policy lets this principal read the entity."""
        if not self._granted(entity, "read"):
            raise Forbidden(f"{self.principal.id} may not read {entity}")

    def reveal(self, entity: str, field_name: str) -> bool:
        """`visible`, and note an agent's read of a pii or financial field for the audit."""
        shown = self.visible(entity, field_name)
        if shown and self.principal.kind is PrincipalKind.AGENT:
            classification = self.services.classification(entity, field_name)
            if classification in _AUDITED:
                self.classified_reads.add(f"{entity}.{field_name}")
        return shown

    def visible(self, entity: str, field_name: str) -> bool:
        """False when the field's classification is masked for this principal."""
        classification = self.services.classification(entity, field_name)
        if classification not in _MASKED:
            return True
        return self._granted(f"{classification.value}:{entity}", "read")

    def granted_classification(self, entity: str, classification: str) -> bool:
        """Whether values of this classification on this entity are shown unmasked."""
        return self._granted(f"{classification}:{entity}", "read")

    def _granted(self, obj: str, act: str) -> bool:
        if (obj, act) not in self._grants:
            decision = self.services.policy.decide(self.principal, obj, act)
            self._grants[(obj, act)] = decision.allowed
        return self._grants[(obj, act)]


Info = strawberry.Info[Context, None]
