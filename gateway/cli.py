"""The `gatehouse` command: demo, serve."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.config import load_config
from gateway.demo import running_estate, write_keys_file
from gateway.errors import ConfigError
from gateway.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `gatehouse` subcommand; exit status 0 on success."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"gatehouse: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatehouse", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="start the demo estate and the gateway over it")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--state-dir", type=Path, default=Path(".gatehouse-demo"))
    demo.set_defaults(run=_demo)

    serve = commands.add_parser("serve", help="serve the gateway for a configuration file")
    serve.add_argument("--config", type=Path, help="TOML file (default: $GATEHOUSE_CONFIG)")
    serve.add_argument("--host", help="listen address (default: $GATEHOUSE_HOST)")
    serve.add_argument("--port", type=int, help="listen port (default: $GATEHOUSE_PORT)")
    serve.set_defaults(run=_serve)
    return parser


def _serve(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k in ("config", "host", "port") and v}
    settings = Settings(**overrides)
    app = create_app(settings, load_config(settings.config))
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


def _demo(args: argparse.Namespace) -> int:
    with running_estate(args.state_dir) as estate:
        settings = Settings(host=args.host, port=args.port)
        app = create_app(settings, estate.config())
        keys_file = write_keys_file(estate)
        base = f"http://{args.host}:{args.port}"
        print(_banner(base, estate.crm.url, estate.erp_url, estate.keys, keys_file), flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _banner(base: str, crm: str, erp: str, keys: dict[str, str], keys_file: Path) -> str:
    width = max(len(name) for name in keys)
    lines = [
        "Gatehouse demo is running. Ctrl-C stops everything.",
        "",
        f"  GraphQL    {base}/graphql   (GraphiQL in a browser; send the key as a header)",
        f"  ERP        {erp}",
        f"  CRM        {crm}",
        "",
        "API keys (Authorization: Bearer <key>):",
        *(f"  {name:<{width}}  {key}" for name, key in keys.items()),
        "",
        f"The keys are also in {keys_file} (source it to get $GATEHOUSE_KEY_<NAME>).",
        "",
        "Try:",
        f'  curl -s {base}/graphql -H "Authorization: Bearer {keys["olivia"]}" \\',
        "    -H 'Content-Type: application/json' \\",
        '    -d \'{"query": "{ customer(id: \\"C-00001\\") { name email balance { outstanding '
        "{ amount currency } } freshness { system ageSeconds status } } }\"}'",
    ]
    return "\n".join(lines)
