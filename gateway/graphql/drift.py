"""`drift(entity, status)` and `driftCopies(entity)`: what the last drift sweep found.

Who may see an entity's drift is who may read the entity (policy's `read`); a field masked
for the caller (pii not granted) has its values withheld, and a pii field's values are never
stored by the sweep in the first place (gateway/drift.py).
"""

from __future__ import annotations

from datetime import datetime

import strawberry

from gateway.drift import CopyState, DriftStatus, Finding, copy_states, findings
from gateway.errors import InvalidArgument
from gateway.graphql.context import Info

strawberry.enum(
    DriftStatus,
    description="IN_SYNC: the copy matches its system of record; LAGGING: it differs, for less "
    "than the copy's tolerated delay; DRIFT: it differs beyond its tolerance and delay; "
    "UNKNOWN: a side could not be read at the last sweep, so nothing is claimed.",
)


@strawberry.type(description="One record whose copy differs from its system of record.")
class DriftFinding:
    entity: str
    copy: str = strawberry.field(description="The copy's name in the entity's contract.")
    key: str
    field: str = strawberry.field(description="The contract's field, a child's as child.field.")
    status: DriftStatus
    record_value: str | None = strawberry.field(
        description="The system of record's value (authoritative); null when absent or masked."
    )
    copy_value: str | None = strawberry.field(description="The copy's value; null likewise.")
    masked: bool = strawberry.field(description="The values are withheld (pii).")
    authority: str = strawberry.field(description="The system of record: it is authoritative.")
    holder: str = strawberry.field(description="The system holding the copy.")
    record_updated_at: datetime | None
    copy_updated_at: datetime | None
    record_age_seconds: float | None = strawberry.field(
        description="How old the record's value was when checked, when its system says."
    )
    copy_age_seconds: float | None
    first_seen: datetime = strawberry.field(description="Since when the difference is seen.")
    checked_at: datetime
    error: str | None = strawberry.field(description="Why it is UNKNOWN.")


@strawberry.type(description="One declared copy as its last sweep left it.")
class DriftCopy:
    entity: str
    copy: str
    field: str
    owner: str
    authority: str
    holder: str
    status: DriftStatus
    checked: int = strawberry.field(description="Records compared.")
    drifting: int
    lagging: int
    checked_at: datetime
    since: datetime = strawberry.field(description="In this status since.")
    seconds: float = strawberry.field(description="How long reading and comparing took.")
    error: str | None


@strawberry.type
class DriftQueries:
    """Copies of fields held in other systems, compared with their system of record."""

    @strawberry.field(
        description="Records whose copies differ from their system of record (in sync ones are "
        "not kept), of the entities you may read; entity and status narrow it."
    )
    async def drift(
        self, info: Info, entity: str | None = None, status: DriftStatus | None = None
    ) -> list[DriftFinding]:
        entities = _readable(info, entity)
        async with info.context.services.engine.connect() as connection:
            found = await findings(connection, entities=entities, status=status)
        return [_node(info, finding) for finding in found]

    @strawberry.field(description="Each declared copy of the entities you may read.")
    async def drift_copies(self, info: Info, entity: str | None = None) -> list[DriftCopy]:
        entities = _readable(info, entity)
        async with info.context.services.engine.connect() as connection:
            states = await copy_states(connection, entities=entities)
        return [_copy(state) for state in states]


def _readable(info: Info, entity: str | None) -> list[str]:
    context = info.context
    if entity is not None:
        if entity not in context.services.config.entities:
            raise InvalidArgument("entity", f"no entity named '{entity}'")
        context.require_read(entity)
        return [entity]
    return [
        name
        for name in context.services.config.entities
        if context.services.policy.can_read(context.principal, name)
    ]


def _node(info: Info, finding: Finding) -> DriftFinding:
    config = info.context.services.config.entities[finding.entity]
    copy = config.copies.get(finding.copy)
    shown = not finding.masked and info.context.visible(finding.entity, finding.field)
    return DriftFinding(
        entity=finding.entity,
        copy=finding.copy,
        key=finding.key,
        field=finding.field,
        status=finding.status,
        record_value=finding.record_value if shown else None,
        copy_value=finding.copy_value if shown else None,
        masked=not shown,
        authority=config.source,
        holder=copy.source if copy else "",
        record_updated_at=finding.record_updated_at,
        copy_updated_at=finding.copy_updated_at,
        record_age_seconds=_seconds(finding, finding.record_updated_at),
        copy_age_seconds=_seconds(finding, finding.copy_updated_at),
        first_seen=finding.first_seen,
        checked_at=finding.checked_at,
        error=finding.error,
    )


def _seconds(finding: Finding, at: datetime | None) -> float | None:
    age = finding.age(at)
    return None if age is None else age.total_seconds()


def _copy(state: CopyState) -> DriftCopy:
    return DriftCopy(
        entity=state.entity,
        copy=state.copy,
        field=state.field,
        owner=state.owner,
        authority=state.authority,
        holder=state.holder,
        status=state.status,
        checked=state.checked,
        drifting=state.drifting,
        lagging=state.lagging,
        checked_at=state.checked_at,
        since=state.since,
        seconds=state.seconds,
        error=state.error,
    )
