"""Where the demo's notifications go: its local inbox (gateway/demo/inbox.py).

The demo configuration names channels, a mail server and a webhook secret through GATEHOUSE_*
variables; these are their values for a running inbox: e-mail to its SMTP server (STARTTLS
against its own certificate, a login with a fresh password), webhooks and Slack messages to
its hooks. An estate without an inbox (built by hand, in a test) points them where nothing
listens: its deliveries fail and are retried, nothing else changes.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from gateway.demo.inbox_process import InboxProcess

SMTP_USER = "gatehouse"
DEFAULT_CONSOLE = "http://127.0.0.1:8000/console"
_NOWHERE_HOST, _NOWHERE_PORT = "127.0.0.1", "9"  # the discard port: nothing answers


@dataclass(frozen=True)
class Mailroom:
    """The demo's inbox and the secrets the gateway uses to reach it."""

    inbox: InboxProcess | None = None
    smtp_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    webhook_secret: str = field(
        default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    )

    @classmethod
    def start(cls, state_dir: Path) -> Mailroom:
        """Start the inbox in `state_dir`, requiring STARTTLS and a login for e-mail."""
        password = secrets.token_urlsafe(18)
        inbox = InboxProcess.start(
            state_dir, smtp_user=SMTP_USER, smtp_password=password, timeout=30
        )
        return cls(inbox=inbox, smtp_password=password)

    def stop(self) -> None:
        """Stop the inbox, if there is one."""
        if self.inbox is not None:
            self.inbox.stop()

    def environ(self) -> dict[str, str]:
        """The GATEHOUSE_* variables the demo configuration's channels refer to."""
        inbox = self.inbox
        return {
            "GATEHOUSE_INBOX_URL": inbox.url
            if inbox
            else f"http://{_NOWHERE_HOST}:{_NOWHERE_PORT}",
            "GATEHOUSE_SMTP_HOST": inbox.smtp_host if inbox else _NOWHERE_HOST,
            "GATEHOUSE_SMTP_PORT": str(inbox.smtp_port) if inbox else _NOWHERE_PORT,
            "GATEHOUSE_SMTP_CA_FILE": str(inbox.cert_file) if inbox else "",
            "GATEHOUSE_SMTP_PASSWORD": self.smtp_password,
            "GATEHOUSE_WEBHOOK_SECRET": self.webhook_secret,
            # `gatehouse demo` sets it to where it serves; links point there.
            "GATEHOUSE_CONSOLE_URL": os.environ.get("GATEHOUSE_CONSOLE_URL", DEFAULT_CONSOLE),
        }
