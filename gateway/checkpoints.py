"""Signed checkpoints of the audit trail's head, kept where the gateway's database is not.

The hash chain (audit.py) shows an event edited in place. It cannot show the newest events
cut off, nor a chain recomputed from an edited event onwards: whoever can write the
database can do both and leave a chain that verifies. A checkpoint is the head as it was,
signed with a key the database never holds, written where the database's writers cannot
reach. Later, the database must still hold that event with that hash.

    audit_head: seq=N, hash=H(N)              Ed25519 private key, outside the database
          | read                              (GATEHOUSE_CHECKPOINT_KEY_FILE or _KEY)
          v                                             |
    {format, seq=N, hash=H(N), at, key_id} --canonical JSON--> sign
                                                                |
    {"checkpoint": {...}, "signature": base64}  <---------------+
          | temp file + rename (a reader never sees half a file)
          v
    GATEHOUSE_CHECKPOINT_DIR/<seq, 16 digits>-<at, UTC to the microsecond>.json
    and/or POST GATEHOUSE_CHECKPOINT_URL    (Gatehouse-Checkpoint-Name: that file name;
                                            Authorization: Bearer GATEHOUSE_CHECKPOINT_TOKEN)

    verify(directory, public keys, database), each file in name order:
        the signature verifies over canonical JSON    else: edited by hand, or another key
        the head is at or past the checkpoint's seq   else: events removed from the end
        the event at that seq has exactly that hash   else: the chain was recomputed

`key_id` is the first 16 hex digits of the sha256 of the raw public key: it says which
key to verify with; the signature, not the id, is the evidence. The app's housekeeping
calls `Checkpointer.checkpoint_if_due` every 2 s; it writes a checkpoint when
GATEHOUSE_CHECKPOINT_EVERY seconds have passed since the last one and the head has moved.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from gateway.audit import canonical_json
from gateway.database import GENESIS_HASH, audit_events, audit_head
from gateway.errors import ConfigError
from gateway.settings import Settings

log = logging.getLogger("gatehouse.checkpoints")

# Signed with the rest, so a signature over a checkpoint can never pass for something else.
FORMAT = "gatehouse.audit-checkpoint/1"
KEY_FILE_VARIABLE = "GATEHOUSE_CHECKPOINT_KEY_FILE"
KEY_VARIABLE = "GATEHOUSE_CHECKPOINT_KEY"
DIR_VARIABLE = "GATEHOUSE_CHECKPOINT_DIR"
URL_VARIABLE = "GATEHOUSE_CHECKPOINT_URL"
NAME_HEADER = "Gatehouse-Checkpoint-Name"  # what a receiver names the file verify reads
_HEAD = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
_LOOKUP_BATCH = 500  # checkpoints' seqs looked up per query by verify


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The chain's head at a moment: the seq and hash of its newest event, and the key."""

    seq: int
    hash: str
    at: datetime
    key_id: str

    def document(self) -> dict[str, Any]:
        """What is signed, as JSON values."""
        at = self.at.astimezone(UTC).isoformat(timespec="microseconds")
        return {
            "format": FORMAT,
            "seq": self.seq,
            "hash": self.hash,
            "at": at,
            "key_id": self.key_id,
        }

    def file_name(self) -> str:
        """A name that sorts by seq, then by time."""
        return f"{self.seq:016d}-{self.at.astimezone(UTC):%Y%m%dT%H%M%S%fZ}.json"

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Checkpoint:
        """The checkpoint a signed document holds; ValueError if it holds none."""
        seq, hash_, at, key = (document.get(k) for k in ("seq", "hash", "at", "key_id"))
        if document.get("format") != FORMAT:
            raise ValueError(f"its format is not {FORMAT}")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError("its seq is not a whole number")
        if not isinstance(hash_, str) or not isinstance(at, str) or not isinstance(key, str):
            raise ValueError("its hash, time or key id is not text")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("its time has no timezone")
        return cls(seq=seq, hash=hash_, at=when, key_id=key)


def key_id(public_key: Ed25519PublicKey) -> str:
    """The fingerprint that names a key in the checkpoints it signs."""
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()[:16]


class Signer:
    """Signs checkpoints with an Ed25519 private key; never shows the key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"

    def signed(self, checkpoint: Checkpoint) -> str:
        """The checkpoint file's text: the document and its signature, canonical JSON."""
        document = checkpoint.document()
        signature = self._private_key.sign(canonical_json(document).encode("utf-8"))
        body = {"checkpoint": document, "signature": base64.b64encode(signature).decode("ascii")}
        return canonical_json(body) + "\n"

    def public_pem(self) -> bytes:
        """The public key as PEM, for whoever verifies."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class Verifier:
    """Checks checkpoint signatures against the public keys it was given."""

    def __init__(self, public_keys: Iterable[Ed25519PublicKey]) -> None:
        self._keys = {key_id(key): key for key in public_keys}

    def problem(self, document: Mapping[str, Any], signature: bytes) -> str | None:
        """None when `document` was signed by one of the keys; else what is wrong."""
        key = self._keys.get(str(document.get("key_id")))
        if key is None:
            return f"signed by key {document.get('key_id')}, not by the key given"
        try:
            key.verify(signature, canonical_json(dict(document)).encode("utf-8"))
        except (InvalidSignature, ValueError):  # ValueError: a NaN, which no signer wrote
            return "its signature does not verify: the file was edited"
        return None


# Keys: the private key comes from a file or the environment, never from the database.


def load_private_key(pem: bytes, *, name: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM; ConfigError naming `name` if it is not one."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ConfigError(f"{name}: the key is encrypted; give it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        # No detail: cryptography's message could quote what it failed to parse.
        raise ConfigError(f"{name}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{name}: not an Ed25519 key (gatehouse audit keygen makes one)")
    return key


def load_public_key(pem: bytes, *, name: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; ConfigError naming `name` if it is not one."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{name}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{name}: not an Ed25519 public key")
    return key


def write_new_key(path: Path) -> Signer:
    """Make a key: the private PEM at `path` (mode 0600), the public at `path`.pub.

    FileExistsError if either exists: a key that signed checkpoints is never overwritten.
    """
    public = path.with_name(path.name + ".pub")
    for target in (path, public):  # checked before either is written; O_EXCL backs it up
        if target.exists():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    signer = Signer(key)
    _write_exclusive(path, private_pem, 0o600)
    _write_exclusive(public, signer.public_pem(), 0o644)
    return signer


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL with the mode at creation: the private key is never readable by others.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def signer_from_settings(settings: Settings) -> Signer | None:
    """The configured signing key; None if none is; ConfigError naming the variable if bad."""
    file, text = settings.checkpoint_key_file, settings.checkpoint_key
    if file is not None and text is not None:
        raise ConfigError(f"set {KEY_FILE_VARIABLE} or {KEY_VARIABLE}, not both")
    if file is not None:
        name = f"{KEY_FILE_VARIABLE} ({file})"
        try:
            pem = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read the key: {exc.strerror}") from None
        return Signer(load_private_key(pem, name=name))
    if text is not None:
        # An environment often cannot hold line breaks: accept them written as \n.
        pem_text = text.get_secret_value().replace("\\n", "\n")
        return Signer(load_private_key(pem_text.encode("utf-8"), name=KEY_VARIABLE))
    return None


# Writing: read the head, sign it, hand it to a sink.


@dataclass(frozen=True, slots=True)
class Written:
    """A checkpoint and where it went."""

    checkpoint: Checkpoint
    location: str


class Sink(Protocol):
    """Somewhere outside the gateway's database that keeps signed checkpoints."""

    async def write(self, checkpoint: Checkpoint, text: str) -> str:
        """Keep one signed checkpoint (`text`); where it went."""
        ...


@dataclass(frozen=True)
class DirectorySink:
    """One file per checkpoint in a directory, each written whole or not at all."""

    directory: Path

    async def write(self, checkpoint: Checkpoint, text: str) -> str:
        """Write the checkpoint's file; its path."""
        return str(await asyncio.to_thread(self._write, checkpoint.file_name(), text))

    def _write(self, name: str, text: str) -> Path:
        final = self.directory / name
        # Same directory, so the rename is atomic; the name does not end in .json, so a
        # verify running meanwhile never reads it.
        temporary = self.directory / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            with temporary.open("x", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            temporary.replace(final)
        finally:
            temporary.unlink(missing_ok=True)
        _sync_directory(self.directory)  # the rename itself survives a crash
        return final


@dataclass(frozen=True)
class HttpSink:
    """A receiver over HTTP (a log service, another team's store): each checkpoint POSTed
    as its signed JSON document, with the file name `verify` expects; any 2xx keeps it."""

    url: str
    token: str | None = None
    timeout: float = 10.0
    attempts: int = 3
    transport: httpx.AsyncBaseTransport | None = None

    async def write(self, checkpoint: Checkpoint, text: str) -> str:
        """POST the checkpoint, retrying transport failures and 5xx; the URL it went to."""
        headers = {"Content-Type": "application/json", NAME_HEADER: checkpoint.file_name()}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as client:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts),
                wait=wait_exponential(multiplier=0.2, max=2),
                retry=retry_if_exception_type((httpx.TransportError, _ReceiverFailed)),
                reraise=True,
            ):
                with attempt:
                    response = await client.post(self.url, content=text, headers=headers)
                    if response.status_code >= 500:
                        raise _ReceiverFailed(response.status_code)
                    response.raise_for_status()  # a 4xx is not worth repeating
        return self.url


class _ReceiverFailed(Exception):
    """The receiver answered 5xx: worth another attempt."""


@dataclass(frozen=True)
class Sinks:
    """Every configured sink; a checkpoint counts as written once all of them kept it."""

    sinks: tuple[Sink, ...]

    async def write(self, checkpoint: Checkpoint, text: str) -> str:
        """Write to each sink in turn; where it went, joined."""
        return ", ".join([await sink.write(checkpoint, text) for sink in self.sinks])


def _sync_directory(directory: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # Windows cannot open a directory; it needs no sync
        return
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


async def read_head(engine: AsyncEngine) -> tuple[int, str]:
    """The chain's head: the seq and hash of its newest event (0 and genesis when empty)."""
    async with engine.connect() as connection:
        seq, hash_ = (await connection.execute(_HEAD)).one()
    return int(seq), str(hash_)


def _now() -> datetime:
    return datetime.now(UTC)


async def checkpoint(
    engine: AsyncEngine,
    *,
    signer: Signer,
    sink: Sink,
    clock: Callable[[], datetime] = _now,
) -> Written:
    """Sign the current head of the audit trail in `engine`'s database; write it to `sink`."""
    seq, hash_ = await read_head(engine)
    made = Checkpoint(seq=seq, hash=hash_, at=clock(), key_id=signer.key_id)
    location = await sink.write(made, signer.signed(made))
    return Written(made, location)


class Checkpointer:
    """Checkpoints the head now and then: the app's housekeeping asks if one is due."""

    def __init__(
        self,
        *,
        signer: Signer,
        sink: Sink,
        every: float,
        clock: Callable[[], datetime] = _now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.signer, self.sink, self.every = signer, sink, every
        self._clock, self._monotonic = clock, monotonic
        self._last_seq = 0  # an empty trail has nothing to anchor
        self._last_at: float | None = None

    async def checkpoint(self, engine: AsyncEngine) -> Written:
        """Write a checkpoint of the head now."""
        written = await checkpoint(engine, signer=self.signer, sink=self.sink, clock=self._clock)
        self._last_seq, self._last_at = written.checkpoint.seq, self._monotonic()
        log.info("audit checkpoint seq=%d written to %s", written.checkpoint.seq, written.location)
        return written

    async def checkpoint_if_due(self, engine: AsyncEngine) -> Written | None:
        """A checkpoint if `every` seconds have passed since the last and the head moved."""
        if self._last_at is not None and self._monotonic() - self._last_at < self.every:
            return None
        seq, _ = await read_head(engine)
        if seq == self._last_seq:
            return None  # nothing new; the next move is checkpointed at the next call
        self._last_at = self._monotonic()  # a failing sink is retried after `every`, not in 2 s
        return await self.checkpoint(engine)


def checkpointer_from_settings(settings: Settings) -> Checkpointer | None:
    """The configured checkpointer, None when checkpoints are off; ConfigError if unusable.

    Called at start-up: a directory without a usable key, or a key without a directory,
    stops the gateway rather than leave the trail's head unanchored without a word.
    """
    signer = signer_from_settings(settings)
    sinks = _sinks(settings)
    if not sinks:
        if signer is not None:
            raise ConfigError(
                f"a checkpoint key is set but neither {DIR_VARIABLE} nor {URL_VARIABLE} is: "
                "set where checkpoints go"
            )
        return None
    if signer is None:
        raise ConfigError(
            f"{DIR_VARIABLE} or {URL_VARIABLE} is set but no signing key is: set "
            f"{KEY_FILE_VARIABLE} to an Ed25519 private key's PEM file (gatehouse audit keygen "
            f"makes one) or {KEY_VARIABLE}"
        )
    sink = sinks[0] if len(sinks) == 1 else Sinks(tuple(sinks))
    return Checkpointer(signer=signer, sink=sink, every=settings.checkpoint_every)


def _sinks(settings: Settings) -> list[Sink]:
    sinks: list[Sink] = []
    if (directory := settings.checkpoint_dir) is not None:
        if not directory.is_dir():
            raise ConfigError(f"{DIR_VARIABLE}: no directory at {directory}")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigError(f"{DIR_VARIABLE}: cannot write to {directory}")
        sinks.append(DirectorySink(directory))
    if settings.checkpoint_url is not None:
        token = settings.checkpoint_token
        secret = None if token is None else token.get_secret_value()
        sinks.append(HttpSink(str(settings.checkpoint_url), secret))
    return sinks


# Verifying: every file's signature, then the database against what was signed.


@dataclass(frozen=True)
class CheckpointVerification:
    """What `verify` found: the files checked, and each problem, in file-name order."""

    checked: int
    problems: tuple[str, ...]
    newest: Checkpoint | None  # the matching checkpoint with the highest seq
    head_seq: int

    @property
    def ok(self) -> bool:
        """True when every checkpoint verifies and the database still matches it."""
        return not self.problems


@dataclass(frozen=True, slots=True)
class _Found:
    path: Path
    checkpoint: Checkpoint


async def verify(
    directory: Path, *, engine: AsyncEngine, verifier: Verifier
) -> CheckpointVerification:
    """Check every checkpoint file in `directory`: its signature, then the database."""
    opened = await asyncio.to_thread(_open_all, directory, verifier)
    # The head only moves on: read after the files, it is at or past every one of them.
    head_seq, _ = await read_head(engine)
    found = [item for item in opened if isinstance(item, _Found)]
    hashes = await _hashes(engine, sorted({item.checkpoint.seq for item in found}))
    problems: list[str] = []
    newest: Checkpoint | None = None
    for item in opened:
        problem = item if isinstance(item, str) else _mismatch(item, head_seq, hashes)
        if problem is not None:
            problems.append(problem)
        elif isinstance(item, _Found) and (newest is None or item.checkpoint.seq > newest.seq):
            newest = item.checkpoint
    return CheckpointVerification(len(opened), tuple(problems), newest, head_seq)


def _open_all(directory: Path, verifier: Verifier) -> list[_Found | str]:
    """Each checkpoint file in name order (so by seq): its checkpoint, or what is wrong."""
    return [_open(path, verifier) for path in sorted(directory.glob("*.json"))]


def _open(path: Path, verifier: Verifier) -> _Found | str:
    """The checkpoint a file holds, if its signature verifies; else what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"{path}: cannot read it: {exc}"
    try:
        body = json.loads(text)
        document, signature = body["checkpoint"], base64.b64decode(body["signature"], validate=True)
        if not isinstance(document, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError, binascii.Error):
        return f"{path}: not a signed checkpoint (no checkpoint and signature in its JSON)"
    if (problem := verifier.problem(document, signature)) is not None:
        return f"{path}: {problem}"
    try:
        return _Found(path, Checkpoint.from_document(document))
    except ValueError as exc:
        return f"{path}: not a checkpoint: {exc}"


async def _hashes(engine: AsyncEngine, seqs: list[int]) -> dict[int, str]:
    """The stored hash of each event at `seqs` that exists; seq 0 is the genesis."""
    found = {0: GENESIS_HASH}
    async with engine.connect() as connection:
        for start in range(0, len(seqs), _LOOKUP_BATCH):
            batch = seqs[start : start + _LOOKUP_BATCH]
            statement = select(audit_events.c.seq, audit_events.c.hash).where(
                audit_events.c.seq.in_(batch)
            )
            found.update(
                (int(seq), str(hash_)) for seq, hash_ in await connection.execute(statement)
            )
    return found


def _mismatch(found: _Found, head_seq: int, hashes: Mapping[int, str]) -> str | None:
    """What the database no longer matches of a checkpoint, or None."""
    seq, signed = found.checkpoint.seq, found.checkpoint.hash
    name = f"checkpoint {found.path} (seq={seq})"
    if head_seq < seq:
        return f"{name}: events removed from the end: the trail's head is at seq={head_seq}"
    stored = hashes.get(seq)
    if stored is None:
        return f"{name}: the database holds no event at seq={seq}"
    if stored != signed:
        return (
            f"{name}: the chain was recomputed: the event at seq={seq} has hash "
            f"{stored[:16]}..., the checkpoint signed {signed[:16]}..."
        )
    return None
