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


@dataclass(frozen=True, slots=True)
class View:
    """What one principal sees of one entity's records, decided once per request.

    Field names are the contract's, a child's as `child.field`, in the contract's order.
    """

    entity: str
    masked: tuple[str, ...]  # served null: their classification is not granted
    audited: tuple[str, ...]  # shown pii or financial fields whose reads by an agent are audited

    @property
    def inspected(self) -> bool:
        """Whether a response holding this entity's fields needs looking over afterwards."""
        return bool(self.masked or self.audited)


@dataclass
class Context(BaseContext):
    """What every resolver reaches through `info.context` (FastAPI fills in the request)."""

    services: Services
    principal: Principal
    channel: str = "graphql"
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    masked: list[str] = field(default_factory=list)  # paths of masked values in the response
    _loaders: dict[tuple[str, float | None], DataLoader[str, Entry | None]] = field(
        default_factory=dict
    )
    _grants: dict[tuple[str, str], bool] = field(default_factory=dict)
    _views: dict[str, View] = field(default_factory=dict)
    inspect: bool = False  # a record with masked or audited fields was served
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

    def view(self, entity: str) -> View:
        """The entity's fields this principal is shown masked, and those audited if read."""
        if entity not in self._views:
            contract = self.services.config.entities[entity]
            names = [name for name, _ in contract.all_fields()]
            masked = tuple(name for name in names if not self.visible(entity, name))
            agent = self.principal.kind is PrincipalKind.AGENT
            audited = tuple(
                name
                for name in names
                if agent
                and name not in masked
                and self.services.classification(entity, name) in _AUDITED
            )
            self._views[entity] = View(entity, masked, audited)
        return self._views[entity]

    def served(self, view: View) -> View:
        """Note that a record of `view`'s entity is in the response; returns the view."""
        self.inspect = self.inspect or view.inspected
        return view

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
