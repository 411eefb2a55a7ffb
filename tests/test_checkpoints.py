"""Signed checkpoints of the audit trail's head, on SQLite and PostgreSQL: writing them,
catching events removed from the end and a recomputed chain, start-up refusal, the CLI."""

from __future__ import annotations

import asyncio
import json
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import checkpoints
from gateway.audit import AuditEvent, AuditTrail, StoredEvent, chain_hash
from gateway.checkpoints import (
    Checkpointer,
    CheckpointVerification,
    DirectorySink,
    Signer,
    Verifier,
    checkpointer_from_settings,
)
from gateway.cli import main
from gateway.database import GENESIS_HASH, audit_events, audit_head, create_engine, create_schema
from gateway.errors import ConfigError
from gateway.settings import Settings
from tests.factories import fresh_postgres_database, require_postgres

VARIABLES = ("KEY_FILE", "KEY", "DIR", "URL", "TOKEN", "EVERY", "DATABASE_URL")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GATEHOUSE_CHECKPOINT_* or database URL from the shell running the tests."""
    for name in VARIABLES:
        prefix = "GATEHOUSE_" if name == "DATABASE_URL" else "GATEHOUSE_CHECKPOINT_"
        monkeypatch.delenv(prefix + name, raising=False)


def audit_event(n: int) -> AuditEvent:
    """An agent's applied stock adjustment, numbered `n`."""
    return AuditEvent(
        event="action.applied",
        principal="restock-agent",
        principal_kind="agent",
        on_behalf_of="olivia",
        channel="mcp",
        outcome="APPLIED",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        action_kind="inventory.adjust",
        target="InventoryItem:SKU-1001",
        payload={"n": n},
    )


async def append(engine: AsyncEngine, count: int) -> None:
    """`count` more events on the trail."""
    trail = AuditTrail(engine)
    for n in range(count):
        await trail.append(audit_event(n))


@asynccontextmanager
async def database_url(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A new, empty gateway database: a SQLite file, or a fresh PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
        return
    require_postgres()
    async with fresh_postgres_database("gh_checkpoints") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The gateway's database with its schema, on SQLite and on PostgreSQL."""
    async with database_url(request.param, tmp_path) as url:
        built = create_engine(url)
        try:
            await create_schema(built)
            yield built
        finally:
            await built.dispose()


@pytest.fixture
def signer() -> Signer:
    """A fresh Ed25519 signing key."""
    return Signer(Ed25519PrivateKey.generate())


@pytest.fixture
def sink_dir(tmp_path: Path) -> Path:
    """An empty directory for checkpoint files."""
    path = tmp_path / "checkpoints"
    path.mkdir()
    return path


# What someone who can write the gateway's database could do to hide what happened.


async def remove_newest(engine: AsyncEngine, *, keep: int) -> None:
    """Delete the events after `keep` and move the head back to it: the chain still verifies."""
    async with engine.begin() as connection:
        await connection.execute(delete(audit_events).where(audit_events.c.seq > keep))
        kept = select(audit_events.c.hash).where(audit_events.c.seq == keep)
        hash_ = (await connection.execute(kept)).scalar_one()
        head = update(audit_head).where(audit_head.c.id == 1)
        await connection.execute(head.values(seq=keep, hash=hash_))


async def recompute_after_edit(engine: AsyncEngine, seq: int, **values: object) -> None:
    """Edit event `seq`, then rewrite its hash, every later one and the head to match."""
    async with engine.begin() as connection:
        edit = update(audit_events).where(audit_events.c.seq == seq).values(**values)
        await connection.execute(edit)
        rows = await connection.execute(select(audit_events).order_by(audit_events.c.seq))
        prev_hash = GENESIS_HASH
        for row in rows.all():
            if row.seq < seq:
                prev_hash = row.hash
                continue
            hash_ = chain_hash(prev_hash, stored(row._asdict()).document())
            moved = update(audit_events).where(audit_events.c.seq == row.seq)
            await connection.execute(moved.values(prev_hash=prev_hash, hash=hash_))
            prev_hash = hash_
        head = update(audit_head).where(audit_head.c.id == 1)
        await connection.execute(head.values(hash=prev_hash))


def stored(row: dict[str, object]) -> StoredEvent:
    """An `audit_events` row as the event it holds."""
    at = row["at"]
    assert isinstance(at, datetime)
    payload = json.loads(str(row["payload"]))
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at  # SQLite: naive UTC
    return StoredEvent(**{**row, "at": at, "payload": payload})


async def verify(engine: AsyncEngine, directory: Path, signer: Signer) -> CheckpointVerification:
    """The checkpoints in `directory` checked against `signer`'s public key and the database."""
    verifier = Verifier([signer.public_key])
    return await checkpoints.verify(directory, engine=engine, verifier=verifier)


def listing(directory: Path) -> list[str]:
    """The names of the files in `directory`, sorted."""
    return sorted(path.name for path in directory.iterdir())


async def write_checkpoint(engine: AsyncEngine, signer: Signer, directory: Path) -> Path:
    """One checkpoint of the head, written into `directory`; its file."""
    written = await checkpoints.checkpoint(engine, signer=signer, sink=DirectorySink(directory))
    return Path(written.location)


# Writing and verifying.


async def test_checkpoint_of_head_file_signed_and_verify_matches(
    engine: AsyncEngine, signer: Signer, sink_dir: Path
) -> None:
    await append(engine, 5)

    path = await write_checkpoint(engine, signer, sink_dir)

    head_hash = (await checkpoints.read_head(engine))[1]
    document = json.loads(path.read_text(encoding="utf-8"))["checkpoint"]
    assert path.parent == sink_dir
    assert path.name.startswith("0000000000000005-")
    assert (document["seq"], document["hash"], document["key_id"]) == (5, head_hash, signer.key_id)
    assert listing(sink_dir) == [path.name]  # no temporary file left
    verdict = await verify(engine, sink_dir, signer)
    assert (verdict.ok, verdict.checked, verdict.problems) == (True, 1, ())
    assert verdict.newest is not None
    assert verdict.newest.seq == 5


async def test_verify_head_moved_past_checkpoints_matches(
    engine: AsyncEngine, signer: Signer, sink_dir: Path
) -> None:
    for _ in range(3):
        await append(engine, 4)
        await write_checkpoint(engine, signer, sink_dir)
    await append(engine, 2)

    verdict = await verify(engine, sink_dir, signer)

    assert (verdict.ok, verdict.checked, verdict.head_seq) == (True, 3, 14)
    assert verdict.newest is not None
    assert verdict.newest.seq == 12
    assert [name[:16] for name in listing(sink_dir)] == [f"{n:016d}" for n in (4, 8, 12)]


async def test_verify_events_removed_from_end_names_checkpoint(
    engine: AsyncEngine, signer: Signer, sink_dir: Path
) -> None:
    await append(engine, 6)
    early = await write_checkpoint(engine, signer, sink_dir)
    await append(engine, 4)
    late = await write_checkpoint(engine, signer, sink_dir)

    await remove_newest(engine, keep=7)

    assert (await AuditTrail(engine).verify()).ok  # the chain alone cannot tell
    verdict = await verify(engine, sink_dir, signer)
    assert verdict.problems == (
        f"checkpoint {late} (seq=10): events removed from the end: the trail's head is at seq=7",
    )
    assert verdict.newest is not None
    assert verdict.newest.seq == 6
    assert early.exists()


async def test_verify_end_removed_then_refilled_names_checkpoint(
    engine: AsyncEngine, signer: Signer, sink_dir: Path
) -> None:
    await append(engine, 10)
    path = await write_checkpoint(engine, signer, sink_dir)
    await remove_newest(engine, keep=7)
    await append(engine, 5)  # the head is past the checkpoint again, on other events

    verdict = await verify(engine, sink_dir, signer)

    assert (await AuditTrail(engine).verify()).ok
    assert len(verdict.problems) == 1
    assert verdict.problems[0].startswith(
        f"checkpoint {path} (seq=10): the chain was recomputed: the event at seq=10 has hash "
    )


async def test_verify_chain_recomputed_after_edit_names_checkpoint(
    engine: AsyncEngine, signer: Signer, sink_dir: Path
) -> None:
    await append(engine, 10)
    path = await write_checkpoint(engine, signer, sink_dir)
    signed = json.loads(path.read_text(encoding="utf-8"))["checkpoint"]["hash"]

    await recompute_after_edit(engine, 4, outcome="DENIED")

    assert (await AuditTrail(engine).verify()).ok  # every hash and the head agree again
    verdict = await verify(engine, sink_dir, signer)
    assert len(verdict.problems) == 1
    assert verdict.problems[0].startswith(
        f"checkpoint {path} (seq=10): the chain was recomputed: the event at seq=10 has hash "
    )
    assert verdict.problems[0].endswith(f", the checkpoint signed {signed[:16]}...")


@pytest.mark.parametrize(
    ("field", "value"),
    [("seq", 9), ("hash", "f" * 64), ("at", "2030-01-01T00:00:00.000000+00:00")],
)
async def test_verify_file_edited_by_hand_fails_signature_naming_file(
    engine: AsyncEngine, signer: Signer, sink_dir: Path, field: str, value: object
) -> None:
    await append(engine, 10)
    path = await write_checkpoint(engine, signer, sink_dir)
    body = json.loads(path.read_text(encoding="utf-8"))
    body["checkpoint"][field] = value
    path.write_text(json.dumps(body), encoding="utf-8")

    verdict = await verify(engine, sink_dir, signer)

    assert verdict.problems == (f"{path}: its signature does not verify: the file was edited",)


async def test_verify_checkpoint_of_another_key_fails_naming_file(
    engine: AsyncEngine, signer: Signer, sink_dir: Path
) -> None:
    await append(engine, 3)
    other = Signer(Ed25519PrivateKey.generate())
    path = await write_checkpoint(engine, other, sink_dir)

    verdict = await verify(engine, sink_dir, signer)

    assert verdict.problems == (f"{path}: signed by key {other.key_id}, not by the key given",)


async def test_verify_file_not_a_checkpoint_fails_naming_file(
    engine: AsyncEngine, signer: Signer, sink_dir: Path
) -> None:
    await append(engine, 3)
    await write_checkpoint(engine, signer, sink_dir)
    stray = sink_dir / "notes.json"
    stray.write_text('{"hello": "world"}', encoding="utf-8")

    verdict = await verify(engine, sink_dir, signer)

    assert verdict.checked == 2
    assert verdict.problems == (
        f"{stray}: not a signed checkpoint (no checkpoint and signature in its JSON)",
    )


async def test_verify_empty_directory_ok_with_nothing_anchored(
    engine: AsyncEngine, signer: Signer, sink_dir: Path
) -> None:
    await append(engine, 3)

    verdict = await verify(engine, sink_dir, signer)

    assert (verdict.ok, verdict.checked, verdict.newest, verdict.head_seq) == (True, 0, None, 3)


# The checkpointer the app's housekeeping drives.


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_checkpoint_if_due_waits_for_every_seconds_and_a_moved_head(
    engine: AsyncEngine, signer: Signer, sink_dir: Path
) -> None:
    ticks = Ticks()
    checkpointer = Checkpointer(
        signer=signer, sink=DirectorySink(sink_dir), every=60, monotonic=ticks
    )
    assert await checkpointer.checkpoint_if_due(engine) is None  # an empty trail
    await append(engine, 2)

    first = await checkpointer.checkpoint_if_due(engine)
    await append(engine, 1)
    ticks.now += 59
    too_soon = await checkpointer.checkpoint_if_due(engine)
    ticks.now += 1
    second = await checkpointer.checkpoint_if_due(engine)
    ticks.now += 600
    unmoved = await checkpointer.checkpoint_if_due(engine)

    assert first is not None
    assert second is not None
    assert (first.checkpoint.seq, too_soon, second.checkpoint.seq, unmoved) == (2, None, 3, None)
    assert len(listing(sink_dir)) == 2
    assert (await verify(engine, sink_dir, signer)).ok


class BrokenSink:
    """A sink whose disk is full."""

    def __init__(self) -> None:
        self.attempts = 0

    async def write(self, checkpoint: checkpoints.Checkpoint, text: str) -> str:
        self.attempts += 1
        raise OSError(28, "No space left on device")


async def test_checkpoint_if_due_failing_sink_retried_after_every_seconds(
    engine: AsyncEngine, signer: Signer
) -> None:
    ticks, sink = Ticks(), BrokenSink()
    checkpointer = Checkpointer(signer=signer, sink=sink, every=60, monotonic=ticks)
    await append(engine, 2)

    with pytest.raises(OSError, match="No space left"):
        await checkpointer.checkpoint_if_due(engine)
    ticks.now += 2  # the housekeeping loop's next turn
    assert await checkpointer.checkpoint_if_due(engine) is None
    ticks.now += 58
    with pytest.raises(OSError, match="No space left"):
        await checkpointer.checkpoint_if_due(engine)

    assert sink.attempts == 2


# Start-up: the settings, and refusing what cannot work.


def pem_of_ec_key() -> bytes:
    """A valid PEM private key that is not Ed25519."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A private key file as `gatehouse audit keygen` writes it (its .pub beside it)."""
    path = tmp_path / "keys" / "checkpoint.pem"
    path.parent.mkdir()
    checkpoints.write_new_key(path)
    return path


def test_settings_environment_checkpoint_variables_read_key_hidden(
    monkeypatch: pytest.MonkeyPatch, sink_dir: Path
) -> None:
    monkeypatch.setenv("GATEHOUSE_CHECKPOINT_DIR", str(sink_dir))
    monkeypatch.setenv("GATEHOUSE_CHECKPOINT_KEY", "-----BEGIN PRIVATE KEY-----")
    monkeypatch.setenv("GATEHOUSE_CHECKPOINT_EVERY", "15")
    monkeypatch.setenv("GATEHOUSE_CHECKPOINT_KEY_FILE", "")

    settings = Settings()

    assert (settings.checkpoint_dir, settings.checkpoint_every) == (sink_dir, 15.0)
    assert settings.checkpoint_key_file is None
    assert settings.checkpoint_key is not None
    assert "BEGIN" not in repr(settings)


def test_checkpointer_from_settings_nothing_set_is_none() -> None:
    assert checkpointer_from_settings(Settings()) is None


def test_checkpointer_from_settings_key_file_and_dir_signs_with_that_key(
    key_file: Path, sink_dir: Path
) -> None:
    settings = Settings(checkpoint_key_file=key_file, checkpoint_dir=sink_dir, checkpoint_every=5)

    checkpointer = checkpointer_from_settings(settings)

    assert checkpointer is not None
    assert checkpointer.every == 5
    assert checkpointer.signer.public_pem() == key_file.with_suffix(".pem.pub").read_bytes()
    assert "PRIVATE" not in repr(checkpointer.signer)


def test_checkpointer_from_settings_key_text_with_escaped_line_breaks_accepted(
    key_file: Path, sink_dir: Path
) -> None:
    escaped = key_file.read_text(encoding="ascii").replace("\n", "\\n")
    settings = Settings(checkpoint_key=SecretStr(escaped), checkpoint_dir=sink_dir)

    checkpointer = checkpointer_from_settings(settings)

    assert checkpointer is not None
    assert checkpointer.signer.public_pem() == key_file.with_suffix(".pem.pub").read_bytes()


def test_checkpointer_from_settings_dir_without_key_refused_naming_variables(
    sink_dir: Path,
) -> None:
    with pytest.raises(
        ConfigError,
        match="GATEHOUSE_CHECKPOINT_DIR or GATEHOUSE_CHECKPOINT_URL is set but no signing key",
    ):
        checkpointer_from_settings(Settings(checkpoint_dir=sink_dir))


def test_checkpointer_from_settings_missing_key_file_refused_naming_variable(
    tmp_path: Path, sink_dir: Path
) -> None:
    missing = tmp_path / "nowhere.pem"
    settings = Settings(checkpoint_key_file=missing, checkpoint_dir=sink_dir)

    with pytest.raises(ConfigError) as raised:
        checkpointer_from_settings(settings)

    assert raised.value.message.startswith(f"GATEHOUSE_CHECKPOINT_KEY_FILE ({missing}): cannot")


@pytest.mark.parametrize(
    ("pem", "problem"),
    [
        pytest.param(b"not a key at all", "not a PEM private key", id="garbage"),
        pytest.param(pem_of_ec_key(), "not an Ed25519 key", id="ec-p256"),
    ],
)
@pytest.mark.parametrize("via", ["file", "environment"])
def test_checkpointer_from_settings_invalid_key_refused_naming_variable(
    tmp_path: Path, sink_dir: Path, pem: bytes, problem: str, via: str
) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(pem)
    if via == "file":
        settings = Settings(checkpoint_key_file=path, checkpoint_dir=sink_dir)
        variable = f"GATEHOUSE_CHECKPOINT_KEY_FILE ({path})"
    else:
        settings = Settings(checkpoint_key=SecretStr(pem.decode()), checkpoint_dir=sink_dir)
        variable = "GATEHOUSE_CHECKPOINT_KEY"

    with pytest.raises(ConfigError) as raised:
        checkpointer_from_settings(settings)

    assert raised.value.message.startswith(f"{variable}: {problem}")
    assert "BEGIN" not in raised.value.message


def test_checkpointer_from_settings_key_without_dir_refused(key_file: Path) -> None:
    with pytest.raises(
        ConfigError, match="neither GATEHOUSE_CHECKPOINT_DIR nor GATEHOUSE_CHECKPOINT_URL is"
    ):
        checkpointer_from_settings(Settings(checkpoint_key_file=key_file))


def test_checkpointer_from_settings_dir_absent_refused_naming_variable(
    key_file: Path, tmp_path: Path
) -> None:
    absent = tmp_path / "not-mounted"
    settings = Settings(checkpoint_key_file=key_file, checkpoint_dir=absent)

    with pytest.raises(ConfigError, match=f"GATEHOUSE_CHECKPOINT_DIR: no directory at {absent}"):
        checkpointer_from_settings(settings)


# The CLI, through gateway.cli.main with the environment an operator would set.


@pytest.fixture
def gateway_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite gateway database holding ten events, as $GATEHOUSE_DATABASE_URL."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"

    async def build() -> None:
        built = create_engine(url)
        await create_schema(built)
        await append(built, 10)
        await built.dispose()

    asyncio.run(build())
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", url)
    return url


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, key_file: Path, sink_dir: Path) -> Path:
    """Checkpoints configured in the environment; the checkpoint directory."""
    monkeypatch.setenv("GATEHOUSE_CHECKPOINT_KEY_FILE", str(key_file))
    monkeypatch.setenv("GATEHOUSE_CHECKPOINT_DIR", str(sink_dir))
    return sink_dir


def on_database(url: str, work: str, **values: object) -> None:
    """Tamper with the SQLite database at `url`: remove the newest or recompute."""

    async def run() -> None:
        built = create_engine(url)
        try:
            if work == "remove":
                await remove_newest(built, keep=7)
            else:
                await recompute_after_edit(built, 4, **values)
        finally:
            await built.dispose()

    asyncio.run(run())


def test_cli_keygen_writes_private_key_mode_0600_and_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "checkpoint.pem"

    status = main(["audit", "keygen", str(path)])

    assert status == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    assert Signer(key).public_pem() == (tmp_path / "checkpoint.pem.pub").read_bytes()
    assert f"key id {Signer(key).key_id}" in capsys.readouterr().out


def test_cli_keygen_existing_file_exit_2_left_alone(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = key_file.read_bytes()

    status = main(["audit", "keygen", str(key_file)])

    assert status == 2
    assert key_file.read_bytes() == before
    assert (
        capsys.readouterr().err == f"gatehouse: {key_file} exists; keygen never overwrites a key\n"
    )


def test_cli_checkpoint_not_configured_exit_2(
    gateway_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["audit", "checkpoint"])

    assert status == 2
    assert capsys.readouterr().err.startswith("gatehouse: checkpoints are not configured: set ")


def test_cli_checkpoint_dir_with_invalid_key_exit_2_names_variable(
    gateway_db: str, configured: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    bad = tmp_path / "bad.pem"
    bad.write_bytes(pem_of_ec_key())
    monkeypatch.setenv("GATEHOUSE_CHECKPOINT_KEY_FILE", str(bad))

    status = main(["audit", "checkpoint"])

    assert status == 2
    assert f"GATEHOUSE_CHECKPOINT_KEY_FILE ({bad}): not an Ed25519 key" in capsys.readouterr().err
    assert list(configured.iterdir()) == []


def test_cli_checkpoint_then_verify_checkpoints_exit_0(
    gateway_db: str, configured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = main(["audit", "checkpoint"])
    out = capsys.readouterr().out
    status = main(["audit", "verify", "--checkpoints", str(configured)])

    assert written == 0
    assert out.startswith("checkpoint of seq=10 ")
    assert out.strip().endswith(str(next(configured.iterdir())))
    assert status == 0
    assert capsys.readouterr().out.splitlines() == [
        "audit trail intact: 10 events",
        "audit checkpoints match: 1 checked; the newest is at seq=10, the head at seq=10",
    ]


def test_cli_verify_events_removed_exit_1_names_file_and_seq(
    gateway_db: str, configured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["audit", "checkpoint"])
    path = next(configured.iterdir())
    on_database(gateway_db, "remove")
    capsys.readouterr()

    status = main(["audit", "verify", "--checkpoints", str(configured)])

    assert status == 1
    captured = capsys.readouterr()
    assert captured.out == "audit trail intact: 7 events\n"
    assert captured.err == (
        f"audit checkpoints FAILED: checkpoint {path} (seq=10): events removed from the end: "
        "the trail's head is at seq=7\n"
    )


def test_cli_verify_chain_recomputed_exit_1_names_file_and_seq(
    gateway_db: str, configured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["audit", "checkpoint"])
    path = next(configured.iterdir())
    on_database(gateway_db, "recompute", outcome="DENIED")
    capsys.readouterr()

    status = main(["audit", "verify", "--checkpoints", str(configured)])

    assert status == 1
    assert capsys.readouterr().err.startswith(
        f"audit checkpoints FAILED: checkpoint {path} (seq=10): the chain was recomputed: "
    )


def test_cli_verify_edited_file_exit_1_names_file(
    gateway_db: str, configured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["audit", "checkpoint"])
    path = next(configured.iterdir())
    path.write_text(path.read_text(encoding="utf-8").replace('"seq":10', '"seq":7'), "utf-8")
    capsys.readouterr()

    status = main(["audit", "verify", "--checkpoints", str(configured)])

    assert status == 1
    assert capsys.readouterr().err == (
        f"audit checkpoints FAILED: {path}: its signature does not verify: the file was edited\n"
    )


def test_cli_verify_with_public_key_file_only_exit_0(
    gateway_db: str, configured: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    main(["audit", "checkpoint"])
    monkeypatch.delenv("GATEHOUSE_CHECKPOINT_KEY_FILE")  # a reviewer has the public key only
    public = f"{key_file}.pub"

    status = main(["audit", "verify", "--checkpoints", str(configured), "--public-key", public])

    assert status == 0
    assert "audit checkpoints match: 1 checked" in capsys.readouterr().out


def test_cli_verify_checkpoints_without_any_key_exit_2(
    gateway_db: str, sink_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["audit", "verify", "--checkpoints", str(sink_dir)])

    assert status == 2
    assert capsys.readouterr().err.startswith(
        "gatehouse: --checkpoints needs the key that signed them: --public-key FILE"
    )


def test_cli_verify_private_key_as_public_key_exit_2(
    gateway_db: str, sink_dir: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        ["audit", "verify", "--checkpoints", str(sink_dir), "--public-key", str(key_file)]
    )

    assert status == 2
    assert capsys.readouterr().err == (
        f"gatehouse: --public-key {key_file}: not a PEM public key\n"
    )


# An HTTP receiver: a real server on loopback that keeps what it is sent as files.


class Receiver(ThreadingHTTPServer):
    """Keeps each checkpoint POSTed with the right token as a file named as the header says;
    answers 503 to the first `failures` requests."""

    def __init__(self, directory: Path, token: str, failures: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.directory, self.token, self.failures = directory, token, failures
        self.requests: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/checkpoints"


class _Receive(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(dict(self.headers))
        if self.server.failures > 0:
            self.server.failures -= 1
            self.send_response(503)
        elif self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self.send_response(401)
        else:
            name = Path(self.headers[checkpoints.NAME_HEADER]).name
            (self.server.directory / name).write_bytes(body)
            self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: pytest shows what matters


@pytest.fixture
def receiver(sink_dir: Path) -> Iterator[Receiver]:
    """A checkpoint receiver on a free loopback port, keeping files in `sink_dir`."""
    server = Receiver(sink_dir, token="receiver-token-1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def http_checkpointer(key_file: Path, url: str, token: str) -> Checkpointer:
    settings = Settings(
        checkpoint_key_file=key_file, checkpoint_url=url, checkpoint_token=SecretStr(token)
    )
    checkpointer = checkpointer_from_settings(settings)
    assert checkpointer is not None
    return checkpointer


async def test_http_sink_receiver_keeps_checkpoint_that_verifies_then_catches_truncation(
    engine: AsyncEngine, key_file: Path, receiver: Receiver, sink_dir: Path
) -> None:
    await append(engine, 6)
    checkpointer = http_checkpointer(key_file, receiver.url, receiver.token)

    written = await checkpointer.checkpoint(engine)

    assert written.location == receiver.url
    (sent,) = receiver.requests
    assert sent["Content-Type"] == "application/json"
    assert listing(sink_dir) == [written.checkpoint.file_name()]
    assert (await verify(engine, sink_dir, checkpointer.signer)).ok
    await remove_newest(engine, keep=4)
    verdict = await verify(engine, sink_dir, checkpointer.signer)
    assert not verdict.ok
    assert written.checkpoint.file_name() in verdict.problems[0]


async def test_http_sink_retries_receiver_5xx_then_keeps_it(
    engine: AsyncEngine, key_file: Path, receiver: Receiver, sink_dir: Path
) -> None:
    await append(engine, 2)
    receiver.failures = 2
    checkpointer = http_checkpointer(key_file, receiver.url, receiver.token)

    await checkpointer.checkpoint(engine)

    assert len(receiver.requests) == 3
    assert len(listing(sink_dir)) == 1


async def test_http_sink_refused_token_raises_without_retrying(
    engine: AsyncEngine, key_file: Path, receiver: Receiver, sink_dir: Path
) -> None:
    await append(engine, 2)
    checkpointer = http_checkpointer(key_file, receiver.url, "not-the-token")

    with pytest.raises(httpx.HTTPStatusError, match="401"):
        await checkpointer.checkpoint(engine)

    assert len(receiver.requests) == 1
    assert listing(sink_dir) == []


async def test_http_sink_next_to_directory_both_keep_it(
    engine: AsyncEngine, key_file: Path, receiver: Receiver, sink_dir: Path, tmp_path: Path
) -> None:
    await append(engine, 3)
    local = tmp_path / "local"
    local.mkdir()
    settings = Settings(
        checkpoint_key_file=key_file,
        checkpoint_dir=local,
        checkpoint_url=receiver.url,
        checkpoint_token=SecretStr(receiver.token),
    )
    checkpointer = checkpointer_from_settings(settings)
    assert checkpointer is not None

    written = await checkpointer.checkpoint(engine)

    assert listing(local) == listing(sink_dir) == [written.checkpoint.file_name()]
    assert receiver.url in written.location


def test_checkpointer_from_settings_url_without_key_refused_naming_variables() -> None:
    with pytest.raises(ConfigError, match="GATEHOUSE_CHECKPOINT_URL is set but no signing key"):
        checkpointer_from_settings(Settings(checkpoint_url="http://127.0.0.1:9/checkpoints"))


def test_settings_checkpoint_url_not_http_refused() -> None:
    with pytest.raises(ValueError, match="checkpoint_url"):
        Settings(checkpoint_url="ftp://example.org/checkpoints")
