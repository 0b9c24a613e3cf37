"""The worker's metrics (docs/metrics.md, `tether_worker_*`) on an injected CollectorRegistry."""

from __future__ import annotations

from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

__all__ = ["LATENCY_BUCKETS", "WorkerMetrics", "build_version"]

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 40, 80,
)  # fmt: skip


def build_version() -> str:
    """The installed package version (for tether_build_info)."""
    try:
        return metadata.version("tether")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


class WorkerMetrics:
    """Every tether_worker_* series, plus tether_build_info and the process collector."""

    def __init__(self, registry: CollectorRegistry, *, budget_tokens: int, process: bool = True) -> None:
        self.registry = registry
        build = Gauge(
            "tether_build_info", "Build of this process.", ["component", "version"], registry=registry
        )
        build.labels(component="gpu_worker", version=build_version()).set(1)
        if process:
            ProcessCollector(registry=registry)
        self.generate_total = Counter(
            "tether_worker_generate_total",
            "Generate RPCs finished, by gRPC status.",
            ["code"],
            registry=registry,
        )
        self.prefill_tokens = Counter(
            "tether_worker_prefill_tokens_total",
            "Prompt tokens, cached vs computed.",
            ["kind"],
            registry=registry,
        )
        self.output_tokens = Counter(
            "tether_worker_output_tokens_total", "Generated tokens.", registry=registry
        )
        self.tool_calls = Counter(
            "tether_worker_tool_calls_total",
            "What a model's tool-call parser made of its outputs: complete calls, malformed calls, "
            "call-like text left as text (torch with a checkpoint, vllm).",
            ["result"],
            registry=registry,
        )
        self.precondition_failures = Counter(
            "tether_worker_precondition_failures_total",
            "Delta requests whose prefix the worker does not hold.",
            ["reason"],
            registry=registry,
        )
        self.prefix_lookups = Counter(
            "tether_worker_prefix_cache_lookups_total",
            "Block-hash prefix lookups of keyless (full-context) requests.",
            ["result"],
            registry=registry,
        )
        self.kv_tokens = Gauge(
            "tether_worker_kv_cache_tokens", "Tokens held in the cache.", registry=registry
        )
        self.kv_budget = Gauge("tether_worker_kv_cache_budget_tokens", "The token budget.", registry=registry)
        self.kv_chains = Gauge("tether_worker_kv_cache_chains", "Chains held.", registry=registry)
        self.evictions = Counter(
            "tether_worker_kv_cache_evictions_total",
            "Chains evicted under the budget (LRU).",
            registry=registry,
        )
        self.evicted_tokens = Counter(
            "tether_worker_kv_cache_evicted_tokens_total",
            "Tokens evicted under the budget.",
            registry=registry,
        )
        self.retained_tokens = Gauge(
            "tether_worker_kv_cache_retained_tokens",
            "Tokens of chains whose retention (prompt_cache_options.ttl) has not expired.",
            registry=registry,
        )
        self.retained_bytes = Gauge(
            "tether_worker_kv_cache_retained_bytes",
            "KV bytes of retained chains: retained tokens x the engine's KV bytes per token (0: the sim).",
            registry=registry,
        )
        self.retained_budget = Gauge(
            "tether_worker_kv_cache_retained_budget_tokens",
            "Most tokens retained chains may hold (the retained share of the budget).",
            registry=registry,
        )
        self.retained_evictions = Counter(
            "tether_worker_kv_cache_retained_evictions_total",
            "Retained chains evicted before their retention expired (no unretained chain was left).",
            registry=registry,
        )
        self.retention_requests = Counter(
            "tether_worker_retention_requests_total",
            "Commits that asked for retention, by result (granted, or denied: beyond the share).",
            ["result"],
            registry=registry,
        )
        self.running = Gauge(
            "tether_worker_running_sequences", "Sequences in the running batch.", registry=registry
        )
        self.queue_depth = Gauge(
            "tether_worker_queue_depth", "Requests waiting for a batch slot.", registry=registry
        )
        self.queue_wait = Histogram(
            "tether_worker_queue_wait_seconds",
            "Time waiting for a batch slot.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.serving = Gauge(
            "tether_worker_serving", "1 while health is SERVING, 0 while draining.", registry=registry
        )
        self.kv_budget.set(budget_tokens)
        for kind in ("cached", "computed"):
            self.prefill_tokens.labels(kind=kind)
        for result in ("hit", "miss"):
            self.prefix_lookups.labels(result=result)
        for result in ("call", "malformed", "text"):
            self.tool_calls.labels(result=result)
        for result in ("granted", "denied"):
            self.retention_requests.labels(result=result)
        for reason in ("unknown_cache_key", "length_mismatch", "digest_mismatch"):
            self.precondition_failures.labels(reason=reason)
