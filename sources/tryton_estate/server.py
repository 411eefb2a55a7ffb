"""Run trytond as a child process over a seeded database, and make those databases once.

    TrytonServer.start(database)   trytond -c <generated config> -d <db> on a free loopback
                                   port; ready once it answers common.server.version
    seed(database, password=...)   python -m sources.tryton_estate.seed in a child process
    seeded_sqlite(directory, ...)  a seeded SQLite file, made once per seed fingerprint
    seeded_postgres_template(...)  a seeded PostgreSQL template, made once per fingerprint,
    copy_postgres_template(...)    copied per test with CREATE DATABASE ... TEMPLATE

A fingerprint hashes the seed script, the installed Tryton packages and the year (the
seeded fiscal year is the current one), so a changed seed gives a new database. Nothing
here imports trytond: it runs in the child processes only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

import httpx

# The directory that holds the `sources` package, so the seed child imports this very code.
_REPO_ROOT = Path(__file__).resolve().parents[2]
_SEED_SCRIPT = Path(__file__).with_name("seed.py")
_STOP_GRACE_SECONDS = 5.0
_START_ATTEMPTS = 3  # a free port can be taken between our probe and trytond's bind
_TEMPLATE_PREFIX = "gatehouse_tryton_"
_PASSWORD_ENV = "GATEHOUSE_TRYTON_SEED_PASSWORD"  # noqa: S105 - a variable's name

Backend = Literal["sqlite", "postgresql"]


@dataclass(frozen=True, slots=True)
class TrytonDatabase:
    """One Tryton database: its name, backend and where it lives.

    `location` is a directory for SQLite (the file is <location>/<name>.sqlite) and a
    server URI for PostgreSQL (postgresql://user@host:port/).
    """

    name: str
    backend: Backend
    location: str

    @property
    def server_uri(self) -> str:
        """The [database] uri of trytond's configuration."""
        return "sqlite://" if self.backend == "sqlite" else self.location

    @property
    def uri(self) -> str:
        """A URI naming the database itself (as proteus takes it)."""
        return f"{self.server_uri.rstrip('/')}/{self.name}"


def trytond_config(
    database: TrytonDatabase, *, listen: str | None = None, session_max_age: int | None = None
) -> str:
    """The text of a trytond configuration file for `database`."""
    lines = ["[database]", f"uri = {database.server_uri}"]
    if database.backend == "sqlite":
        lines.append(f"path = {database.location}")
    lines += ["list = False", "", "[web]", f"listen = {listen or '127.0.0.1:0'}"]
    if session_max_age is not None:
        lines += ["", "[session]", f"max_age = {session_max_age}"]
    return "\n".join(lines) + "\n"


class TrytonServer:
    """trytond serving one database in a child process; build it with `start`."""

    def __init__(
        self, database: TrytonDatabase, *, host: str, timeout: float, session_max_age: int | None
    ) -> None:
        self.database = database
        self._host = host
        self._timeout = timeout
        self._session_max_age = session_max_age
        self._port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._reaper: weakref.finalize[[subprocess.Popen[bytes], IO[bytes], str], Any] | None = None

    @classmethod
    def start(
        cls,
        database: TrytonDatabase,
        *,
        timeout: float = 30,
        host: str = "127.0.0.1",
        session_max_age: int | None = None,
    ) -> TrytonServer:
        """Start trytond over `database` on a free port and wait until it answers."""
        server = cls(database, host=host, timeout=timeout, session_max_age=session_max_age)
        for attempt in range(_START_ATTEMPTS):
            try:
                server._launch(_free_port(host))
            except _PortTaken:
                if attempt + 1 == _START_ATTEMPTS:
                    raise
            else:
                break
        return server

    @property
    def url(self) -> str:
        """The server's root URL, e.g. http://127.0.0.1:8765 (RPC is at {url}/{db}/rpc/)."""
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        """The TCP port trytond listens on."""
        return self._port

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Ask trytond to shut down; kill it if it has not within five seconds."""
        if self._process is None:
            return
        self._process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=_STOP_GRACE_SECONDS)
        self._reap()

    def restart(self) -> None:
        """Start trytond again on the same port, after `stop` or `kill` (an outage over)."""
        self._reap()
        self._launch(self._port)

    def kill(self) -> None:
        """Kill trytond at once, as a crash would."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(self, port: int) -> None:
        scratch = tempfile.mkdtemp(prefix="trytond-")
        config = Path(scratch) / "trytond.conf"
        listen = f"{self._host}:{port}"
        config.write_text(trytond_config(self.database, listen=listen, **self._session()))
        # stderr goes to a file nobody reads while trytond runs (a full pipe would block it);
        # it outlives this call, so no `with`: _reap_child closes it.
        stderr = tempfile.TemporaryFile()  # noqa: SIM115
        command = [_tool("trytond"), "-c", str(config), "-d", self.database.name]
        # Our own venv's trytond with typed arguments and no shell.
        process = subprocess.Popen(  # noqa: S603
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=_environment()
        )
        self._process, self._port = process, port
        self._reaper = weakref.finalize(self, _reap_child, process, stderr, scratch)
        if not self._wait_ready(process):
            output = self._reap()
            if "Address already in use" in output:
                raise _PortTaken(output)
            raise RuntimeError(
                f"trytond did not answer on {self.url} within {self._timeout} s "
                f"(exit code {process.returncode}); stderr:\n{output[-4000:]}"
            )

    def _session(self) -> dict[str, int]:
        return {} if self._session_max_age is None else {"session_max_age": self._session_max_age}

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + self._timeout
        body = {"id": 0, "method": "common.server.version", "params": []}
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline and process.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    if client.post(f"{self.url}/rpc/", json=body).status_code == 200:
                        return True
                time.sleep(0.05)
        return False

    def _reap(self) -> str:
        """Make sure the child is gone and its files removed; return its stderr."""
        reaper, self._reaper, self._process = self._reaper, None, None
        output = reaper() if reaper is not None else None
        return output if isinstance(output, str) else ""


class _PortTaken(RuntimeError):
    """The port picked for trytond was taken before it could bind it."""


def seed(database: TrytonDatabase, *, password: str) -> dict[str, Any]:
    """Create and seed `database` in a child process; return what the seed made."""
    command = [sys.executable, "-P", "-m", "sources.tryton_estate.seed", "--db", database.name]
    command += ["--backend", database.backend, "--path", database.location]
    command += ["--password-env", _PASSWORD_ENV]
    env = _environment() | {_PASSWORD_ENV: password}
    # Our own interpreter and module with typed arguments, no shell.
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"seeding {database.name} failed:\n{done.stderr[-4000:]}")
    made: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return made


def seed_fingerprint() -> str:
    """A short hash of the seed script, the installed Tryton packages and the year."""
    digest = hashlib.sha256(_SEED_SCRIPT.read_bytes())
    versions = sorted(
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in metadata.distributions()
        if dist.metadata["Name"].lower().startswith(("trytond", "proteus"))
    )
    digest.update("\n".join([*versions, str(date.today().year)]).encode())  # noqa: DTZ011
    return digest.hexdigest()[:12]


def seeded_sqlite(directory: Path, *, password: str) -> TrytonDatabase:
    """The seeded SQLite database under `directory`, seeded now if not there yet.

    Seeding happens in a scratch directory under a lock and the file is moved in when
    complete, so a crashed or concurrent seed never leaves a half-made file in place.
    """
    directory.mkdir(parents=True, exist_ok=True)
    database = TrytonDatabase(f"{_TEMPLATE_PREFIX}{seed_fingerprint()}", "sqlite", str(directory))
    target = directory / f"{database.name}.sqlite"
    with _file_lock(directory / f"{database.name}.lock"):
        if not target.exists():
            with tempfile.TemporaryDirectory(dir=directory) as scratch:
                seed(TrytonDatabase(database.name, "sqlite", scratch), password=password)
                (Path(scratch) / target.name).replace(target)
    return database


def seeded_postgres_template(server_uri: str, *, password: str) -> str:
    """The name of the seeded template database on `server_uri`, seeded now if missing.

    Built under another name while holding an advisory lock, then renamed, so a crashed
    or concurrent seed never leaves a half-made template under the final name.
    """
    import psycopg

    name = f"{_TEMPLATE_PREFIX}{seed_fingerprint()}"
    with psycopg.connect(server_uri, dbname="postgres", autocommit=True) as connection:
        lock = int(hashlib.sha256(name.encode()).hexdigest()[:15], 16)
        connection.execute("SELECT pg_advisory_lock(%s)", (lock,))
        if not _pg_exists(connection, name):
            building = f"{name}_building"
            connection.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
            seed(TrytonDatabase(building, "postgresql", server_uri), password=password)
            connection.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
            connection.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true')
        connection.execute("SELECT pg_advisory_unlock(%s)", (lock,))
    return name


def copy_postgres_template(server_uri: str, template: str, name: str) -> TrytonDatabase:
    """CREATE DATABASE `name` from `template`; retried while another copy holds it."""
    import psycopg

    with psycopg.connect(server_uri, dbname="postgres", autocommit=True) as connection:
        for attempt in range(20):
            try:
                connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                break
            except psycopg.errors.ObjectInUse:
                # Two copies of one template at the same moment: PostgreSQL refuses one.
                if attempt == 19:
                    raise
                time.sleep(0.1 * (attempt + 1))
    return TrytonDatabase(name, "postgresql", server_uri)


def drop_postgres_database(server_uri: str, name: str) -> None:
    """DROP DATABASE `name`, disconnecting whoever is still connected."""
    import psycopg

    with psycopg.connect(server_uri, dbname="postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_exists(connection: Any, name: str) -> bool:
    found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    return found.fetchone() is not None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _tool(name: str) -> str:
    """A console script of this interpreter's environment (trytond, trytond-admin)."""
    return str(Path(sys.executable).with_name(name))


def _environment() -> dict[str, str]:
    # TRYTOND_* variables would override the generated configuration; drop them.
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRYTOND")}
    inherited = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(_REPO_ROOT), inherited)))
    return env


def _reap_child(process: subprocess.Popen[bytes], stderr: IO[bytes], scratch: str) -> str:
    if process.poll() is None:
        process.kill()
        process.wait()
    shutil.rmtree(scratch, ignore_errors=True)
    with stderr:
        stderr.seek(0)
        return stderr.read().decode(errors="replace")
