"""The `gatehouse` command: demo, serve, audit verify|export|checkpoint|keygen, policy check."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TextIO, TypeVar

import dotenv
import httpx
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import checkpoints, ledger_report
from gateway.app import build_services, create_app, start
from gateway.audit import AuditTrail, Verification, export_event
from gateway.checkpoints import (
    Checkpointer,
    CheckpointVerification,
    Verifier,
    Written,
    checkpointer_from_settings,
    signer_from_settings,
)
from gateway.config import load_config
from gateway.database import SchemaOutdated, create_engine, create_schema
from gateway.demo import Estate, running_estate, write_keys_file
from gateway.demo.tryton import running_tryton_estate
from gateway.drift_report import run_drift
from gateway.errors import ConfigError, InvalidArgument, Unauthenticated
from gateway.logs import configure_logging
from gateway.mcp import run_stdio
from gateway.settings import Settings
from gateway.workers import serve as serve_workers
from gateway.workers import worker_count


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `gatehouse` subcommand; exit status 0 on success."""
    args = _parser().parse_args(argv)
    try:
        if args.env_file is not None:
            _load_env_file(args.env_file)
        return int(args.run(args))
    except ConfigError as exc:
        print(f"gatehouse: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _load_env_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"--env-file: no file at {path}")
    dotenv.load_dotenv(path, override=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatehouse", description=__doc__)
    parser.add_argument(
        "--env-file",
        type=Path,
        help="read GATEHOUSE_* settings from this file first (`export NAME=value` lines, as "
        "`gatehouse demo` writes .gatehouse-demo/gatehouse.env); the environment wins",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="start the demo estate and the gateway over it")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--state-dir", type=Path, default=Path(".gatehouse-demo"))
    demo.add_argument(
        "--estate",
        choices=("demo", "tryton"),
        default="demo",
        help="demo: the SQL ERP and HTTP CRM; tryton: a Tryton ERP (seeded on first use)",
    )
    demo.set_defaults(run=_demo)

    serve = commands.add_parser("serve", help="serve the gateway for a configuration file")
    serve.add_argument("--config", type=Path, help="TOML file (default: $GATEHOUSE_CONFIG)")
    serve.add_argument("--host", help="listen address (default: $GATEHOUSE_HOST)")
    serve.add_argument("--port", type=int, help="listen port (default: $GATEHOUSE_PORT)")
    serve.add_argument(
        "--workers",
        type=_positive,
        help="processes serving the port (default: $GATEHOUSE_WORKERS, else one per core "
        "on a PostgreSQL gateway database and one on SQLite)",
    )
    serve.set_defaults(run=_serve)
    _add_audit(commands)
    _add_policy(commands)
    _add_drift(commands)

    mcp = commands.add_parser("mcp", help="serve MCP over stdio as $GATEHOUSE_API_KEY's agent")
    mcp.add_argument("--config", type=Path, help="TOML file (default: $GATEHOUSE_CONFIG)")
    mcp.set_defaults(run=_mcp)
    return parser


def _add_drift(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    drift = commands.add_parser(
        "drift",
        help="compare every declared copy of a field with its system of record "
        "(exit 0 in sync, 1 drift, 2 usage, 3 a copy unreadable)",
    )
    drift.add_argument("--config", type=Path, help="TOML file (default: $GATEHOUSE_CONFIG)")
    drift.add_argument("--entity", action="append", help="only this entity's copies (repeatable)")
    drift.set_defaults(run=run_drift)


def _add_policy(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = commands.add_parser("policy", help="explain policy decisions")
    steps = policy.add_subparsers(required=True, metavar="STEP")
    check = steps.add_parser("check", help="what policy decides for a principal, action, input")
    check.add_argument("--config", type=Path, help="TOML file (default: $GATEHOUSE_CONFIG)")
    check.add_argument("--principal", required=True, help="a configured principal, e.g. olivia")
    check.add_argument(
        "--action",
        required=True,
        help="an action kind (inventory.adjust) or mutation (adjustInventory)",
    )
    check.add_argument("--input", default="{}", help="the write's input as JSON")
    check.set_defaults(run=_policy_check)


def _policy_check(args: argparse.Namespace) -> int:
    settings = Settings(**({"config": args.config} if args.config else {}))
    services = build_services(settings, load_config(settings.config))
    principal = services.authenticator.principal(args.principal)
    if principal is None:
        return _fail(f"no principal named '{args.principal}' in {settings.config}")
    try:
        raw = json.loads(args.input)
    except json.JSONDecodeError as exc:
        return _fail(f"--input is not JSON: {exc.msg} at character {exc.pos}")
    by_mutation = {kind.mutation: kind.kind for kind in services.catalog.kinds()}
    try:
        verdict = services.writes.can(by_mutation.get(args.action, args.action), raw, principal)
    except InvalidArgument as exc:
        return _fail(exc.message)
    decision = verdict.decision
    print(f"decision:  {decision.outcome.value}")
    print(f"rule:      {decision.rule}")
    print(f"reason:    {decision.reason}")
    print(f"policy:    {decision.policy_version}")
    if decision.approvals_required:
        approvers = ", ".join(verdict.approvers) or "nobody configured can"
        print(f"approvals: {decision.approvals_required} needed; could approve: {approvers}")
    for problem in verdict.problems:
        print(f"invalid:   {problem.field}: {problem.message}")
    return 0


def _mcp(args: argparse.Namespace) -> int:
    settings = Settings(**({"config": args.config} if args.config else {}))
    configure_logging(settings.log_level)  # on stderr: stdout carries the MCP protocol
    services = build_services(settings, load_config(settings.config))
    key = os.environ.get("GATEHOUSE_API_KEY", "")
    try:
        principal = services.authenticator.authenticate(f"Bearer {key}")
    except Unauthenticated:
        return _fail("set GATEHOUSE_API_KEY to the agent's API key")

    async def serve() -> None:
        await start(services)
        try:
            await run_stdio(services, principal)
        finally:
            await services.close()

    asyncio.run(serve())
    return 0


def _fail(message: str) -> int:
    print(f"gatehouse: {message}", file=sys.stderr)
    return 2


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return number


def _serve(args: argparse.Namespace) -> int:
    names = ("config", "host", "port", "workers")
    overrides = {k: v for k, v in vars(args).items() if k in names and v}
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    config = load_config(settings.config)  # a bad file stops here, before any worker starts
    workers = worker_count(settings.workers, settings.database_url)
    if workers > 1:
        return serve_workers(settings, workers)
    app = create_app(settings, config)
    # log_config=None: uvicorn keeps the JSON logging set up above instead of its own.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        log_config=None,
        access_log=False,
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    # Notifications link to the console where this demo serves it.
    os.environ.setdefault("GATEHOUSE_CONSOLE_URL", f"http://{args.host}:{args.port}/console")
    # SIGTERM's default ends the process at once, and uvicorn raises it again once it has shut
    # down: ended as an exit instead, so the systems it started are stopped on the way out.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with _running(args.estate, args.state_dir) as estate:
        database = (estate.state_dir / "gatehouse.db").resolve()
        _set_aside_if_outdated(database)
        settings = Settings(
            host=args.host, port=args.port, database_url=f"sqlite+aiosqlite:///{database}"
        )
        configure_logging("WARNING")  # the demo's terminal shows the banner, not every request
        app = create_app(settings, estate.config())
        keys_file = write_keys_file(estate, database_url=settings.database_url)
        base = f"http://{args.host}:{args.port}"
        print(_banner(base, estate.systems(), estate.keys, keys_file), flush=True)
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level="warning",
            log_config=None,
            access_log=False,
        )
    return 0


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _set_aside_if_outdated(database: Path) -> None:
    """The demo's ERP is seeded afresh on each start: an outdated gateway file is moved aside."""
    if not database.exists():
        return

    async def check() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{database}")
        try:
            await create_schema(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(check())
    except SchemaOutdated as outdated:
        kept = database.with_name(f"{database.name}.{datetime.now(UTC):%Y%m%dT%H%M%S}.old")
        database.rename(kept)
        print(f"{outdated}.\nThe demo moved it to {kept} and starts a new one.", flush=True)


def _running(name: str, state_dir: Path) -> AbstractContextManager[Estate, bool | None]:
    if name == "tryton":
        print("Starting Tryton (seeding it takes a minute or two the first time)...", flush=True)
        return running_tryton_estate(state_dir / "tryton-estate")
    return running_estate(state_dir)


def _banner(base: str, systems: dict[str, str], keys: dict[str, str], keys_file: Path) -> str:
    width = max(len(name) for name in keys)
    lines = [
        "Gatehouse demo is running. Ctrl-C stops everything.",
        "",
        f"  GraphQL    {base}/graphql   (GraphiQL in a browser; send the key as a header)",
        f"  Console    {base}/console   (sign in with a human's key: olivia, finn, carla, sam)",
        f"             {base}/console/alerts (owner alerts, failed deliveries), /console/drift",
        f"  MCP        {base}/mcp       (streamable HTTP; or `gatehouse mcp` over stdio)",
        f"  Metrics    {base}/metrics   health: {base}/healthz, {base}/readyz",
        *(f"  {name:<10} {where}" for name, where in systems.items()),
        "",
        "API keys (Authorization: Bearer <key>):",
        *(f"  {name:<{width}}  {key}" for name, key in keys.items()),
        "",
        f"The keys are also in {keys_file} (source it to get $GATEHOUSE_KEY_<NAME>).",
        "",
        "Approvers' e-mails, Slack messages and the systems' webhooks land in the Inbox above;",
        "the storefront's copy of stock drifts as orders are placed: "
        f"gatehouse --env-file {keys_file.with_name('gatehouse.env')} drift",
        "",
        "Try:",
        f'  curl -s {base}/graphql -H "Authorization: Bearer {keys["olivia"]}" \\',
        "    -H 'Content-Type: application/json' \\",
        '    -d \'{"query": "{ customer(id: \\"C-00001\\") { name email balance { outstanding '
        "{ amount currency } } freshness { system ageSeconds status } } }\"}'",
    ]
    return "\n".join(lines)


T = TypeVar("T")


class _AuditUnavailable(Exception):
    """The audit command cannot run: a bad argument, or a database it cannot read."""


def _add_audit(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="verify, export or checkpoint the audit trail")
    steps = audit.add_subparsers(required=True, metavar="STEP")
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument("--database-url", help="default: $GATEHOUSE_DATABASE_URL")

    verify = steps.add_parser("verify", parents=[database], help="check the hash chain")
    verify.add_argument(
        "--checkpoints",
        type=Path,
        metavar="DIR",
        help="also check each signed checkpoint in DIR against the database",
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        action="append",
        metavar="FILE",
        help="a PEM public key that signed them; repeatable (default: the one of "
        "$GATEHOUSE_CHECKPOINT_KEY_FILE or $GATEHOUSE_CHECKPOINT_KEY)",
    )
    verify.set_defaults(run=_audit_verify)

    export = steps.add_parser("export", parents=[database], help="write events as JSONL or CSV")
    export.add_argument("--format", choices=("jsonl", "csv"), required=True)
    export.add_argument("--since", help="ISO 8601 date or time, inclusive (UTC unless given)")
    export.add_argument("--until", help="ISO 8601 date or time, exclusive (UTC unless given)")
    export.add_argument("--principal", help="only this principal's events")
    export.add_argument("--action", dest="action_kind", help="only this action kind")
    export.add_argument("--output", type=Path, help="file to write (default: stdout)")
    export.set_defaults(run=_audit_export)

    rows = steps.add_parser(
        "ledger", parents=[database], help="write the action ledger (a row per action)"
    )
    ledger_report.add_arguments(rows)
    rows.set_defaults(run=ledger_report.run)

    checkpoint = steps.add_parser(
        "checkpoint",
        parents=[database],
        help="sign the chain's head into $GATEHOUSE_CHECKPOINT_DIR",
    )
    checkpoint.set_defaults(run=_audit_checkpoint)

    keygen = steps.add_parser("keygen", help="write a new Ed25519 checkpoint key, and PATH.pub")
    keygen.add_argument(
        "path", type=Path, metavar="PATH", help="the private key's file (mode 0600)"
    )
    keygen.set_defaults(run=_audit_keygen)


def _audit_verify(args: argparse.Namespace) -> int:
    try:
        verifier = _checkpoint_verifier(args.checkpoints, args.public_key)
        chain, marks = asyncio.run(
            _on_engine(
                args.database_url, lambda engine: _verify_all(engine, args.checkpoints, verifier)
            )
        )
    except _AuditUnavailable as exc:
        print(f"gatehouse: {exc}", file=sys.stderr)
        return 2
    status = _report_chain(chain)
    return status if marks is None else max(status, _report_checkpoints(args.checkpoints, marks))


async def _verify_all(
    engine: AsyncEngine, directory: Path | None, verifier: Verifier | None
) -> tuple[Verification, CheckpointVerification | None]:
    chain = await AuditTrail(engine).verify()
    if directory is None or verifier is None:
        return chain, None
    return chain, await checkpoints.verify(directory, engine=engine, verifier=verifier)


def _report_chain(verdict: Verification) -> int:
    if not verdict.ok:
        print(f"audit trail BROKEN at {verdict.problem}", file=sys.stderr)
        return 1
    print(f"audit trail intact: {verdict.events} events")
    return 0


def _report_checkpoints(directory: Path, verdict: CheckpointVerification) -> int:
    shown = 5  # the first problems name the damage; the rest are usually more of it
    if not verdict.ok:
        print(f"audit checkpoints FAILED: {verdict.problems[0]}", file=sys.stderr)
        for problem in verdict.problems[1:shown]:
            print(f"  and: {problem}", file=sys.stderr)
        if len(verdict.problems) > shown:
            print(f"  and {len(verdict.problems) - shown} more", file=sys.stderr)
        return 1
    if verdict.newest is None:
        print(f"audit checkpoints: none in {directory}; nothing anchors the trail's head")
        return 0
    print(
        f"audit checkpoints match: {verdict.checked} checked; the newest is at "
        f"seq={verdict.newest.seq}, the head at seq={verdict.head_seq}"
    )
    return 0


def _checkpoint_verifier(directory: Path | None, public_keys: list[Path] | None) -> Verifier | None:
    """The keys to check checkpoints with: the files given, else the configured key's."""
    if directory is None:
        if public_keys:
            raise _AuditUnavailable("--public-key needs --checkpoints DIR")
        return None
    if not directory.is_dir():
        raise _AuditUnavailable(f"--checkpoints: no directory at {directory}")
    if public_keys:
        return Verifier([_public_key(path) for path in public_keys])
    signer = signer_from_settings(Settings())
    if signer is None:
        raise _AuditUnavailable(
            "--checkpoints needs the key that signed them: --public-key FILE, or "
            f"${checkpoints.KEY_FILE_VARIABLE} or ${checkpoints.KEY_VARIABLE}"
        )
    return Verifier([signer.public_key])


def _public_key(path: Path) -> Ed25519PublicKey:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise _AuditUnavailable(f"--public-key: cannot read {path}: {exc.strerror}") from None
    try:
        return checkpoints.load_public_key(pem, name=f"--public-key {path}")
    except ConfigError as exc:
        raise _AuditUnavailable(exc.message) from None


def _audit_checkpoint(args: argparse.Namespace) -> int:
    settings = Settings()
    checkpointer = checkpointer_from_settings(settings)  # ConfigError: exit 2, names the variable
    if checkpointer is None:
        return _fail(
            f"checkpoints are not configured: set {checkpoints.DIR_VARIABLE} (or "
            f"{checkpoints.URL_VARIABLE}) and "
            f"{checkpoints.KEY_FILE_VARIABLE} (or {checkpoints.KEY_VARIABLE})"
        )
    try:
        written = asyncio.run(
            _on_engine(args.database_url, lambda engine: _write_checkpoint(engine, checkpointer))
        )
    except _AuditUnavailable as exc:
        return _fail(str(exc))
    made = written.checkpoint
    print(
        f"checkpoint of seq={made.seq} (hash {made.hash[:16]}..., key {made.key_id}) "
        f"written to {written.location}"
    )
    return 0


async def _write_checkpoint(engine: AsyncEngine, checkpointer: Checkpointer) -> Written:
    try:
        return await checkpointer.checkpoint(engine)
    except (OSError, httpx.HTTPError) as exc:  # the sink's; the database's: SQLAlchemyError
        raise _AuditUnavailable(f"cannot write the checkpoint: {exc}") from exc


def _audit_keygen(args: argparse.Namespace) -> int:
    try:
        signer = checkpoints.write_new_key(args.path)
    except FileExistsError as exc:
        return _fail(f"{exc.filename} exists; keygen never overwrites a key")
    except OSError as exc:
        return _fail(f"cannot write {exc.filename}: {exc.strerror}")
    print(
        f"wrote the private key to {args.path} (mode 0600) and its public key to "
        f"{args.path}.pub; key id {signer.key_id}"
    )
    return 0


def _audit_export(args: argparse.Namespace) -> int:
    try:
        since, until = _instant(args.since, "--since"), _instant(args.until, "--until")
        with _output(args.output) as out:
            count = asyncio.run(
                _on_trail(
                    args.database_url,
                    lambda trail: _exported(trail, out, args, since=since, until=until),
                )
            )
    except _AuditUnavailable as exc:
        print(f"gatehouse: {exc}", file=sys.stderr)
        return 2
    print(f"gatehouse: exported {count} events", file=sys.stderr)
    return 0


async def _on_trail(url: str | None, work: Callable[[AuditTrail], Awaitable[T]]) -> T:
    """Run `work` on the audit trail of the database at `url`, as one line on failure."""
    return await _on_engine(url, lambda engine: work(AuditTrail(engine)))


async def _on_engine(url: str | None, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run `work` on the gateway's database at `url`, as one line on failure."""
    url = url or Settings().database_url
    try:
        _require_sqlite_file(url)
        engine = create_engine(url)
    except SQLAlchemyError as exc:
        raise _AuditUnavailable(f"bad database URL: {_one_line(exc)}") from exc
    try:
        return await work(engine)
    except (SQLAlchemyError, OSError) as exc:
        raise _AuditUnavailable(f"cannot read the audit trail: {_one_line(exc)}") from exc
    finally:
        await engine.dispose()


async def _exported(
    trail: AuditTrail,
    out: TextIO,
    args: argparse.Namespace,
    *,
    since: datetime | None,
    until: datetime | None,
) -> int:
    """Write the events asked for, then record in the trail that a copy was taken: by
    whom as the operating system knows them (the command has no principal), of what."""
    count = await trail.export(
        out,
        format=args.format,
        since=since,
        until=until,
        principal=args.principal,
        action_kind=args.action_kind,
    )
    asked = {"since": args.since, "until": args.until, "principal": args.principal}
    asked["action_kind"] = args.action_kind
    await trail.append(
        export_event(
            principal="gatehouse",
            principal_kind="system",
            on_behalf_of=None,
            channel="cli",
            trace_id=uuid.uuid4().hex,
            export="events",
            format=args.format,
            filters={name: value for name, value in asked.items() if value},
            rows=count,
            os_user=_os_user(),
            host=socket.gethostname(),
            output=str(args.output) if args.output else "stdout",
        )
    )
    return count


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid may have no name
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _require_sqlite_file(url: str) -> None:
    # Connecting would create an empty SQLite file where the user mistyped a path.
    parsed = make_url(url)
    path = parsed.database
    in_file = parsed.get_backend_name() == "sqlite" and path not in (None, "", ":memory:")
    if in_file and not Path(str(path)).is_file():
        raise _AuditUnavailable(f"no database file at {path}")


def _one_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _instant(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        example = "2025-01-31 or 2025-01-31T09:00:00+01:00"
        raise _AuditUnavailable(
            f"{flag}: {text!r} is not an ISO 8601 date or time ({example})"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    try:
        file = path.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise _AuditUnavailable(f"cannot write {path}: {exc.strerror}") from exc
    with file:
        yield file
