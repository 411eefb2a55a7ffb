"""Run a demo service (`python -m <module>`) as a child process and stop it again.

ServiceProcess        start -> wait for the ready line -> stop (reaped even if forgotten) -> restart
└── SqliteServiceProcess `python -m MODULE --db PATH --host H --port P` (sqlite_service.py)
    ├── CrmProcess        `sources.demo.crm`, ready line "CRM listening on URL"
    └── StorefrontProcess `sources.demo.storefront`, "Storefront listening on URL"

A subclass names its module and arguments and its ready line, whose `url` and `port` say where
the service listens; restarting launches the same command again with the port the ready line
gave, so the service keeps it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, Self

# The directory that holds the `sources` package, so the child imports this very code.
_REPO_ROOT = Path(__file__).resolve().parents[2]
_CRM_READY = re.compile(r"^CRM listening on (?P<url>http://[^\s:]+:(?P<port>\d+))$")
_STOREFRONT_READY = re.compile(r"^Storefront listening on (?P<url>http://[^\s:]+:(?P<port>\d+))$")
_STOP_GRACE_SECONDS = 5.0


class ServiceProcess(ABC):
    """A demo service in a child process; subclasses say what to run and what "ready" looks like."""

    # Names the service in errors, e.g. "the CRM".
    label: ClassVar[str] = "the service"
    # The child's first stdout line once it listens; groups `url` and `port` say where.
    ready_pattern: ClassVar[re.Pattern[str]]

    def __init__(self, *, host: str, port: int, timeout: float) -> None:
        self._host = host
        self._port = port
        self._url = ""
        self._timeout = timeout
        self._process: subprocess.Popen[str] | None = None
        self._reaper: weakref.finalize[[subprocess.Popen[str], IO[bytes]], ServiceProcess] | None
        self._reaper = None

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:8765 (kept across restarts)."""
        return self._url

    @property
    def port(self) -> int:
        """The TCP port the service's HTTP API listens on (kept across restarts)."""
        return self._port

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Ask the service to shut down; kill it if it has not within five seconds."""
        if self._process is None:
            return
        self._process.terminate()
        # Past the grace period, the reaper kills it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=_STOP_GRACE_SECONDS)
        self._reap()

    def restart(self) -> None:
        """Stop the service and launch it again with the same command (the same ports)."""
        self.stop()
        self._launch()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @abstractmethod
    def _arguments(self) -> list[str]:
        """The module to run and its arguments, e.g. ["sources.demo.crm", "--db", "crm.db"]."""
        ...

    def _ready(self, line: str) -> re.Match[str] | None:
        """The match if `line` is the ready line, having remembered where the service listens;
        a subclass whose line says more reads the rest from the match."""
        ready = self.ready_pattern.match(line)
        if ready is not None:
            self._url, self._port = ready["url"], int(ready["port"])
        return ready

    def _secrets(self) -> dict[str, str]:
        """Environment variables for the child only: secrets never go into its argv."""
        return {}

    def _launch(self) -> None:
        # stderr goes to a file, not a pipe: nobody reads it while the service runs, and a full
        # pipe would block the child; the file is read only to explain a failed start. It
        # outlives this call, so no `with`: _reap_child closes it when the child is gone.
        stderr = tempfile.TemporaryFile()  # noqa: SIM115
        # -P keeps the current directory off sys.path, so a stray package there cannot shadow.
        command = [sys.executable, "-P", "-m", *self._arguments()]
        # The argv is our own interpreter and module with typed arguments, and no shell.
        process = subprocess.Popen(  # noqa: S603
            command, stdout=subprocess.PIPE, stderr=stderr, env=self._environment(), text=True
        )
        self._process = process
        # Should the owner forget to stop it (a crashed test), the child dies with this object.
        self._reaper = weakref.finalize(self, _reap_child, process, stderr)
        line = _first_line(process, self._timeout)
        if not line or self._ready(line.strip()) is None:
            message = _start_failure(self.label, line, self._timeout)
            output = self._reap()
            raise RuntimeError(f"{message} (exit code {process.returncode}); stderr:\n{output}")

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, **self._secrets()}
        inherited = env.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(_REPO_ROOT), inherited)))
        return env

    def _reap(self) -> str:
        """Make sure the child is gone and its pipes closed; return what it wrote to stderr."""
        reaper, self._reaper, self._process = self._reaper, None, None
        output = reaper() if reaper is not None else None  # None too if it had already run
        return output if isinstance(output, str) else ""


class SqliteServiceProcess(ServiceProcess):
    """A service serving one SQLite file in a child process (`sqlite_service.serve` is its
    child side); build it with `start`."""

    # The service's module, run as `python -m module`.
    module: ClassVar[str]

    def __init__(self, db_path: Path, *, host: str, port: int, timeout: float) -> None:
        super().__init__(host=host, port=port, timeout=timeout)
        self._db_path = db_path.resolve()

    @classmethod
    def start(
        cls, db_path: Path, *, port: int = 0, timeout: float = 15, host: str = "127.0.0.1"
    ) -> Self:
        """Start the service over `db_path` and wait until it listens; port 0 picks a free one."""
        service = cls(db_path, host=host, port=port, timeout=timeout)
        service._launch()
        return service

    def _arguments(self) -> list[str]:
        module = [self.module, "--db", str(self._db_path)]
        return [*module, "--host", self._host, "--port", str(self._port)]


class CrmProcess(SqliteServiceProcess):
    """The demo CRM serving one SQLite file in a child process; build it with `start`."""

    label = "the CRM"
    module = "sources.demo.crm"
    ready_pattern = _CRM_READY


class StorefrontProcess(SqliteServiceProcess):
    """The storefront serving one SQLite file in a child process; build it with `start`."""

    label = "the storefront"
    module = "sources.demo.storefront"
    ready_pattern = _STOREFRONT_READY


def _reap_child(process: subprocess.Popen[str], stderr: IO[bytes]) -> str:
    if process.poll() is None:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()
    with stderr:
        stderr.seek(0)
        return stderr.read().decode(errors="replace")


def _first_line(process: subprocess.Popen[str], timeout: float) -> str | None:
    """The child's first stdout line ("" if it closed stdout), or None after `timeout` seconds."""
    lines: queue.Queue[str] = queue.Queue(maxsize=1)
    # readline() cannot time out portably, so it runs in a thread that ends with the pipe.
    reader = threading.Thread(
        target=lambda: lines.put(process.stdout.readline() if process.stdout else ""),
        name="service-ready-line",
        daemon=True,
    )
    reader.start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return None


def _start_failure(label: str, line: str | None, timeout: float) -> str:
    if line is None:
        return f"{label} did not report listening within {timeout} s"
    if not line:
        return f"{label} exited before listening"
    return f"{label} printed {line.strip()!r} instead of its ready line"
