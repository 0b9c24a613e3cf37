"""The router's Prometheus metrics (names from docs/metrics.md), on an injected CollectorRegistry.

Relayed bytes are counted per connection in plain ints on the data path (a prometheus_client `inc()` per
chunk would cost more than the relay itself) and summed at scrape time by `BytesCollector`: bytes of closed
connections plus the live counts of open ones, so the counter is exact and monotonic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from router.core.errors import RejectReason
from router.core.head import KeySource, Mode
from tether_runtime.metrics import LATENCY_BUCKETS, register_build_info

__all__ = ["DIRECTIONS", "LATENCY_BUCKETS", "ByteTotals", "RouterMetrics"]

DIRECTIONS = ("client_to_server", "server_to_client")
_REJECT_REASONS: tuple[RejectReason, ...] = (
    "malformed", "head_too_large", "head_timeout", "overloaded", "no_upstream", "internal",
)  # fmt: skip
_KEY_SOURCES: tuple[KeySource, ...] = ("header", "query", "none")


class CountsBytes(Protocol):
    """A live connection as the byte collector sees it."""

    c2s: int
    s2c: int

    @property
    def mode(self) -> Mode | None:
        """`ws` or `http` once known."""


class ByteTotals:
    """Bytes of connections that have closed, per mode and direction."""

    def __init__(self) -> None:
        self.closed: dict[tuple[Mode, str], int] = {(m, d): 0 for m in Mode for d in DIRECTIONS}

    def add(self, conn: CountsBytes) -> None:
        """Fold a closed connection's counts in."""
        if conn.mode is not None:
            self.closed[conn.mode, DIRECTIONS[0]] += conn.c2s
            self.closed[conn.mode, DIRECTIONS[1]] += conn.s2c


class BytesCollector(Collector):
    """`tether_router_bytes_total{mode,direction}` = closed totals + live connections' counts."""

    def __init__(self, totals: ByteTotals, live: Callable[[], Iterable[CountsBytes]]) -> None:
        self._totals = totals
        self._live = live

    def collect(self) -> Iterator[Metric]:
        counts = dict(self._totals.closed)
        for conn in list(self._live()):
            if conn.mode is not None:
                counts[conn.mode, DIRECTIONS[0]] += conn.c2s
                counts[conn.mode, DIRECTIONS[1]] += conn.s2c
        family = CounterMetricFamily(
            "tether_router_bytes", "Raw bytes relayed (head included)", labels=["mode", "direction"]
        )
        for (mode, direction), value in sorted(counts.items()):
            family.add_metric([mode.value, direction], value)
        yield family


class RouterMetrics:
    """Every router metric, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry, live: Callable[[], Iterable[CountsBytes]]) -> None:
        self.registry = registry
        self.bytes = ByteTotals()
        registry.register(BytesCollector(self.bytes, live))
        self.connections = Gauge(
            "tether_router_connections", "Connections being relayed", ["mode"], registry=registry
        )
        self.routed = Counter(
            "tether_router_routed", "Connections routed", ["mode", "key_source"], registry=registry
        )
        self.rejected = Counter(
            "tether_router_rejected", "Connections refused before relaying", ["reason"], registry=registry
        )
        self.upstream_failures = Counter(
            "tether_router_upstream_failures",
            "Box connects that failed (then the ring successor is tried)",
            ["reason"],
            registry=registry,
        )
        self.connect_seconds = Histogram(
            "tether_router_upstream_connect_seconds",
            "Time to connect to a box",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ring_members = Gauge("tether_router_ring_members", "Members in the ring", registry=registry)
        self.ring_version = Gauge(
            "tether_router_ring_version_info",
            "1 for the current ring version (digest of the sorted members)",
            ["version"],
            registry=registry,
        )
        self.ring_changes = Counter(
            "tether_router_ring_changes", "Membership changes applied", registry=registry
        )
        register_build_info(registry, "router")
        ProcessCollector(registry=registry)
        for mode in Mode:
            self.connections.labels(mode.value)
            for source in _KEY_SOURCES:
                self.routed.labels(mode.value, source)
        for reason in _REJECT_REASONS:
            self.rejected.labels(reason)
        for failure in ("refused", "timeout"):
            self.upstream_failures.labels(failure)
        self._version: str | None = None

    def set_ring(self, version: str, members: int) -> None:
        """Export the current ring version (the previous version's series is removed)."""
        if self._version is not None and self._version != version:
            self.ring_version.remove(self._version)
        self._version = version
        self.ring_version.labels(version).set(1)
        self.ring_members.set(members)
