"""The worker's metrics (docs/metrics.md, `tether_worker_*`) on an injected CollectorRegistry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from tether_runtime.metrics import LATENCY_BUCKETS, register_build_info

__all__ = ["LATENCY_BUCKETS", "WorkerMetrics"]


class WorkerMetrics:
    """Every tether_worker_* series, plus tether_build_info and the process collector."""

    def __init__(self, registry: CollectorRegistry, *, budget_tokens: int, process: bool = True) -> None:
        self.registry = registry
        register_build_info(registry, "gpu_worker")
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
