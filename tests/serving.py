"""`gatehouse serve` as a child process, as production runs it, for tests that crash it.

    demo_config(directory, writes={...})   the demo TOML, with [writes] settings of the test's
    Gateway(name, environ, config, logs)   one serving process at a time, on a free port
                                           (one worker, or `workers=N` of them):
      .start()   spawn, and wait until /healthz answers (a restart: a new process, new port)
      .kill()    SIGKILL, as a crash: no shutdown, no clean-up, whatever was in flight stays
      .stop()    SIGTERM, then SIGKILL if it lingers
    audit_verify(database_url)             `gatehouse audit verify`, as an operator runs it
    serve_refused(config, environ, *args)  `gatehouse serve` that is expected to stop at once

Each process writes its stderr to a log of its own (`<name>-<n>.log`), for the failure report.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path

import httpx

from gateway.demo import CONFIG_TEMPLATE

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 3.0  # then SIGKILL: requests still waiting are no test's concern


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def demo_config(
    directory: Path, *, writes: Mapping[str, str], rates: Mapping[str, str] | None = None
) -> Path:
    """The demo configuration written to `directory`, with `writes` set in its [writes] table
    (and `rates` in [limits.rate], when given).

    The template names its policy directory relative to itself: the copy names it in full.
    """
    text = CONFIG_TEMPLATE.read_text(encoding="utf-8")
    policy_dir = str(tomllib.loads(text)["policy"]["dir"])
    absolute = json.dumps(str((CONFIG_TEMPLATE.parent / policy_dir).resolve()))
    text = re.sub(r"(?m)^dir\s*=.*$", lambda _: f"dir = {absolute}", text, count=1)
    path = directory / "gatehouse.toml"
    text = _with_table(text, "writes", writes)
    if rates is not None:
        text = _with_table(text, "limits.rate", rates)
    path.write_text(text, encoding="utf-8")
    return path


def _with_table(text: str, table: str, values: Mapping[str, str]) -> str:
    """`text` with each of `values` set in `[table]`: replaced where the key is, else added."""
    lines, current, seen = text.splitlines(), None, False
    header = re.compile(r"^\s*\[([^\]]+)\]\s*$")
    kept: list[str] = []
    for line in lines:
        if (found := header.match(line)) is not None:
            current = found.group(1).strip()
            seen = seen or current == table
        key = line.split("=", 1)[0].strip()
        if current == table and "=" in line and key in values:
            continue  # set again below, right under the header
        kept.append(line)
        if current == table and found is not None:
            kept += [f"{name} = {json.dumps(value)}" for name, value in values.items()]
    if not seen:
        kept += ["", f"[{table}]", *(f"{name} = {json.dumps(v)}" for name, v in values.items())]
    return "\n".join(kept) + "\n"


class Gateway:
    """One `gatehouse serve` process at a time over fixed databases; killed and restarted."""

    def __init__(
        self, name: str, environ: Mapping[str, str], config: Path, logs: Path, *, workers: int = 1
    ) -> None:
        self.name = name
        self.workers = workers  # one process, unless a test is about several
        self._environ = dict(environ)
        self._config = config
        self._logs = logs
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.starts = 0
        self.kills = 0

    @property
    def serving(self) -> bool:
        """Started, answered its health check, and not killed or stopped since."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The serving process's id (with several workers: their supervisor's)."""
        assert self._process is not None, f"{self.name} is not running"
        return self._process.pid

    @property
    def log(self) -> Path:
        """The current (or last) process's log."""
        return self._logs / f"{self.name}-{self.starts}.log"

    def start(self) -> str:
        """Spawn a new process on a free port and wait until it is healthy; its base URL."""
        assert not self.serving, f"{self.name} is already running"
        self.starts += 1
        port = free_port()
        command = [sys.executable, "-m", "gateway", "serve", "--config", str(self._config)]
        command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(self.workers)]
        with self.log.open("wb") as stderr:
            process = subprocess.Popen(
                command,
                env=self._environ,
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            self._wait_until_healthy(process, url)
        except BaseException:
            _end(process, signal.SIGKILL)
            raise
        self._process, self.url = process, url
        return url

    def kill(self) -> None:
        """SIGKILL the process, as a crash would end it, and reap it."""
        assert self._process is not None, f"{self.name} was never started"
        self.kills += 1
        _end(self._process, signal.SIGKILL)
        self._process = None

    def stop(self) -> None:
        """End the process if it runs: SIGTERM, then SIGKILL if it lingers."""
        if self._process is not None:
            _end(self._process, signal.SIGTERM)
            self._process = None

    def log_tail(self, characters: int = 3000) -> str:
        """The end of the current process's log."""
        return self.log.read_text(errors="replace")[-characters:] if self.log.exists() else ""

    def _wait_until_healthy(self, process: subprocess.Popen[bytes], url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.name} did not start at {url} (exit code {process.poll()}):\n{self.log_tail()}"
        )


def _end(process: subprocess.Popen[bytes], how: signal.Signals) -> None:
    if process.poll() is None:
        process.send_signal(how)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
            return
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def audit_verify(environ: Mapping[str, str], database_url: str) -> subprocess.CompletedProcess[str]:
    """`gatehouse audit verify` on `database_url`, given as GATEHOUSE_DATABASE_URL."""
    command = [sys.executable, "-m", "gateway", "audit", "verify"]
    env = {**os.environ, **environ, "GATEHOUSE_DATABASE_URL": database_url}
    return subprocess.run(
        command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )


def serve_refused(
    config: Path, environ: Mapping[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """`gatehouse serve --config config *args` run to its end, as a refusal ends it."""
    command = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", "0"]
    return subprocess.run(
        [*command, *args],
        env={**environ, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
