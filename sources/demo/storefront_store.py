"""The storefront's storage: its copy of available stock per SKU in one SQLite file.

    seed_storefront(db_path, estate)   (re)create the file from the ERP's stock at one warehouse,
                                       every 40th SKU three units off, as a missed sync leaves it
    connect(db_path)                   one short-lived connection, explicit transactions

Kept apart from the service (storefront.py) so the demo seeds it without importing a web stack.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sources.demo.data import Estate

LOCATION = "WH-BER"  # the warehouse the shop sells from
# (every n-th SKU, units off): a missed sync left these behind, so the demo shows drift at once.
_OFF_EVERY, _OFF_BY = 40, 3

_SCHEMA = """
DROP TABLE IF EXISTS stock;
DROP TABLE IF EXISTS idempotency_keys;
CREATE TABLE stock (sku TEXT PRIMARY KEY, available INTEGER NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE idempotency_keys (key TEXT PRIMARY KEY, sku TEXT NOT NULL, available INTEGER NOT NULL);
"""


def seed_storefront(db_path: Path, estate: Estate, *, location: str = LOCATION) -> int:
    """(Re)create the storefront's file from the estate's stock at `location`, a few SKUs off;
    how many SKUs it holds."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        (level.sku, _seeded(index, level.on_hand - level.reserved), estate.as_of.isoformat())
        for index, level in enumerate(
            level for level in estate.stock_levels if level.location == location
        )
    ]
    with connect(db_path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(_SCHEMA)
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO stock VALUES (?, ?, ?)", rows)
        connection.execute("COMMIT")
    return len(rows)


def _seeded(index: int, available: int) -> int:
    return available + _OFF_BY if index % _OFF_EVERY == _OFF_EVERY - 1 else available


@contextmanager
def connect(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the storefront's file, closed on exit."""
    # Autocommit mode with explicit BEGINs, as the CRM's store does; one connection per call.
    connection = sqlite3.connect(db_path, isolation_level=None, timeout=10)
    connection.row_factory = sqlite3.Row
    try:
        yield connection
    finally:
        connection.close()
