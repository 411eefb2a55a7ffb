"""The demo's local inbox: an SMTP server and a webhook receiver keeping all they get, one process.

    python -m gateway.demo.inbox --state-dir DIR [--host 127.0.0.1] [--port 0] [--smtp-port 0]
                                 [--smtp-user USER --smtp-password-env VARIABLE]
    SMTP  STARTTLS with a self-signed certificate (DIR/inbox-cert.pem, for clients to trust);
          with a user, AUTH PLAIN/LOGIN is required, and offered only after STARTTLS
    HTTP  ├── GET    /                          the page a person opens: newest first
          ├── GET    /health
          ├── POST   /hooks/{name}              any webhook (PUT, PATCH, GET, DELETE too),
          │                                     answered as the name's behaviour says
          ├── GET    /api/messages              the e-mails, oldest first
          ├── DELETE /api/messages
          ├── GET    /api/hooks/{name}          the requests a hook received, oldest first
          ├── DELETE /api/hooks/{name}          (DELETE /api/hooks: every hook, and behaviours)
          └── PUT    /api/hooks/{name}/behaviour {"statuses": [500, 410], "delay": 0.0}

Messages and requests live in DIR/inbox.db (`inbox_store.py`) and survive a restart; behaviours
are test scaffolding and start empty (every request answered 200). The first stdout line says
where it listens; `InboxProcess` (`inbox_process.py`) runs this module as a child process.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import os
import signal
import socket
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import uvicorn
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.demo.inbox_page import render_page
from gateway.demo.inbox_store import InboxStore, Json

READY_LINE = "Inbox listening on {url} smtp {smtp}"
CERT_FILE = "inbox-cert.pem"
KEY_FILE = "inbox-key.pem"
DB_FILE = "inbox.db"
PAGE_REFRESH_SECONDS = 5

HookName = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
Status = Annotated[int, Field(ge=200, le=599)]


class BehaviourIn(BaseModel):
    """How a hook answers from now on: these statuses in turn, then 200; each after `delay` s."""

    model_config = ConfigDict(extra="forbid")

    statuses: list[Status] = Field(default_factory=list, max_length=1000)
    delay: float = Field(default=0.0, ge=0.0, le=300.0)


@dataclass
class _Behaviour:
    statuses: deque[int] = field(default_factory=deque)
    delay: float = 0.0


class Behaviours:
    """The scripted answers per hook name; a name never scripted answers 200 at once."""

    def __init__(self) -> None:
        self._by_name: dict[str, _Behaviour] = {}

    def set(self, name: str, statuses: list[int], delay: float) -> None:
        """Replace the hook's script."""
        self._by_name[name] = _Behaviour(deque(statuses), delay)

    def next(self, name: str) -> tuple[int, float]:
        """The status to answer the hook's next request, and the delay before answering."""
        behaviour = self._by_name.get(name)
        if behaviour is None:
            return 200, 0.0
        status = behaviour.statuses.popleft() if behaviour.statuses else 200
        return status, behaviour.delay

    def clear(self, name: str | None = None) -> None:
        """Forget one hook's script, or every one's."""
        if name is None:
            self._by_name.clear()
        else:
            self._by_name.pop(name, None)


# --- SMTP ---------------------------------------------------------------------------------------


class MailHandler:
    """aiosmtpd's handler: keep every message it accepts."""

    def __init__(self, store: InboxStore) -> None:
        self._store = store

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Store the message with its envelope, and whether TLS and a login carried it."""
        raw = envelope.original_content or b""
        # The authenticator stores the LoginPassword it accepted as the session's auth_data.
        auth: object = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        self._store.add_mail(
            raw,
            envelope_from=envelope.mail_from or "",
            envelope_to=list(envelope.rcpt_tos),
            tls=session.ssl is not None,
            login=login,
            peer=_address(session.peer),
        )
        return "250 Message accepted for delivery"


def _address(peer: object) -> str | None:
    """`127.0.0.1:51234`: where the client's connection comes from."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else None


@dataclass(frozen=True)
class Credentials:
    """The one login the SMTP server accepts."""

    user: str
    password: str

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """aiosmtpd's authenticator for PLAIN and LOGIN: compare in constant time."""
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user_ok = hmac.compare_digest(data.login, self.user.encode())
        password_ok = hmac.compare_digest(data.password, self.password.encode())
        if user_ok and password_ok:
            return AuthResult(success=True, auth_data=data)
        # handled=False: aiosmtpd then answers 535 itself (True would leave the client waiting).
        return AuthResult(success=False, handled=False)


def smtp_factory(
    store: InboxStore, tls: ssl.SSLContext, credentials: Credentials | None, hostname: str
) -> SMTP:
    """One SMTP protocol per connection; with credentials, STARTTLS and AUTH are required."""
    return SMTP(
        MailHandler(store),
        hostname=hostname,
        tls_context=tls,
        require_starttls=credentials is not None,
        auth_required=credentials is not None,
        auth_require_tls=True,
        authenticator=credentials.authenticate if credentials else None,
        loop=asyncio.get_running_loop(),
    )


def server_tls(state_dir: Path, host: str) -> ssl.SSLContext:
    """The STARTTLS context, with the certificate in `state_dir` (made once, then reused so a
    client that trusts it keeps trusting it across restarts)."""
    cert, key = state_dir / CERT_FILE, state_dir / KEY_FILE
    if not (cert.is_file() and key.is_file()):
        _write_certificate(cert, key, host)
    # Purpose.CLIENT_AUTH: a server's context, which asks clients for no certificate.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def _write_certificate(cert_path: Path, key_path: Path, host: str) -> None:
    """A self-signed certificate for localhost, 127.0.0.1 and `host`, valid for ten years."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Gatehouse demo inbox")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(_alt_names(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created private, not chmod-ed afterwards: the key is never readable by others.
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(key_bytes)


def _alt_names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return [*names, x509.DNSName(host)] if host != "localhost" else names
    return names if str(address) == "127.0.0.1" else [*names, x509.IPAddress(address)]


# --- HTTP ---------------------------------------------------------------------------------------


def create_inbox_app(store: InboxStore, *, smtp: str) -> FastAPI:
    """The inbox's HTTP side: webhooks, the JSON API tests read, and the page."""
    behaviours = Behaviours()
    app = FastAPI(title="Demo inbox", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> Json:
        return {"status": "ok"}

    @app.api_route("/hooks/{name}", methods=["POST", "PUT", "PATCH", "GET", "DELETE"])
    async def receive(name: HookName, request: Request) -> Response:
        status, delay = behaviours.next(name)
        # Recorded before the delay, so a request the client gave up on still shows.
        store.add_request(
            name,
            method=request.method,
            query=request.url.query,
            headers=list(request.headers.items()),
            body=await request.body(),
            status=status,
        )
        if delay:
            await asyncio.sleep(delay)
        return PlainTextResponse("ok" if status < 400 else "scripted failure", status_code=status)

    @app.get("/api/messages")
    async def messages() -> list[Json]:
        return [mail.to_json() for mail in store.mails()]

    @app.delete("/api/messages", status_code=204)
    async def clear_messages() -> None:
        store.clear_mails()

    @app.get("/api/hooks/{name}")
    async def hook_requests(name: HookName) -> list[Json]:
        return [request.to_json() for request in store.requests(name)]

    @app.delete("/api/hooks/{name}", status_code=204)
    async def clear_hook(name: HookName) -> None:
        store.clear_requests(name)
        behaviours.clear(name)

    @app.delete("/api/hooks", status_code=204)
    async def clear_hooks() -> None:
        store.clear_requests()
        behaviours.clear()

    @app.put("/api/hooks/{name}/behaviour")
    async def behave(name: HookName, behaviour: BehaviourIn) -> Json:
        behaviours.set(name, behaviour.statuses, behaviour.delay)
        return behaviour.model_dump()

    @app.get("/favicon.ico", status_code=204)
    async def favicon() -> None:
        """None: answered so a browser's request is not logged as a 404."""

    @app.get("/", response_class=HTMLResponse)
    async def page(request: Request) -> HTMLResponse:
        hooks_url = str(request.base_url).rstrip("/") + "/hooks"
        html = render_page(
            store.mails(),
            store.requests(),
            smtp=smtp,
            hooks_url=hooks_url,
            refresh=PAGE_REFRESH_SECONDS,
        )
        # Belt and braces beside the sandbox: no script runs here, nor in a message's iframe.
        csp = "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'"
        return HTMLResponse(html, headers={"Content-Security-Policy": csp})

    return app


# --- the process --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the inbox until SIGTERM or SIGINT; the first stdout line says where."""
    args = _arguments(argv)
    credentials = _credentials(args)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    for handled in (signal.SIGTERM, signal.SIGINT):
        signal.signal(handled, _exit_cleanly)
    asyncio.run(_serve(args, credentials))


async def _serve(args: argparse.Namespace, credentials: Credentials | None) -> None:
    store = InboxStore(args.state_dir / DB_FILE)
    tls = server_tls(args.state_dir, args.host)
    http_sock, smtp_sock = _listen(args.host, args.port), _listen(args.host, args.smtp_port)
    smtp = f"{args.host}:{smtp_sock.getsockname()[1]}"
    smtp_server = await asyncio.get_running_loop().create_server(
        lambda: smtp_factory(store, tls, credentials, args.host), sock=smtp_sock
    )
    app = create_inbox_app(store, smtp=smtp)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    url = f"http://{args.host}:{http_sock.getsockname()[1]}"
    print(READY_LINE.format(url=url, smtp=smtp), flush=True)
    try:
        with http_sock:
            await uvicorn.Server(config).serve(sockets=[http_sock])
    finally:
        smtp_server.close()
        store.close()


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.demo.inbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--state-dir", type=Path, required=True, help="where inbox.db lives")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="HTTP; 0 lets the OS choose")
    parser.add_argument("--smtp-port", type=int, default=0, help="SMTP; 0 lets the OS choose")
    parser.add_argument("--smtp-user", help="require AUTH with this user (after STARTTLS)")
    parser.add_argument(
        "--smtp-password-env",
        metavar="VARIABLE",
        help="the environment variable holding the user's password (never on the command line)",
    )
    return parser.parse_args(argv)


def _credentials(args: argparse.Namespace) -> Credentials | None:
    if args.smtp_user is None:
        return None
    password = os.environ.get(args.smtp_password_env or "")
    if not password:
        raise SystemExit("--smtp-user needs --smtp-password-env naming a non-empty variable")
    return Credentials(args.smtp_user, password)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket; SO_REUSEADDR lets a restarted inbox take back its port at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {error.strerror}") from None
    # Listening before the ready line is printed: early clients wait in the backlog, not refused.
    sock.listen(128)
    return sock


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn takes these signals while it serves and re-raises them once it has shut down;
    # ending with status 0 then tells the parent the stop was clean.
    raise SystemExit(0)


if __name__ == "__main__":
    main()
