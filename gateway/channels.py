"""Delivering one notification on one channel: a signed webhook, Slack, or e-mail.

    webhook  POST JSON, signed as Standard Webhooks do (https://www.standardwebhooks.com):
             webhook-id (the notification's id: the same on every retry, so a receiver
             drops a redelivery), webhook-timestamp, webhook-signature
             "v1,<base64 HMAC-SHA256 of id.timestamp.body>", keyed by the channel's secret
    slack    POST a Slack-compatible incoming-webhook payload (no signature: the URL is
             the secret)
    email    SMTP with STARTTLS before AUTH, credentials from the environment

The sender opens a channel's `session` for each round's batch and sends through it: for
e-mail one SMTP connection (STARTTLS and AUTH once), made again after any failure; for HTTP
the shared client's pool. A send either returns (delivered) or raises `Undelivered`: `gone`
when the receiver says it will never take one again (HTTP 410), which turns the channel off.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib
import httpx
from standardwebhooks.webhooks import Webhook

from gateway.config import ChannelConfig, ChannelKind, SmtpConfig
from gateway.messages import Message, email, slack_body, webhook_body

EMAIL = "email"  # the channel of a principal's or owner's own address, through [notify.smtp]


class Undelivered(Exception):
    """A delivery that did not land; `gone` when the receiver wants no more."""

    def __init__(self, reason: str, *, gone: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.gone = gone


@dataclass(frozen=True, slots=True)
class Parcel:
    """One notification as a channel sends it."""

    id: str
    message: Message
    address: str | None  # the e-mail address, for the email channel
    created_at: datetime


Send = Callable[[Parcel], Awaitable[None]]  # deliver one parcel, or raise Undelivered


class Channel(Protocol):
    """Somewhere notifications go."""

    def session(self) -> AbstractAsyncContextManager[Send]:
        """Send a batch through what it holds open for the batch."""
        ...


class HttpChannel:
    """A webhook or a Slack-compatible incoming webhook."""

    def __init__(self, config: ChannelConfig, client: httpx.AsyncClient) -> None:
        assert config.url is not None  # the configuration requires it
        self._url = config.url
        self._client = client
        self._signer = Webhook(config.secret) if config.secret else None
        self._slack = config.kind is ChannelKind.SLACK

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Send]:
        """The shared HTTP client keeps its connections alive across batches already."""
        yield self.send

    async def send(self, parcel: Parcel) -> None:
        """POST the message; any 2xx is delivered."""
        body, headers = self._body(parcel)
        try:
            answer = await self._client.post(self._url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise Undelivered("the receiver did not answer in time") from None
        except httpx.HTTPError as exc:
            raise Undelivered(f"could not reach the receiver ({type(exc).__name__})") from None
        if answer.status_code == 410:
            raise Undelivered("the receiver answered 410 Gone: it takes no more", gone=True)
        if not answer.is_success:
            raise Undelivered(f"the receiver answered HTTP {answer.status_code}")

    def _body(self, parcel: Parcel) -> tuple[str, dict[str, str]]:
        headers = {"content-type": "application/json", "user-agent": "Gatehouse"}
        if self._slack:
            return slack_body(parcel.message), headers
        created = parcel.created_at.isoformat()
        body = webhook_body(parcel.message, notification_id=parcel.id, created_at=created)
        if self._signer is not None:
            now = datetime.now().astimezone()
            headers["webhook-id"] = parcel.id
            headers["webhook-timestamp"] = str(int(now.timestamp()))
            headers["webhook-signature"] = self._signer.sign(parcel.id, now, body)
        return body, headers


class EmailChannel:
    """E-mail through the configured mail server, to the parcel's address or fixed ones."""

    def __init__(self, smtp: SmtpConfig, *, to: list[str], timeout: float) -> None:
        self._smtp = smtp
        self._to = to
        self._timeout = timeout
        self._tls = ssl.create_default_context(cafile=str(smtp.ca_file) if smtp.ca_file else None)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Send]:
        """One SMTP connection for a batch: a storm of approvals is not a TLS handshake and a
        login per message. Dropped after any failure (its state is then unknown) and made
        again for the next message; closed with QUIT after the batch."""
        held: list[aiosmtplib.SMTP] = []

        async def send(parcel: Parcel) -> None:
            try:
                with _handing_over():
                    if not held:
                        held.append(await self._connected())
                    await held[0].send_message(self._mail(parcel))
            except BaseException:  # a timeout's cancellation too: the connection is unusable
                if held:
                    held.pop().close()
                raise

        try:
            yield send
        finally:
            if held:
                with suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                    await held[0].quit()

    async def _connected(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self._smtp.host,
            port=self._smtp.port,
            start_tls=self._smtp.starttls,
            use_tls=False,
            username=self._smtp.username,
            password=self._smtp.password,
            tls_context=self._tls,
            timeout=self._timeout,
        )
        await client.connect()  # STARTTLS, then AUTH when a username is set
        return client

    def _mail(self, parcel: Parcel) -> EmailMessage:
        recipients = [parcel.address] if parcel.address else self._to
        return email(
            parcel.message,
            sender=self._smtp.sender,
            to=", ".join(recipients),
            notification_id=parcel.id,
        )


@contextmanager
def _handing_over() -> Iterator[None]:
    """The mail server's failures, as undelivered notifications."""
    try:
        yield
    except aiosmtplib.SMTPResponseException as exc:
        raise Undelivered(f"the mail server answered {exc.code}", gone=False) from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise Undelivered(f"could not hand the mail over ({type(exc).__name__})") from None


def build_channels(
    channels: dict[str, ChannelConfig],
    smtp: SmtpConfig | None,
    client: httpx.AsyncClient,
    *,
    timeout: float,
) -> dict[str, Channel]:
    """Every configured channel, and `email` for people's own addresses when SMTP is set."""
    built: dict[str, Channel] = {}
    for name, config in channels.items():
        if config.kind is ChannelKind.EMAIL:
            assert smtp is not None  # the configuration requires it
            built[name] = EmailChannel(smtp, to=config.to, timeout=timeout)
        else:
            built[name] = HttpChannel(config, client)
    if smtp is not None:
        built[EMAIL] = EmailChannel(smtp, to=[], timeout=timeout)
    return built
