"""Prometheus metrics at /metrics, with the official client library and a registry per app.

Request counts and latency by operation, cache hits and misses, write outcomes, pending
approvals and cached records by freshness status are recorded as they happen or refreshed
at scrape time; source calls, errors and circuit breaker states are read from each
connector's own counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sources.breaker import BreakerState
from sources.connector import Connector


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
        )
        self.freshness = Gauge(
            "gatehouse_cached_records",
            "Cached records by entity and freshness status.",
            ["entity", "status"],
            registry=self.registry,
        )
        self.registry.register(_SourceCollector(connectors))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


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
