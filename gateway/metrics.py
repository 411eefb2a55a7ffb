"""Prometheus metrics at /metrics, with the official client library and a registry per app.

Request counts and latency by operation, cache hits and misses, write outcomes, pending
approvals and cached records by freshness status are recorded as they happen or refreshed
at scrape time; source calls, errors and circuit breaker states are read from each
connector's own counters.

With several worker processes (`gatehouse serve --workers N`, which sets
PROMETHEUS_MULTIPROC_DIR), every worker writes its metrics to files there and /metrics,
whichever worker answers it, reads them all (prometheus_client's multiprocess mode):
    counters, latency           summed over every worker that ever ran, so they never drop
    pending approvals           the newest value (any worker reads the same database)
    cached records              summed over the live workers (each has a cache of its own)
    source calls, errors, refusals  each worker's connector counters, published at scrape
                                time and every housekeeping round; summed like counters
    source up                   the least over the live workers: 0 if one's last call failed
    breaker state               how many live workers' breakers are in each state
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from sources.breaker import BreakerState
from sources.connector import Connector

# prometheus_client's own switch to multiprocess mode, read when it is imported.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """The gateway's metrics, in one registry."""

    def __init__(self, connectors: Callable[[], Mapping[str, Connector]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gatehouse_requests",
            "Requests by operation and outcome.",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gatehouse_request_seconds",
            "Request latency by operation.",
            ["operation"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.cache = Counter(
            "gatehouse_cache_lookups",
            "Cache lookups by entity and result (hit, miss).",
            ["entity", "result"],
            registry=self.registry,
        )
        self.writes = Counter(
            "gatehouse_writes",
            "Write outcomes by action kind and status.",
            ["kind", "status"],
            registry=self.registry,
        )
        self.pending = Gauge(
            "gatehouse_pending_approvals",
            "Actions waiting for a human's decision.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.deliveries = Counter(
            "gatehouse_notification_deliveries",
            "Notification delivery attempts by channel and outcome (delivered, retry, failed).",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.notifications = Gauge(
            "gatehouse_notifications",
            "Notifications in the outbox by channel and status (FAILED ones need a person).",
            ["channel", "status"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.alerts = Gauge(
            "gatehouse_alerts_open",
            "Open owner alerts by kind and owner.",
            ["kind", "owner"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.freshness = Gauge(
            "gatehouse_cached_records",
            "Cached records by entity and freshness status.",
            ["entity", "status"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        directory = os.environ.get(MULTIPROCESS_DIR)
        self._sources: _SourceFiles | None = None
        self._exposed = self.registry
        if directory is None:
            self.registry.register(_SourceCollector(connectors))
        else:
            self._sources = _SourceFiles(connectors, self.registry)
            self._exposed = CollectorRegistry()
            # prometheus_client leaves this one unannotated.
            MultiProcessCollector(self._exposed, path=directory)  # type: ignore[no-untyped-call]

    @property
    def shared(self) -> bool:
        """Whether several workers share these metrics (multiprocess mode)."""
        return self._sources is not None

    def publish(self) -> None:
        """Write this worker's connector counters where the other workers read them."""
        if self._sources is not None:
            self._sources.publish()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of every worker, when shared)."""
        return generate_latest(self._exposed)


class _SourceCollector(Collector):
    """Source calls, errors and health, straight from the connectors' counters."""

    def __init__(self, connectors: Callable[[], Mapping[str, Connector]]) -> None:
        self._connectors = connectors

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        calls = CounterMetricFamily(
            "gatehouse_source_calls",
            "Round-trips to each system of record.",
            labels=["source", "operation"],
        )
        errors = CounterMetricFamily(
            "gatehouse_source_errors", "Failed calls to each system of record.", labels=["source"]
        )
        up = GaugeMetricFamily(
            "gatehouse_source_up", "1 if the last call to the source succeeded.", labels=["source"]
        )
        breaker = GaugeMetricFamily(
            "gatehouse_source_breaker_state",
            "1 for the state each source's circuit breaker is in (closed, open, half_open).",
            labels=["source", "state"],
        )
        refused = CounterMetricFamily(
            "gatehouse_source_refused_calls",
            "Calls failed fast by a source's open breaker, never sent to it.",
            labels=["source"],
        )
        for name, connector in self._connectors().items():
            for operation, count in connector.stats.by_operation.items():
                calls.add_metric([name, operation], count)
            errors.add_metric([name], connector.stats.errors)
            up.add_metric([name], 1.0 if connector.stats.healthy is not False else 0.0)
            state = connector.stats.breaker.state
            for each in BreakerState:
                breaker.add_metric([name, each.value], 1.0 if each is state else 0.0)
            refused.add_metric([name], connector.stats.breaker.refused)
        return [calls, errors, up, breaker, refused]


class _SourceFiles:
    """With several workers: each one's connector counters and health, in the shared files."""

    def __init__(
        self, connectors: Callable[[], Mapping[str, Connector]], registry: CollectorRegistry
    ) -> None:
        self._connectors = connectors
        self._published: dict[tuple[str, ...], int] = {}
        self.calls = Counter(
            "gatehouse_source_calls",
            "Round-trips to each system of record.",
            ["source", "operation"],
            registry=registry,
        )
        self.errors = Counter(
            "gatehouse_source_errors",
            "Failed calls to each system of record.",
            ["source"],
            registry=registry,
        )
        self.refused = Counter(
            "gatehouse_source_refused_calls",
            "Calls failed fast by a source's open breaker, never sent to it.",
            ["source"],
            registry=registry,
        )
        self.up = Gauge(
            "gatehouse_source_up",
            "1 if the last call to the source succeeded, in every worker.",
            ["source"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.breaker = Gauge(
            "gatehouse_source_breaker_state",
            "Workers whose circuit breaker for the source is in each state "
            "(closed, open, half_open).",
            ["source", "state"],
            registry=registry,
            multiprocess_mode="livesum",
        )

    def publish(self) -> None:
        """Bring the files up to this worker's counters: each counter by what it gained."""
        for name, connector in self._connectors().items():
            stats = connector.stats
            for operation, count in stats.by_operation.items():
                self._advance(self.calls, ("calls", name, operation), count)
            self._advance(self.errors, ("errors", name), stats.errors)
            self._advance(self.refused, ("refused", name), stats.breaker.refused)
            self.up.labels(name).set(1.0 if stats.healthy is not False else 0.0)
            state = stats.breaker.state
            for each in BreakerState:
                self.breaker.labels(name, each.value).set(1.0 if each is state else 0.0)

    def _advance(self, counter: Counter, key: tuple[str, ...], total: int) -> None:
        child = counter.labels(*key[1:])  # shown from the start, at 0 as a single process shows it
        gained = total - self._published.get(key, 0)
        if gained > 0:
            child.inc(gained)
            self._published[key] = total
