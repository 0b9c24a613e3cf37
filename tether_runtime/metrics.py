"""What the metrics of every component share (docs/metrics.md): the bucket layouts and the build info.

The bucket layouts are part of the catalog: every SLO threshold is one of their boundaries, and changing one
breaks aggregation across versions during a rollout (docs/observability.md), so they live here once.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from tether_runtime.version import version

__all__ = ["ITL_BUCKETS", "LATENCY_BUCKETS", "register_build_info"]

# TTFT, turn duration, cold restore, upstream connect, queue wait: 1 ms to 80 s, dense around 0.5 s.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 40, 80,
)  # fmt: skip
# Inter-token latency: 1 ms to 2.5 s, dense between 10 and 200 ms where decode steps fall.
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)


def register_build_info(
    registry: CollectorRegistry, component: str, *, build_version: str | None = None
) -> Gauge:
    """`tether_build_info{component,version} 1` on `registry`; the version defaults to the installed one."""
    gauge = Gauge(
        "tether_build_info",
        "The running build: 1 per process, by component and version.",
        ["component", "version"],
        registry=registry,
    )
    gauge.labels(component=component, version=build_version or version()).set(1)
    return gauge
