"""Records as connectors return them, and the mapping from a system's raw values to fields.

A connector turns a row or a JSON object into a `Record`: named fields with Python values
(exact `Decimal` for money), the record's own last-modified time when the system keeps one,
and a `version` that changes whenever the record changes in its system of record.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

FieldType = Literal["str", "int", "bool", "decimal", "datetime", "date", "json"]


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """Where one field lives in its system (`at`: a column, or a dotted JSON path)."""

    name: str
    at: str
    type: FieldType = "str"
    scale: int = 0  # decimals stored as integer minor units: 1234 with scale 2 is 12.34
    nullable: bool = True
    # the system's values and the contract's, where they differ (a Tryton sale's state
    # `processing` is an order `open`); a value not listed is a data error
    values: tuple[tuple[str, str], ...] = ()
    minimum: Decimal | None = None  # int and decimal: values outside the range are data errors
    maximum: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ChildMapping:
    """A list of sub-records read with their parent (order lines, stock per location)."""

    name: str
    at: str  # a table (SQL) or the JSON key that holds the list (HTTP)
    parent_key: str  # the column in the child table that refers to the parent's key
    fields: tuple[FieldMapping, ...]
    order_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Record:
    """One record of an entity as its system of record holds it."""

    key: str
    data: Mapping[str, Any]
    updated_at: datetime | None
    stated_version: str = ""  # the system's own version of the record, when it keeps one

    @functools.cached_property
    def version(self) -> str:
        """The system's version, else a hash of the content: worked out when first asked,
        since most records of a page are read without it."""
        return self.stated_version or content_version(self.data)


# One encoder for every record: json.dumps with options builds a new one on each call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def content_version(data: Mapping[str, Any]) -> str:
    """A tag that changes whenever any field of the record changes."""
    return hashlib.sha256(_CANONICAL.encode(data).encode()).hexdigest()[:20]


class ConversionError(ValueError):
    """A raw value does not fit its declared field type."""


def convert(raw: Any, mapping: FieldMapping) -> Any:
    """Turn one raw value from a system into the field's Python type."""
    if raw is None:
        if not mapping.nullable:
            raise ConversionError("is missing or null")
        return None
    try:
        value = _CONVERTERS[mapping.type](raw, mapping)
    except (ValueError, TypeError, InvalidOperation, ArithmeticError) as exc:
        raise ConversionError(f"expected {mapping.type}, got {type(raw).__name__}") from exc
    _check_range(value, mapping)
    if mapping.values:
        known = dict(mapping.values)
        if value not in known:
            raise ConversionError(f"unexpected value {value!r}")
        return known[value]
    return value


def _check_range(value: Any, mapping: FieldMapping) -> None:
    if mapping.minimum is not None and value < mapping.minimum:
        raise ConversionError(f"{value} is below the contract's minimum {mapping.minimum}")
    if mapping.maximum is not None and value > mapping.maximum:
        raise ConversionError(f"{value} is above the contract's maximum {mapping.maximum}")


def _to_str(raw: Any, _: FieldMapping) -> str:
    if isinstance(raw, str | int) and not isinstance(raw, bool):
        return str(raw)
    raise TypeError(raw)


def _to_int(raw: Any, _: FieldMapping) -> int:
    if isinstance(raw, float | Decimal) and raw == int(raw):  # Tryton's quantities: 12.0
        return int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise TypeError(raw)
    return int(raw)


def _to_bool(raw: Any, _: FieldMapping) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    raise TypeError(raw)


def _to_decimal(raw: Any, mapping: FieldMapping) -> Decimal:
    # Floats are refused: a float amount has already lost exactness upstream (the HTTP
    # connector parses JSON numbers as Decimal, so only a float column lands here).
    if isinstance(raw, bool | float):
        raise TypeError(raw)
    if isinstance(raw, int | str | Decimal):
        value = Decimal(raw)
        if not value.is_finite():
            raise ValueError(raw)
        if mapping.scale:
            return value.scaleb(-mapping.scale)
        return value
    raise TypeError(raw)


def _to_datetime(raw: Any, _: FieldMapping) -> datetime:
    value = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
    # Naive times from a system of record are taken as UTC, the only zone we store.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _to_date(raw: Any, _: FieldMapping) -> date:
    if isinstance(raw, datetime):
        return raw.date()
    if isinstance(raw, date):
        return raw
    return date.fromisoformat(str(raw)[:10])


def _to_json(raw: Any, _: FieldMapping) -> Any:
    return json.loads(raw) if isinstance(raw, str) else raw


_CONVERTERS: dict[FieldType, Any] = {
    "str": _to_str,
    "int": _to_int,
    "bool": _to_bool,
    "decimal": _to_decimal,
    "datetime": _to_datetime,
    "date": _to_date,
    "json": _to_json,
}
