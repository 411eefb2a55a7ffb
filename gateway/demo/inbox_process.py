"""Run the demo inbox (`python -m gateway.demo.inbox`) as a child process, and read and steer it.

    with InboxProcess.start(state_dir, smtp_user="gatehouse", smtp_password=pw) as inbox:
        send mail to inbox.smtp_host:inbox.smtp_port (STARTTLS trusting inbox.cert_file)
        post webhooks to inbox.hook_url("ops")
        inbox.behave("ops", [500, 410], delay=0.0)     the next answers, then 200
        inbox.wait_for_messages(1), inbox.hooks("ops")  what arrived
        inbox.restart()                                 same ports, messages kept

The helpers are synchronous (httpx), so tests call them from sync and async code alike; the
`arrived_*` waits are their async twins, for when a sender on the caller's loop still delivers.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.demo.inbox import CERT_FILE
from sources.demo.process import ServiceProcess

_READY = re.compile(
    r"^Inbox listening on (?P<url>http://[^\s:]+:(?P<port>\d+))"
    r" smtp (?P<host>[^\s:]+):(?P<smtp>\d+)$"
)
# The child reads the SMTP password from this variable: a secret never goes into its argv.
PASSWORD_VARIABLE = "GATEHOUSE_INBOX_SMTP_PASSWORD"  # noqa: S105
_POLL_SECONDS = 0.05

Json = dict[str, Any]


class InboxProcess(ServiceProcess):
    """The demo inbox in a child process, its files in `state_dir`; build it with `start`."""

    label = "the inbox"
    ready_pattern = _READY

    def __init__(
        self,
        state_dir: Path,
        *,
        smtp_user: str | None,
        smtp_password: str | None,
        host: str,
        port: int,
        smtp_port: int,
        timeout: float,
    ) -> None:
        super().__init__(host=host, port=port, timeout=timeout)
        if (smtp_user is None) != (smtp_password is None):
            raise ValueError("give both smtp_user and smtp_password, or neither")
        self._state_dir = state_dir.resolve()
        self._smtp_user = smtp_user
        self._smtp_password = smtp_password
        self._smtp_port = smtp_port

    @classmethod
    def start(
        cls,
        state_dir: Path,
        *,
        smtp_user: str | None = None,
        smtp_password: str | None = None,
        port: int = 0,
        smtp_port: int = 0,
        host: str = "127.0.0.1",
        timeout: float = 15,
    ) -> InboxProcess:
        """Start the inbox and wait until it listens; port 0 picks a free one. With a user and
        password, SMTP requires STARTTLS and then AUTH."""
        state_dir.mkdir(parents=True, exist_ok=True)
        inbox = cls(
            state_dir,
            smtp_user=smtp_user,
            smtp_password=smtp_password,
            host=host,
            port=port,
            smtp_port=smtp_port,
            timeout=timeout,
        )
        inbox._launch()
        return inbox

    @property
    def smtp_host(self) -> str:
        """The SMTP server's host."""
        return self._host

    @property
    def smtp_port(self) -> int:
        """The SMTP server's port (kept across restarts)."""
        return self._smtp_port

    @property
    def cert_file(self) -> Path:
        """The SMTP server's self-signed certificate: the CA file a client trusts for STARTTLS."""
        return self._state_dir / CERT_FILE

    def hook_url(self, name: str) -> str:
        """Where a webhook named `name` is received."""
        return f"{self._url}/hooks/{name}"

    def messages(self) -> list[Json]:
        """Every e-mail received, oldest first."""
        return self._json("GET", "/api/messages")

    def hooks(self, name: str) -> list[Json]:
        """The requests webhook `name` received, oldest first (headers lowercased, body, json)."""
        return self._json("GET", f"/api/hooks/{name}")

    def behave(self, name: str, statuses: list[int], delay: float = 0.0) -> None:
        """Answer the next requests to hook `name` with `statuses` in turn, then 200; sleep
        `delay` seconds before answering each."""
        self._call(
            "PUT", f"/api/hooks/{name}/behaviour", json={"statuses": statuses, "delay": delay}
        )

    def clear(self) -> None:
        """Forget every e-mail, webhook request and behaviour."""
        self._call("DELETE", "/api/messages")
        self._call("DELETE", "/api/hooks")

    def wait_for_messages(self, count: int, *, timeout: float = 10) -> list[Json]:
        """The e-mails, once at least `count` have arrived; TimeoutError after `timeout` s."""
        return _poll(self.messages, count, timeout, what="e-mails")

    def wait_for_hooks(self, name: str, count: int, *, timeout: float = 10) -> list[Json]:
        """Hook `name`'s requests, once at least `count` have arrived; TimeoutError if not."""
        return _poll(lambda: self.hooks(name), count, timeout, what=f"requests to {name}")

    async def arrived_messages(self, count: int, *, within: float = 10) -> list[Json]:
        """As `wait_for_messages`, without blocking the event loop (a sender on it may be the
        one still delivering); TimeoutError after `within` seconds."""
        return await self._arrived("/api/messages", count, within, what="e-mails")

    async def arrived_hooks(self, name: str, count: int, *, within: float = 10) -> list[Json]:
        """As `wait_for_hooks`, without blocking the event loop."""
        return await self._arrived(f"/api/hooks/{name}", count, within, what=f"requests to {name}")

    def _arguments(self) -> list[str]:
        module = ["gateway.demo.inbox", "--state-dir", str(self._state_dir)]
        ports = ["--port", str(self._port), "--smtp-port", str(self._smtp_port)]
        user = self._smtp_user
        login = ["--smtp-user", user, "--smtp-password-env", PASSWORD_VARIABLE] if user else []
        return [*module, "--host", self._host, *ports, *login]

    def _secrets(self) -> dict[str, str]:
        return {PASSWORD_VARIABLE: self._smtp_password} if self._smtp_password else {}

    def _ready(self, line: str) -> re.Match[str] | None:
        # The line also says where SMTP listens, kept across restarts as the HTTP port is.
        ready = super()._ready(line)
        if ready is not None:
            self._smtp_port = int(ready["smtp"])
        return ready

    def _json(self, method: str, path: str) -> list[Json]:
        body: list[Json] = self._call(method, path).json()
        return body

    def _call(self, method: str, path: str, *, json: Json | None = None) -> httpx.Response:
        # trust_env=False: a proxy configured for the outside world must not carry loopback calls.
        with httpx.Client(base_url=self._url, trust_env=False, timeout=10) as client:
            response = client.request(method, path, json=json)
        response.raise_for_status()
        return response

    async def _arrived(self, path: str, count: int, within: float, *, what: str) -> list[Json]:
        found: list[Json] = []
        async with httpx.AsyncClient(base_url=self._url, trust_env=False, timeout=10) as client:
            try:
                async with asyncio.timeout(within):
                    while len(found) < count:
                        await asyncio.sleep(_POLL_SECONDS if found else 0)
                        found = (await client.get(path)).raise_for_status().json()
            except TimeoutError:
                raise TimeoutError(
                    f"{len(found)} {what} after {within} s, expected {count}"
                ) from None
        return found


def _poll(read: Callable[[], list[Json]], count: int, timeout: float, *, what: str) -> list[Json]:
    deadline = time.monotonic() + timeout
    while True:
        found = read()
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(found)} {what} after {timeout} s, expected {count}")
        time.sleep(_POLL_SECONDS)
