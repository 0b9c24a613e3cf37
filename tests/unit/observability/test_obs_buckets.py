"""The bucket layouts the components register are the catalog's (docs/metrics.md)."""

from __future__ import annotations

from deploy.grafana.metric_refs import bucket_layouts
from tether_runtime.metrics import ITL_BUCKETS, LATENCY_BUCKETS


def test_the_shared_buckets_are_the_catalog_layouts() -> None:
    layouts = bucket_layouts()
    assert layouts["LATENCY_BUCKETS"] == tuple(float(b) for b in LATENCY_BUCKETS)
    assert layouts["ITL_BUCKETS"] == tuple(float(b) for b in ITL_BUCKETS)
