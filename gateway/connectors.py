"""Builds one connector per configured system of record, with its entities' mappings."""

from __future__ import annotations

import os
from collections.abc import Mapping

from gateway.config import ChildConfig, EntityConfig, FieldConfig, GatewayConfig, SourceConfig
from gateway.copies import copy_mappings, narrowed_entities
from gateway.errors import ConfigError
from sources.breaker import Breaker
from sources.connector import Connector
from sources.http import HttpConnector, HttpEntity
from sources.records import ChildMapping, FieldMapping
from sources.sql import SqlConnector, SqlEntity
from sources.tryton.connector import TrytonConnector, TrytonEntity
from sources.tryton.rpc import TrytonRpc


def build_connectors(
    config: GatewayConfig, environ: Mapping[str, str] | None = None
) -> dict[str, Connector]:
    """A connector per source, mapped to the entities whose system of record it is;
    credentials come from `environ` (the process's environment by default)."""
    connectors: dict[str, Connector] = {}
    for name, source in config.sources.items():
        owned = {e: cfg for e, cfg in config.entities.items() if cfg.source == name}
        connectors[name] = _connector(
            name, source, owned, os.environ if environ is None else environ
        )
        _map_copies(connectors[name], config, name)
    return connectors


def _map_copies(connector: Connector, config: GatewayConfig, source: str) -> None:
    # Copies (gateway/copies.py) are read through the connector of the system holding them,
    # so they share its pool, timeout and breaker; they are mapped, never served as entities.
    # So are the entities they copy, narrowed to what comparing them reads.
    held, records = copy_mappings(config, source), narrowed_entities(config, source)
    if isinstance(connector, HttpConnector):
        narrow = [_http_entity(name, entity) for name, entity in records]
        connector.map_copies([*(c for c in held if isinstance(c, HttpEntity)), *narrow])
    elif isinstance(connector, SqlConnector):
        schema = config.sources[source].db_schema
        rows = [_sql_entity(name, entity, schema) for name, entity in records]
        connector.map_copies([*(c for c in held if isinstance(c, SqlEntity)), *rows])


def _connector(
    name: str, source: SourceConfig, entities: dict[str, EntityConfig], environ: Mapping[str, str]
) -> Connector:
    if source.kind == "tryton":
        return TrytonConnector(
            name,
            rpc=_tryton_rpc(name, source, environ),
            entities=[_tryton_entity(e, cfg) for e, cfg in entities.items()],
            breaker=_breaker(source),
        )
    if source.kind == "sql":
        return SqlConnector(
            name,
            url=source.url,
            timeout=source.timeout,
            schema=source.db_schema,
            entities=[_sql_entity(e, cfg, source.db_schema) for e, cfg in entities.items()],
            breaker=_breaker(source),
        )
    return HttpConnector(
        name,
        url=source.url,
        timeout=source.timeout,
        headers=source.headers,
        entities=[_http_entity(e, cfg) for e, cfg in entities.items()],
        breaker=_breaker(source),
    )


def _breaker(source: SourceConfig) -> Breaker:
    return Breaker(failures=source.breaker.failures, reset=source.breaker.reset)


def _fields(fields: dict[str, FieldConfig]) -> tuple[FieldMapping, ...]:
    return tuple(
        FieldMapping(
            name=name,
            at=f.at or name,
            type=f.type,
            scale=f.scale,
            nullable=not f.required,
            values=tuple(f.values.items()),
            minimum=f.min,
            maximum=f.max,
        )
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


def _tryton_rpc(name: str, source: SourceConfig, environ: Mapping[str, str]) -> TrytonRpc:
    # checked when the config was loaded
    assert source.database is not None
    assert source.user is not None
    assert source.password_env is not None
    password = environ.get(source.password_env)
    if not password:
        raise ConfigError(
            f"sources.{name}.password_env: environment variable {source.password_env} is not set"
        )
    return TrytonRpc(
        name,
        url=source.url,
        database=source.database,
        user=source.user,
        password=password,
        timeout=source.timeout,
    )


def _tryton_entity(name: str, cfg: EntityConfig) -> TrytonEntity:
    assert cfg.tryton is not None  # checked when the config was loaded
    return TrytonEntity(
        name=name,
        model=cfg.tryton.model,
        key=cfg.key,
        fields=_fields(cfg.fields),
        children=_children(cfg.children),
        domain=tuple(cfg.tryton.domain),
        updated_at=cfg.updated_at,
        version=cfg.version,
        searchable=tuple(cfg.searchable),
    )
