"""Opaque cursors and page-size bounds for Relay-style connections."""

from __future__ import annotations

import base64
import binascii

from gateway.errors import InvalidArgument

_PREFIX = "gh1:"


def encode_cursor(entity: str, position: str) -> str:
    """An opaque cursor for one position of one entity's list."""
    raw = f"{_PREFIX}{entity}:{position}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(entity: str, cursor: str | None, *, argument: str = "after") -> str | None:
    """The connector position inside a cursor; a cursor we did not issue is a bad argument."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise InvalidArgument(argument, "malformed cursor") from exc
    prefix = f"{_PREFIX}{entity}:"
    if not raw.startswith(prefix) or len(raw) == len(prefix):
        raise InvalidArgument(argument, f"not a cursor of a {entity} list")
    return raw[len(prefix) :]


def page_size(first: int | None, *, default: int, maximum: int, argument: str = "first") -> int:
    """`first` (or the argument named, such as `last`), checked against 1..maximum."""
    size = default if first is None else first
    if not 1 <= size <= maximum:
        raise InvalidArgument(argument, f"must be between 1 and {maximum}, got {size}")
    return size
