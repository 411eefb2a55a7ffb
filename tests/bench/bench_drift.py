"""Drift sweep time for 10,000 SKUs against the demo storefront.

    python -m tests.bench.bench_drift [--skus 10000] [--runs 5]

An ERP SQLite file seeded with --skus items (the demo estate's generator, three locations
each) and the demo storefront in its own process holding its copy of WH-BER's available stock,
every 40th SKU three units off. Each run is one full sweep as `gatehouse drift` and
the periodic chore run it: the storefront read in pages of 1,000 over loopback HTTP, the ERP's
items with their stock levels in pages of 500 (the demo's max_page_size), compared, and the
findings stored in the gateway's SQLite database. The median of --runs runs is reported, with
the slowest and fastest; each run must find exactly the SKUs seeded off.

    target: median sweep under 5 s for 10,000 SKUs (no per-record round trip)

Not part of the test run; exits 1 when a run finds other drift than seeded or misses the target.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.connectors import build_connectors
from gateway.database import create_engine, create_schema
from gateway.demo import CONFIG_TEMPLATE
from gateway.drift import DriftStatus, sweep_estate
from sources.demo import build_estate, create_erp
from sources.demo.process import StorefrontProcess
from sources.demo.storefront_store import seed_storefront

TARGET_SECONDS = 5.0


def main(argv: Sequence[str] | None = None) -> int:
    """Seed, start the storefront, sweep --runs times, print the figures."""
    args = _arguments(argv)
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as folder:
        root = Path(folder)
        estate = build_estate(skus=args.skus)
        erp_url = f"sqlite+aiosqlite:///{root / 'erp.db'}"
        asyncio.run(create_erp(erp_url, estate))
        held = seed_storefront(root / "storefront.db", estate)
        with StorefrontProcess.start(root / "storefront.db", timeout=60) as storefront:
            config = _stock_config(erp_url, storefront.url)
            seconds, drifting = asyncio.run(_runs(config, root, args.runs))
    expected = held // 40
    median = statistics.median(seconds)
    print(f"drift sweep, {args.skus} SKUs ({held} held by the storefront), {args.runs} runs")
    print(f"  median {median:.3f}s  min {min(seconds):.3f}s  max {max(seconds):.3f}s")
    print(f"  drifting SKUs found per run: {sorted(set(drifting))} (seeded: {expected})")
    verdict = "met" if median < TARGET_SECONDS else "MISSED"
    print(f"  target: median under {TARGET_SECONDS:.0f}s: {verdict}")
    return 0 if median < TARGET_SECONDS and set(drifting) == {expected} else 1


async def _runs(config: GatewayConfig, root: Path, runs: int) -> tuple[list[float], list[int]]:
    connectors = build_connectors(config)
    engine = create_engine(f"sqlite+aiosqlite:///{root / 'gatehouse.db'}")
    await create_schema(engine)
    seconds: list[float] = []
    drifting: list[int] = []
    try:
        for _ in range(runs):
            report = await sweep_estate(config=config, connectors=connectors, engine=engine)
            (stock,) = [c for c in report.copies if c.entity == "InventoryItem"]
            assert stock.status is not DriftStatus.UNKNOWN, stock.error
            seconds.append(report.seconds)
            drifting.append(stock.count(DriftStatus.DRIFT))
    finally:
        for connector in connectors.values():
            await connector.close()
        await engine.dispose()
    return seconds, drifting


def _stock_config(erp_url: str, storefront_url: str) -> GatewayConfig:
    """The demo configuration's ERP, storefront and InventoryItem (with its storefront copy)
    alone: the rest of the demo (CRM, notifications) plays no part in a sweep."""
    raw = tomllib.loads(CONFIG_TEMPLATE.read_text(encoding="utf-8"))
    sources = raw["sources"]
    sources["erp"]["url"], sources["storefront"]["url"] = erp_url, storefront_url
    return GatewayConfig.model_validate(
        {
            "sources": {name: sources[name] for name in ("erp", "storefront")},
            "entities": {"InventoryItem": raw["entities"]["InventoryItem"]},
            "limits": raw["limits"],
            "base_dir": CONFIG_TEMPLATE.parent,
        }
    )


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
