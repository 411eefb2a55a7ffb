"""`gatehouse drift`: one sweep against the configured estate, every mismatch printed.

Exit status: 0 every copy in sync (differences still within their delay included), 1 drift
found, 2 a configuration or usage error, 3 no drift found but a copy could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timedelta
from typing import TextIO

from sqlalchemy.exc import SQLAlchemyError

from gateway.config import GatewayConfig, load_config
from gateway.connectors import build_connectors
from gateway.database import SchemaOutdated, create_engine, create_schema
from gateway.drift import MASKED, CopyReport, DriftStatus, Finding, SweepReport, sweep_estate
from gateway.settings import Settings

EXIT_IN_SYNC, EXIT_DRIFT, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3


def run_drift(args: argparse.Namespace) -> int:
    """Sweep every copy (or those of `--entity`), print the findings, exit by what was found."""
    settings = Settings(**({"config": args.config} if args.config else {}))
    config = load_config(settings.config)
    only = args.entity or None
    if unknown := [name for name in only or [] if name not in config.entities]:
        print(f"gatehouse: --entity: no entity named {', '.join(unknown)}", file=sys.stderr)
        return EXIT_USAGE
    if not any(config.entities[name].copies for name in only or config.entities):
        print("gatehouse: no copies are declared ([entities.<Entity>.copies.<name>])")
        return EXIT_IN_SYNC
    try:
        report = asyncio.run(_sweep(config, settings.database_url, only))
    except (SQLAlchemyError, OSError, SchemaOutdated) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"gatehouse: the gateway database: {first}", file=sys.stderr)
        return EXIT_USAGE
    write_report(report, sys.stdout)
    return exit_status(report)


async def _sweep(config: GatewayConfig, database_url: str, only: list[str] | None) -> SweepReport:
    connectors = build_connectors(config)
    engine = create_engine(database_url)
    try:
        await create_schema(engine)
        return await sweep_estate(config=config, connectors=connectors, engine=engine, only=only)
    finally:
        for connector in connectors.values():
            await connector.close()
        await engine.dispose()


def exit_status(report: SweepReport) -> int:
    """1 on drift, else 3 when a copy could not be read, else 0."""
    if report.drifting:
        return EXIT_DRIFT
    if any(copy.status is DriftStatus.UNKNOWN for copy in report.copies):
        return EXIT_UNKNOWN
    return EXIT_IN_SYNC


def write_report(report: SweepReport, out: TextIO) -> None:
    """Each copy: its verdict, then one line per record that differs."""
    for copy in report.copies:
        out.write(_heading(copy) + "\n")
        for finding in copy.findings:
            out.write("  " + finding_line(finding, copy) + "\n")
    counts = {status: sum(1 for c in report.copies if c.status is status) for status in DriftStatus}
    copies = "copy" if len(report.copies) == 1 else "copies"
    out.write(
        f"{len(report.copies)} {copies}: {counts[DriftStatus.DRIFT]} drifting, "
        f"{counts[DriftStatus.UNKNOWN]} unknown, {counts[DriftStatus.IN_SYNC]} in sync "
        f"({report.seconds:.2f}s)\n"
    )


def _heading(copy: CopyReport) -> str:
    name = f"{copy.entity}.{copy.field} copied in {copy.holder} ({copy.copy})"
    authority = f"{copy.authority} is authoritative"
    if copy.status is DriftStatus.UNKNOWN:
        return f"{name}: UNKNOWN, not checked: {copy.error}; {authority}"
    drift, lag = copy.count(DriftStatus.DRIFT), copy.count(DriftStatus.LAGGING)
    lagging = f", {lag} within their delay" if lag else ""
    return (
        f"{name}: {copy.status.value}, {drift} of {copy.checked} records drift{lagging}; "
        f"{authority}"
    )


def finding_line(finding: Finding, copy: CopyReport) -> str:
    """One record: key, both values with their ages, status and since when."""
    record = _value(finding.record_value, finding.masked)
    held = _value(finding.copy_value, finding.masked)
    record_age, held_age = (
        _age(finding, finding.record_updated_at),
        _age(finding, finding.copy_updated_at),
    )
    return (
        f"{finding.key}  {copy.authority}: {record} (age {record_age})"
        f"  {copy.holder}: {held} (age {held_age})"
        f"  {finding.status.value} since {finding.first_seen:%Y-%m-%dT%H:%M:%SZ}"
    )


def _value(value: str | None, masked: bool) -> str:
    if masked:
        return MASKED
    return "absent" if value is None else value


def _age(finding: Finding, at: datetime | None) -> str:
    age = finding.age(at)
    return "unknown" if age is None else duration(age)


def duration(age: timedelta) -> str:
    """A short human duration: 45s, 12m, 3h 5m, 2d 4h."""
    seconds = max(0, int(age.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"
