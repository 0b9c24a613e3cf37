"""vLLM's own metrics on the worker's /metrics, next to Tether's.

vLLM's Prometheus stat logger (created by `AsyncLLM` when stats are on, which the vllm engine asks for)
registers its series in prometheus_client's global registry: `vllm:num_requests_running`,
`vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`, `vllm:prefix_cache_queries_total`,
`vllm:prefix_cache_hits_total`, `vllm:prompt_tokens_total`, `vllm:generation_tokens_total`, ... (labels
`model_name` and `engine`). The worker serves its own registry, so this collector, registered there,
re-exports every family whose name starts with `vllm:` from vLLM's registry at each scrape. Nothing is
copied or renamed: the dashboards query vLLM's names (docs/metrics.md lists the ones they use).

The worker process must not set PROMETHEUS_MULTIPROC_DIR: vLLM then writes its series to files for a
multi-process collector instead of the global registry.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["VLLM_PREFIX", "VllmMetricsBridge"]

VLLM_PREFIX = "vllm:"


class VllmMetricsBridge(Collector):
    """Re-exports the `vllm:` families of another registry (vLLM's) on the registry it is registered on."""

    def __init__(self, source: CollectorRegistry | None = None, prefix: str = VLLM_PREFIX) -> None:
        self._source = source
        self._prefix = prefix

    def collect(self) -> Iterator[Metric]:
        source = self._source if self._source is not None else REGISTRY
        for family in source.collect():
            if family.name.startswith(self._prefix):
                yield family

    def describe(self) -> list[Metric]:
        # The names are vLLM's and appear once its engine runs: nothing to reserve at registration.
        return []
