"""The gateway's database: its schema is created once, and an outdated one is named."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from gateway.cli import _set_aside_if_outdated
from gateway.console.sessions import console_id_tokens
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


async def _gateway_file(path: Path, *, outdated: bool) -> None:
    """A gateway database file, laid out as now or as the release before this one."""
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await create_schema(engine)
        if outdated:  # before idempotency keys moved onto the actions
            async with engine.begin() as connection:
                await connection.execute(text("DROP INDEX ux_actions_held_key"))
                await connection.execute(text("ALTER TABLE actions DROP COLUMN key_held_until"))
                await connection.execute(text("ALTER TABLE actions DROP COLUMN request_digest"))
    finally:
        await engine.dispose()


async def test_create_schema_over_an_older_layout_names_the_missing_columns(
    tmp_path: Path,
) -> None:
    await _gateway_file(tmp_path / "gateway.db", outdated=True)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    try:
        with pytest.raises(SchemaOutdated, match=r"actions lacks column.*key_held_until"):
            await create_schema(engine)
    finally:
        await engine.dispose()


async def test_create_schema_adds_a_table_an_older_database_lacks(tmp_path: Path) -> None:
    # The console keeps single sign-on ID tokens in a table of its own, so a database from
    # before it gets the table and starts, where a missing column would be SchemaOutdated.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    try:
        await create_schema(engine)
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP TABLE {console_id_tokens.name}"))
        await create_schema(engine)
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        assert console_id_tokens.name in tables
    finally:
        await engine.dispose()


def test_demo_sets_an_outdated_gateway_file_aside_and_keeps_a_current_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    current, outdated = tmp_path / "current.db", tmp_path / "outdated.db"
    asyncio.run(_gateway_file(current, outdated=False))
    asyncio.run(_gateway_file(outdated, outdated=True))

    _set_aside_if_outdated(current)
    _set_aside_if_outdated(outdated)

    assert current.exists()
    assert not outdated.exists()
    (kept,) = tmp_path.glob("outdated.db.*.old")
    assert f"moved it to {kept}" in capsys.readouterr().out
