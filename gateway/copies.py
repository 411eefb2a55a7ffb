"""Copies of contract fields held in other systems, and how each is read.

A copy is read through the connector of the source that holds it, as one more mapping on
that connector (named `Entity copy name`), so its reads share the source's pool, timeout,
circuit breaker and counters with every other call to that system. Its records have three
fields: `key` (the system of record's key), `value` and, when the copy keeps one,
`updated_at`.

The entity a copy is compared with is mapped once more on its own system's connector,
narrowed to the fields the comparison needs (`Entity record name`): a sweep reads every
record, and converting fields nobody compares was most of its cost.
"""

from __future__ import annotations

from gateway.config import CopyConfig, EntityConfig, GatewayConfig
from sources.http import HttpEntity
from sources.records import FieldMapping
from sources.sql import SqlEntity


def copy_entity(entity: str, copy: str) -> str:
    """The name a copy is mapped under on its source's connector."""
    return f"{entity} copy {copy}"


def record_entity(entity: str, copy: str) -> str:
    """The name the entity, narrowed for comparing one copy, is mapped under on its system's
    connector."""
    return f"{entity} record {copy}"


def narrowed_entities(config: GatewayConfig, source: str) -> list[tuple[str, EntityConfig]]:
    """Each entity of `source` that has copies, narrowed per copy to what comparing needs."""
    return [
        (record_entity(name, copy_name), narrowed(entity, copy))
        for name, entity in config.entities.items()
        if entity.source == source
        for copy_name, copy in entity.copies.items()
    ]


def narrowed(entity: EntityConfig, copy: CopyConfig) -> EntityConfig:
    """The entity with only its key, its change time and the fields comparing `copy` reads."""
    child, _, leaf = copy.field.rpartition(".")
    wanted = {entity.key, entity.updated_at, copy.field, copy.record_updated_at}
    fields = {name: field for name, field in entity.fields.items() if name in wanted}
    children = {}
    if child:
        stamp = (copy.record_updated_at or "").removeprefix(f"{child}.")
        names = {leaf, stamp, *copy.where}
        rows = entity.children[child]
        children[child] = rows.model_copy(
            update={
                "fields": {n: f for n, f in rows.fields.items() if n in names},
                "order_by": [n for n in rows.order_by if n in names],
            }
        )
    version = entity.version if entity.version in fields else None
    update = {"fields": fields, "children": children, "searchable": [], "version": version}
    return entity.model_copy(update=update)


def copy_mappings(config: GatewayConfig, source: str) -> list[HttpEntity | SqlEntity]:
    """The mappings of every copy held by `source`, for its connector."""
    kind = config.sources[source].kind
    schema = config.sources[source].db_schema
    mappings: list[HttpEntity | SqlEntity] = []
    for entity_name, entity in config.entities.items():
        for name, copy in entity.copies.items():
            if copy.source != source:
                continue
            fields = _fields(entity, copy)
            named = copy_entity(entity_name, name)
            stamp = "updated_at" if copy.updated_at else None
            if kind == "sql":
                assert copy.table is not None  # checked when the config was loaded
                mappings.append(
                    SqlEntity(named, copy.table, "key", fields, updated_at=stamp, schema=schema)
                )
            else:
                mappings.append(_http(named, copy, fields, stamp))
    return mappings


def _fields(entity: EntityConfig, copy: CopyConfig) -> tuple[FieldMapping, ...]:
    field = dict(entity.all_fields())[copy.field]
    key = FieldMapping("key", at=copy.key or entity.key, nullable=False)
    # The copy's value is read as the contract's type, without its bounds: a copy out of the
    # contract's range is a difference to report, not a record to refuse.
    value = FieldMapping(
        "value",
        at=copy.value or copy.field.rpartition(".")[2],
        type=field.type,
        scale=field.scale if copy.scale is None else copy.scale,
    )
    if copy.updated_at is None:
        return (key, value)
    return (key, value, FieldMapping("updated_at", at=copy.updated_at, type="datetime"))


def _http(
    name: str, copy: CopyConfig, fields: tuple[FieldMapping, ...], stamp: str | None
) -> HttpEntity:
    assert copy.http is not None  # checked when the config was loaded
    return HttpEntity(
        name=name,
        key="key",
        fields=fields,
        one=copy.http.one,
        many=copy.http.list,
        list=copy.http.list,
        items=copy.http.items,
        search_param=None,
        updated_at=stamp,
    )
