"""The gateway's database: its schema is created once, and an outdated one is named."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.database import SchemaOutdated, create_engine, create_schema


async def test_create_schema_twice_keeps_the_chain_head(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    try:
        await create_schema(engine)
        await create_schema(engine)
        async with engine.connect() as connection:
            heads = (await connection.execute(text("SELECT seq FROM audit_head"))).all()
        assert heads == [(0,)]
    finally:
        await engine.dispose()


async def test_create_schema_over_an_older_layout_names_the_missing_columns(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    try:
        await create_schema(engine)
        async with engine.begin() as connection:
            # As the release before idempotency keys moved onto the actions laid it out.
            await connection.execute(text("DROP INDEX ux_actions_held_key"))
            await connection.execute(text("ALTER TABLE actions DROP COLUMN key_held_until"))
            await connection.execute(text("ALTER TABLE actions DROP COLUMN request_digest"))
        with pytest.raises(SchemaOutdated, match=r"actions lacks column.*key_held_until"):
            await create_schema(engine)
    finally:
        await engine.dispose()
