"""Builds one connector per configured system of record, with its entities' mappings."""

from __future__ import annotations

from gateway.config import ChildConfig, EntityConfig, FieldConfig, GatewayConfig, SourceConfig
from sources.connector import Connector
from sources.http import HttpConnector, HttpEntity
from sources.records import ChildMapping, FieldMapping
from sources.sql import SqlConnector, SqlEntity


def build_connectors(config: GatewayConfig) -> dict[str, Connector]:
    """A connector per source, mapped to the entities whose system of record it is."""
    connectors: dict[str, Connector] = {}
    for name, source in config.sources.items():
        owned = {e: cfg for e, cfg in config.entities.items() if cfg.source == name}
        connectors[name] = _connector(name, source, owned)
    return connectors


def _connector(name: str, source: SourceConfig, entities: dict[str, EntityConfig]) -> Connector:
    if source.kind == "sql":
        return SqlConnector(
            name,
            url=source.url,
            timeout=source.timeout,
            schema=source.db_schema,
            entities=[_sql_entity(e, cfg, source.db_schema) for e, cfg in entities.items()],
        )
    return HttpConnector(
        name,
        url=source.url,
        timeout=source.timeout,
        headers=source.headers,
        entities=[_http_entity(e, cfg) for e, cfg in entities.items()],
    )


def _fields(fields: dict[str, FieldConfig]) -> tuple[FieldMapping, ...]:
    return tuple(
        FieldMapping(name=name, at=f.at or name, type=f.type, scale=f.scale)
        for name, f in fields.items()
    )


def _children(children: dict[str, ChildConfig]) -> tuple[ChildMapping, ...]:
    return tuple(
        ChildMapping(
            name=name,
            at=child.at,
            parent_key=child.parent_key,
            fields=_fields(child.fields),
            order_by=tuple(child.order_by),
        )
        for name, child in children.items()
    )


def _sql_entity(name: str, cfg: EntityConfig, schema: str | None) -> SqlEntity:
    assert cfg.table is not None  # checked when the config was loaded
    return SqlEntity(
        name=name,
        table=cfg.table,
        key=cfg.key,
        fields=_fields(cfg.fields),
        children=_children(cfg.children),
        updated_at=cfg.updated_at,
        searchable=tuple(cfg.searchable),
        schema=schema,
    )


def _http_entity(name: str, cfg: EntityConfig) -> HttpEntity:
    assert cfg.http is not None  # checked when the config was loaded
    http = cfg.http
    return HttpEntity(
        name=name,
        key=cfg.key,
        fields=_fields(cfg.fields),
        children=_children(cfg.children),
        one=http.one,
        many=http.many,
        list=http.list,
        items=http.items,
        many_param=http.many_param,
        max_batch=http.max_batch,
        search_param=http.search_param,
        filter_params=http.filter_params,
        updated_at=cfg.updated_at,
        version=cfg.version,
    )
