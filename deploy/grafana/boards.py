"""The four Tether dashboards: overview, router and ring, sessions and handoff, workers.

Every query uses a 5-minute window, the same as the alert rules, so a panel shows what an alert
evaluates. Quantiles follow ``histogram_quantile(q, sum by (le) (rate(x_bucket[5m])))``. Metric names
come from docs/metrics.md; tests/unit/observability checks every one of them against it.
"""

from __future__ import annotations

from typing import Any

from deploy.grafana.panels import Panel, annotation, dashboard, stat, table, timeseries

TTFT = "tether_box_time_to_first_token_seconds"
TTFT_SLO = 0.5  # seconds, a LATENCY_BUCKETS boundary (docs/metrics.md)
ERROR_RATIO_ALERT = 0.05  # TetherHighErrorRatio
UPLOAD = 'tether_box_bytes_total{direction="client_to_server"}'
WS_UPLOAD = 'tether_box_bytes_total{mode="ws", direction="client_to_server"}'
WS_FULL_CONTEXT = 'tether_box_full_context_bytes_total{mode="ws"}'


def quantile(q: float, metric: str, by: str = "") -> str:
    """``histogram_quantile(q, sum by (le[, by]) (rate(metric_bucket[5m])))``."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[5m])))"


def rate(selector: str, by: str = "") -> str:
    """``sum [by (...)] (rate(selector[5m]))``."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({selector}[5m]))"


def share(part: str, whole: str, by: str = "") -> str:
    """Rate of ``part`` over rate of ``whole``, both summed (by ``by``)."""
    return f"{rate(part, by)} / {rate(whole, by)}"


def p50_p99(title: str, description: str, metric: str, *, slo: float | None = None, width: int = 12) -> Panel:
    """p50 and p99 of a latency histogram, the SLO (a bucket boundary) drawn as a red line."""
    return timeseries(
        title,
        description,
        [(quantile(0.5, metric), "p50"), (quantile(0.99, metric), "p99")],
        "s",
        thresholds=[(slo, "red")] if slo is not None else (),
        width=width,
    )


def per_instance(title: str, description: str, expr_by_instance: str, unit: str, **kw: Any) -> Panel:
    """One line per instance."""
    return timeseries(title, description, [(expr_by_instance, "{{instance}}")], unit, **kw)


# ------------------------------------------------------------------------------------------ overview


def _overview_traffic() -> list[Panel]:
    return [
        stat(
            "Responses / s",
            "Responses finished per second, all modes.",
            rate("tether_box_responses_total"),
            "reqps",
        ),
        stat(
            "WebSocket connections",
            "Open WebSocket connections on all boxes.",
            "sum(tether_box_websocket_connections)",
            "short",
        ),
        stat(
            "TTFT p50",
            "Median time to first token.",
            quantile(0.5, TTFT),
            "s",
            thresholds=[(TTFT_SLO, "red")],
        ),
        stat(
            "TTFT p99",
            f"p99 time to first token; SLO ≤ {TTFT_SLO} s (TetherHighTTFT).",
            quantile(0.99, TTFT),
            "s",
            thresholds=[(TTFT_SLO, "red")],
        ),
        stat(
            "Error ratio",
            "Responses finished with status failed / all responses (TetherHighErrorRatio).",
            share('tether_box_responses_total{status="failed"}', "tether_box_responses_total"),
            "percentunit",
            thresholds=[(0.01, "orange"), (ERROR_RATIO_ALERT, "red")],
        ),
        stat(
            "Upload bytes / s",
            "Client-to-server payload bytes per second, all modes.",
            rate(UPLOAD),
            "Bps",
        ),
        timeseries(
            "Responses / s by mode and status",
            "tether_box_responses_total by mode (ws, http, sse) and status.",
            [(rate("tether_box_responses_total", "mode, status"), "{{mode}} {{status}}")],
            "reqps",
        ),
        timeseries(
            "Payload bytes / s by mode and direction",
            "WebSocket frame payloads and HTTP bodies.",
            [(rate("tether_box_bytes_total", "mode, direction"), "{{mode}} {{direction}}")],
            "Bps",
        ),
    ]


def _overview_bytes_saved() -> list[Panel]:
    saved_range = f"sum(increase({WS_FULL_CONTEXT}[$__range])) - sum(increase({WS_UPLOAD}[$__range]))"
    return [
        stat(
            "WebSocket upload saved",
            "1 − WebSocket upload / the full-context upload the same turns would need.",
            f"1 - {rate(WS_UPLOAD)} / {rate(WS_FULL_CONTEXT)}",
            "percentunit",
            width=8,
        ),
        stat(
            "Full-context / WebSocket upload",
            "How many times more bytes the same turns would upload as full-context requests.",
            f"{rate(WS_FULL_CONTEXT)} / {rate(WS_UPLOAD)}",
            "suffix:×",
            width=8,
        ),
        stat(
            "Bytes saved in the range",
            "WebSocket mode: full-context equivalent − uploaded, over the dashboard's time range.",
            saved_range,
            "decbytes",
            instant=True,
            width=8,
        ),
        timeseries(
            "WebSocket upload vs full-context equivalent",
            "What WebSocket clients uploaded, and what the same turns would have uploaded as stateless "
            "full-context requests (the chain's input items + the turn).",
            [(rate(WS_UPLOAD), "uploaded (WebSocket)"), (rate(WS_FULL_CONTEXT), "full-context equivalent")],
            "Bps",
        ),
        timeseries(
            "Upload bytes saved / s by mode",
            "Full-context equivalent − client-to-server bytes. Stateless HTTP saves nothing; "
            "previous_response_id and WebSocket mode save the history.",
            [(f"{rate('tether_box_full_context_bytes_total', 'mode')} - {rate(UPLOAD, 'mode')}", "{{mode}}")],
            "Bps",
        ),
    ]


def _overview_latency() -> list[Panel]:
    within_slo = f'sum(rate({TTFT}_bucket{{le="{TTFT_SLO}"}}[5m])) / sum(rate({TTFT}_count[5m]))'
    return [
        p50_p99(
            "Time to first token", "response.create received → first output delta sent.", TTFT, slo=TTFT_SLO
        ),
        timeseries(
            "TTFT p99 by mode",
            "p99 time to first token per client mode.",
            [(quantile(0.99, TTFT, "mode"), "{{mode}}")],
            "s",
            thresholds=[(TTFT_SLO, "red")],
        ),
        timeseries(
            f"First tokens within {TTFT_SLO} s",
            'Share of first tokens in the le="0.5" bucket: the SLO holds while this stays ≥ 99 %.',
            [(within_slo, "within SLO")],
            "percentunit",
            thresholds=[(0.99, "green")],
            base="red",
            maximum=1,
            width=8,
        ),
        p50_p99(
            "Turn duration",
            "response.create received → terminal event sent.",
            "tether_box_turn_duration_seconds",
            width=8,
        ),
        p50_p99(
            "Inter-token latency",
            "Time between output deltas (ITL_BUCKETS).",
            "tether_box_inter_token_latency_seconds",
            width=8,
        ),
    ]


def _overview_errors_and_components() -> list[Panel]:
    return [
        timeseries(
            "Error ratio by mode",
            "Failed responses / all responses; the alert fires above 5 %.",
            [
                (
                    share(
                        'tether_box_responses_total{status="failed"}', "tether_box_responses_total", "mode"
                    ),
                    "{{mode}}",
                )
            ],
            "percentunit",
            thresholds=[(ERROR_RATIO_ALERT, "red")],
        ),
        timeseries(
            "Error events / s by code",
            "Error events and error bodies sent, by error code.",
            [(rate("tether_box_errors_total", "code"), "{{code}}")],
            "cps",
        ),
        table(
            "Running versions",
            "Processes per component and version (tether_build_info).",
            "count by (component, version) (tether_build_info)",
        ),
        timeseries(
            "CPU by component",
            "CPU seconds per second (cores) per component.",
            [
                (
                    "sum by (component) (rate(process_cpu_seconds_total[5m])"
                    " * on (job, instance) group_left (component) tether_build_info)",
                    "{{component}}",
                )
            ],
            "short",
        ),
    ]


def overview() -> dict[str, Any]:
    """Traffic, bytes saved by WebSocket mode, TTFT p50/p99, error ratio."""
    return dashboard(
        "tether-overview",
        "Tether / Overview",
        "Traffic, bytes saved by WebSocket mode, time to first token and errors. See docs/observability.md.",
        [
            ("Traffic", _overview_traffic()),
            ("Bytes saved by WebSocket mode", _overview_bytes_saved()),
            ("Latency", _overview_latency()),
            ("Errors and components", _overview_errors_and_components()),
        ],
    )


# ------------------------------------------------------------------------------------------ router


def _router_ring() -> list[Panel]:
    return [
        stat(
            "Ring members",
            "API boxes in the ring (largest value any replica reports).",
            "max(tether_router_ring_members)",
            "short",
        ),
        stat(
            "Ring versions in use",
            "Distinct ring versions across router replicas; more than 1 for 5 minutes "
            "fires TetherRingVersionMismatch.",
            "count(count by (version) (tether_router_ring_version_info == 1))",
            "short",
            thresholds=[(2, "red")],
        ),
        stat(
            "Router replicas",
            "Router processes reporting a ring.",
            "count(tether_router_ring_members)",
            "short",
        ),
        stat(
            "Ring changes in the range",
            "Membership changes applied, summed over replicas.",
            "sum(increase(tether_router_ring_changes_total[$__range]))",
            "short",
            instant=True,
        ),
        stat(
            "Connections relayed",
            "Connections being relayed now, all modes.",
            "sum(tether_router_connections)",
            "short",
            width=8,
        ),
        table(
            "Ring version per replica",
            "The ring version each replica routes with; all rows should agree.",
            "max by (instance, version) (tether_router_ring_version_info == 1)",
        ),
        per_instance(
            "Ring members per replica",
            "Members each replica has in its ring.",
            "max by (instance) (tether_router_ring_members)",
            "short",
        ),
    ]


def _router_connections() -> list[Panel]:
    return [
        timeseries(
            "Connections by mode",
            "Connections being relayed (ws: WebSocket, http: POST).",
            [("sum by (mode) (tether_router_connections)", "{{mode}}")],
            "short",
            width=8,
        ),
        timeseries(
            "Routed / s by key source",
            "Where the routing key came from; none goes to the least-loaded box.",
            [(rate("tether_router_routed_total", "mode, key_source"), "{{mode}} {{key_source}}")],
            "cps",
            width=8,
        ),
        timeseries(
            "Rejected / s by reason",
            "Connections refused before relaying.",
            [(rate("tether_router_rejected_total", "reason"), "{{reason}}")],
            "cps",
            width=8,
        ),
        timeseries(
            "Bytes relayed / s",
            "Raw bytes relayed by mode and direction (request head included).",
            [(rate("tether_router_bytes_total", "mode, direction"), "{{mode}} {{direction}}")],
            "Bps",
        ),
        timeseries(
            "Connections without a session key",
            "Share routed with key_source=none.",
            [
                (
                    share('tether_router_routed_total{key_source="none"}', "tether_router_routed_total"),
                    "no key",
                )
            ],
            "percentunit",
            maximum=1,
        ),
    ]


def _router_upstream() -> list[Panel]:
    connect = "tether_router_upstream_connect_seconds"
    return [
        p50_p99("Upstream connect time", "Router → API box TCP connect.", connect),
        timeseries(
            "Upstream connects within 1 ms",
            'Share in the le="0.001" bucket (router added latency SLO).',
            [
                (
                    f'sum(rate({connect}_bucket{{le="0.001"}}[5m])) / sum(rate({connect}_count[5m]))',
                    "within 1 ms",
                )
            ],
            "percentunit",
            maximum=1,
            width=6,
        ),
        timeseries(
            "Upstream failures / s",
            "Box connects that failed; the ring successor is tried next.",
            [(rate("tether_router_upstream_failures_total", "reason"), "{{reason}}")],
            "cps",
            width=6,
        ),
    ]


def router() -> dict[str, Any]:
    """Ring agreement and membership, relayed connections, upstream connects."""
    return dashboard(
        "tether-router",
        "Tether / Router and ring",
        "Router replicas: ring version agreement and membership, relayed connections and bytes, "
        "upstream connects. See docs/observability.md.",
        [("Ring", _router_ring()), ("Connections", _router_connections()), ("Upstream", _router_upstream())],
        annotations=[
            annotation(
                "Ring changes",
                "sum by (instance) (increase(tether_router_ring_changes_total[1m])) > 0",
                "ring changed",
                "blue",
            )
        ],
    )


# ------------------------------------------------------------------------------------------ sessions


def _sessions() -> list[Panel]:
    return [
        stat(
            "Sessions held",
            "Responses held in the session stores of all boxes.",
            "sum(tether_box_sessions)",
            "short",
        ),
        stat(
            "Session store",
            "Bytes accounted to the session stores.",
            "sum(tether_box_session_store_bytes)",
            "bytes",
        ),
        stat(
            "WebSocket connections",
            "Open WebSocket connections.",
            "sum(tether_box_websocket_connections)",
            "short",
        ),
        stat(
            "Lookups served from memory",
            "previous_response_id lookups answered from the box's memory.",
            share('tether_box_session_lookups_total{result="memory"}', "tether_box_session_lookups_total"),
            "percentunit",
        ),
        stat(
            "Redis",
            "Down when any box's last Redis operation failed.",
            "min(tether_box_redis_up)",
            "none",
            mappings=[("0", "down", "red"), ("1", "up", "green")],
        ),
        stat(
            "Boxes draining",
            "Boxes that received SIGTERM and are draining.",
            "sum(tether_box_draining)",
            "short",
            thresholds=[(1, "orange")],
        ),
        per_instance(
            "Sessions per box",
            "Responses held per box.",
            "sum by (instance) (tether_box_sessions)",
            "short",
            width=8,
        ),
        per_instance(
            "Session store bytes per box",
            "Bytes accounted to each box's session store.",
            "sum by (instance) (tether_box_session_store_bytes)",
            "bytes",
            width=8,
        ),
        timeseries(
            "Lookups / s by result",
            "previous_response_id lookups: memory (warm), redis (cold restore), miss.",
            [(rate("tether_box_session_lookups_total", "result"), "{{result}}")],
            "cps",
            width=8,
        ),
        timeseries(
            "New chains / s by reason",
            "Turns that start a new token chain instead of appending: new conversation, fork, header "
            "change (instructions, tools or model), busy chain. Forks and header changes resend the "
            "history to the worker.",
            [(rate("tether_box_chain_starts_total", "reason"), "{{reason}}")],
            "cps",
            width=8,
        ),
    ]


def _handoff() -> list[Panel]:
    restore = "tether_box_cold_restore_seconds"
    return [
        timeseries(
            "Cold restore time",
            "Redis restore of a chain; SLO lines at 10 ms (p50) and 1 s (p99).",
            [(quantile(0.5, restore), "p50"), (quantile(0.99, restore), "p99")],
            "s",
            thresholds=[(0.01, "orange"), (1, "red")],
            width=8,
        ),
        timeseries(
            "Cold restores / s",
            "Continuations restored from Redis.",
            [(rate(f"{restore}_count"), "restores")],
            "cps",
            width=8,
        ),
        per_instance(
            "Redis up per box",
            "1 when the box's last Redis operation succeeded.",
            "min by (instance) (tether_box_redis_up)",
            "none",
            maximum=1,
            width=8,
        ),
        per_instance(
            "Write-behind lag",
            "Age of the oldest unwritten turn; TetherWriteBehindLagging above 10 s.",
            "max by (instance) (tether_box_write_behind_lag_seconds)",
            "s",
            thresholds=[(10, "red")],
            width=8,
        ),
        per_instance(
            "Write-behind queue depth",
            "Turns waiting to be written to Redis.",
            "sum by (instance) (tether_box_write_behind_queue_depth)",
            "short",
            width=8,
        ),
        timeseries(
            "Write-behind drops / s",
            "Turns not written to Redis (queue full, Redis down).",
            [(rate("tether_box_write_behind_dropped_total", "instance, reason"), "{{instance}} {{reason}}")],
            "cps",
            width=8,
        ),
        timeseries(
            "Sealed store:false handoffs / s",
            "store:false chains sealed on drain, restored at connect, missing, rejected or skipped.",
            [(rate("tether_box_sealed_handoffs_total", "result"), "{{result}}")],
            "cps",
            width=8,
        ),
        timeseries(
            "Parked dropped sockets / s, by result",
            "WebSockets cut without a close frame whose client sent a resume key: parked, resumed, expired, "
            "evicted, replaced, skipped, shutdown (docs/handoff.md).",
            [(rate("tether_box_parked_total", "result"), "{{result}}")],
            "cps",
            width=8,
        ),
        timeseries(
            "Parked sockets and bytes",
            "Connection-local state waiting for its client to reconnect, per box.",
            [
                ("sum by (instance) (tether_box_parked_connections)", "{{instance}} connections"),
                ("sum by (instance) (tether_box_parked_bytes)", "{{instance}} bytes"),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "Resume wait",
            "From the cut to the reconnect that took the parked state back.",
            [
                (quantile(0.5, "tether_box_resume_wait_seconds"), "p50"),
                (quantile(0.99, "tether_box_resume_wait_seconds"), "p99"),
            ],
            "s",
            width=8,
        ),
        timeseries(
            "response.steer / s",
            "Steer submissions by outcome, and failures by code (docs/protocol.md).",
            [
                (rate("tether_box_steers_total", "result"), "{{result}}"),
                (rate("tether_box_steer_failures_total", "code"), "failed {{code}}"),
            ],
            "cps",
            width=8,
        ),
        timeseries(
            "WebSocket connections / s, by permessage-deflate",
            "Accepted WebSocket connections: compressed (the client offered deflate) or not.",
            [(rate("tether_box_websocket_deflate_total", "negotiated"), "deflate {{negotiated}}")],
            "cps",
            width=8,
        ),
        timeseries(
            "Compaction items / s",
            "Compaction items made by /v1/responses/compact, expanded from input, or rejected.",
            [(rate("tether_box_compactions_total", "result"), "{{result}}")],
            "cps",
            width=8,
        ),
        timeseries(
            "Input images / s",
            "input_image parts received, by how they reached the model (a text placeholder without vision).",
            [(rate("tether_box_input_images_total", "handling"), "{{handling}}")],
            "cps",
            width=8,
        ),
    ]


def _drain_and_workers() -> list[Panel]:
    return [
        per_instance(
            "Drain age",
            "Seconds since a draining box received SIGTERM; TetherDrainStuck after 120 s.",
            "(time() - tether_box_drain_started_timestamp_seconds) and on (job, instance) "
            "(tether_box_draining == 1)",
            "s",
            thresholds=[(120, "red")],
            width=8,
        ),
        per_instance(
            "Queued response.create events",
            "Creates waiting behind an in-flight response.",
            "sum by (instance) (tether_box_create_queue_depth)",
            "short",
            width=8,
        ),
        timeseries(
            "Box → worker calls / s by result",
            "ok, resend (FAILED_PRECONDITION then the full chain), failover (ring successor), error.",
            [(rate("tether_box_worker_calls_total", "result"), "{{result}}")],
            "cps",
            width=8,
        ),
    ]


def sessions() -> dict[str, Any]:
    """Session store, cold handoff through Redis, write-behind, drains."""
    return dashboard(
        "tether-sessions",
        "Tether / Sessions and handoff",
        "API boxes: sessions in memory, cold handoff through Redis, write-behind, drains and worker "
        "handoff. See docs/observability.md.",
        [
            ("Sessions", _sessions()),
            ("Cold handoff", _handoff()),
            ("Drain and worker handoff", _drain_and_workers()),
        ],
        annotations=[annotation("Drains", "tether_box_draining == 1", "draining", "orange")],
    )


# ------------------------------------------------------------------------------------------ workers


def _workers_summary() -> list[Panel]:
    prefill = "tether_worker_prefill_tokens_total"
    return [
        stat("Serving workers", "Workers whose health is SERVING.", "sum(tether_worker_serving)", "short"),
        stat(
            "Running sequences",
            "Sequences in the running batches.",
            "sum(tether_worker_running_sequences)",
            "short",
        ),
        stat(
            "Queued requests", "Requests waiting for a batch slot.", "sum(tether_worker_queue_depth)", "short"
        ),
        stat(
            "Prompt tokens from cache",
            "Prompt tokens served from the KV cache / all prompt tokens.",
            share(f'{prefill}{{kind="cached"}}', prefill),
            "percentunit",
        ),
        stat(
            "Output tokens / s",
            "Generated tokens per second.",
            rate("tether_worker_output_tokens_total"),
            "suffix: tok/s",
        ),
        stat(
            "KV cache used",
            "Tokens held / token budget, all workers.",
            "sum(tether_worker_kv_cache_tokens) / sum(tether_worker_kv_cache_budget_tokens)",
            "percentunit",
            thresholds=[(0.9, "orange")],
        ),
        timeseries(
            "Generate RPCs / s by status",
            "Generate RPCs finished, by gRPC status.",
            [(rate("tether_worker_generate_total", "code"), "{{code}}")],
            "reqps",
            width=8,
        ),
        timeseries(
            "Prefill tokens / s",
            "Prompt tokens served from the cache vs computed.",
            [(rate(prefill, "kind"), "{{kind}}")],
            "suffix: tok/s",
            width=8,
        ),
        timeseries(
            "Precondition failures / s",
            "Requests whose prefix the worker did not hold, by reason.",
            [(rate("tether_worker_precondition_failures_total", "reason"), "{{reason}}")],
            "cps",
            width=8,
        ),
    ]


def _kv_cache() -> list[Panel]:
    lookups = "tether_worker_prefix_cache_lookups_total"
    turnover = (
        "sum by (instance) (increase(tether_worker_kv_cache_evicted_tokens_total[10m]))"
        " / max by (instance) (tether_worker_kv_cache_budget_tokens)"
    )
    return [
        per_instance(
            "KV cache usage",
            "Tokens held / token budget per worker.",
            "max by (instance) (tether_worker_kv_cache_tokens) / max by (instance) "
            "(tether_worker_kv_cache_budget_tokens)",
            "percentunit",
            maximum=1,
            width=8,
        ),
        per_instance(
            "Chains held",
            "Chains in each worker's KV cache.",
            "max by (instance) (tether_worker_kv_cache_chains)",
            "short",
            width=8,
        ),
        per_instance(
            "Evictions / s",
            "Chains evicted under the token budget (LRU).",
            rate("tether_worker_kv_cache_evictions_total", "instance"),
            "cps",
            width=8,
        ),
        per_instance(
            "Cache turnover (10 min)",
            "Tokens evicted in 10 minutes / token budget; above 1 with many "
            "unknown_cache_key failures is TetherKVCacheThrash.",
            turnover,
            "percentunit",
            thresholds=[(1, "red")],
        ),
        timeseries(
            "Prefix-cache hit ratio",
            "Block-hash prefix lookups of keyless (full-context) requests that hit.",
            [(share(f'{lookups}{{result="hit"}}', lookups), "hit ratio")],
            "percentunit",
            maximum=1,
        ),
    ]


def _retention() -> list[Panel]:
    """Chains kept through tool pauses (prompt_cache_options.ttl, docs/retention.md)."""
    requests = "tether_worker_retention_requests_total"
    return [
        per_instance(
            "Retained KV / retained budget",
            "Tokens of chains with an unexpired retention mark / the share of the budget they may hold "
            "(TETHER_WORKER_RETAINED_SHARE). At 100% new retention requests are denied.",
            "max by (instance) (tether_worker_kv_cache_retained_tokens) / max by (instance) "
            "(tether_worker_kv_cache_retained_budget_tokens)",
            "percentunit",
            maximum=1,
            width=8,
        ),
        per_instance(
            "Retained KV bytes",
            "Retained tokens x the engine's KV bytes per token (0 on the sim, which holds no KV).",
            "max by (instance) (tether_worker_kv_cache_retained_bytes)",
            "bytes",
            width=8,
        ),
        timeseries(
            "Retention requests and retained evictions / s",
            "Commits that asked for retention, granted or denied (beyond the share), and retained chains "
            "evicted before their mark expired (nothing unretained was left: the budget is too small for "
            "what is retained plus the traffic).",
            [
                (rate(requests, "result"), "{{result}}"),
                (rate("tether_worker_kv_cache_retained_evictions_total"), "retained evicted"),
            ],
            "cps",
            width=8,
        ),
    ]


def _batching() -> list[Panel]:
    return [
        per_instance(
            "Running sequences per worker",
            "Sequences in each running batch.",
            "sum by (instance) (tether_worker_running_sequences)",
            "short",
            width=8,
        ),
        per_instance(
            "Queue depth per worker",
            "Requests waiting for a batch slot.",
            "sum by (instance) (tether_worker_queue_depth)",
            "short",
            width=8,
        ),
        p50_p99(
            "Queue wait",
            "Time a request waits for a batch slot.",
            "tether_worker_queue_wait_seconds",
            width=8,
        ),
        per_instance(
            "Serving",
            "1 while health is SERVING, 0 while draining.",
            "min by (instance) (tether_worker_serving)",
            "none",
            maximum=1,
        ),
        per_instance(
            "Output tokens / s per worker",
            "Generated tokens per second.",
            rate("tether_worker_output_tokens_total", "instance"),
            "suffix: tok/s",
        ),
    ]


def _tool_calls() -> list[Panel]:
    """What real models' tool-call parsers made of their outputs (torch with a checkpoint, vllm)."""
    calls = "tether_worker_tool_calls_total"
    return [
        timeseries(
            "Parsed tool calls / s by result",
            "What the model's tool-call parser made of its outputs: complete calls, malformed calls "
            "(arguments that never closed), call-like text left as text (it named no offered tool). "
            "Empty on the sim and on dummy weights.",
            [(rate(calls, "result"), "{{result}}")],
            "cps",
        ),
        timeseries(
            "Malformed and text share",
            "Malformed calls and call-like text left as text / everything the parser found. A rising "
            "share says the model writes calls it cannot finish (max_output_tokens too small) or names "
            "tools it was not offered.",
            [
                (share(f'{calls}{{result="malformed"}}', calls), "malformed"),
                (share(f'{calls}{{result="text"}}', calls), "left as text"),
            ],
            "percentunit",
            maximum=1,
        ),
    ]


def _vllm() -> list[Panel]:
    """vLLM's own series (workers on the vllm engine re-export them; empty panels elsewhere)."""
    hits, queries = "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"
    return [
        per_instance(
            "vLLM prefix-cache hit rate",
            "Prompt tokens vLLM served from its prefix cache / prompt tokens it looked up, per worker.",
            f"{rate(hits, 'instance')} / {rate(queries, 'instance')}",
            "percentunit",
            maximum=1,
            width=8,
        ),
        per_instance(
            "vLLM KV-cache usage",
            "KV-cache blocks in use on each vLLM worker (vllm:kv_cache_usage_perc).",
            "max by (instance) (vllm:kv_cache_usage_perc)",
            "percentunit",
            maximum=1,
            thresholds=[(0.9, "orange")],
            width=8,
        ),
        timeseries(
            "vLLM queue",
            "Requests running in vLLM's batch and waiting in its scheduler, all vLLM workers.",
            [
                ("sum (vllm:num_requests_running)", "running"),
                ("sum (vllm:num_requests_waiting)", "waiting"),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "vLLM tokens / s",
            "Prompt tokens computed (prefill) and tokens generated per second, all vLLM workers.",
            [
                (rate("vllm:prompt_tokens_total"), "prefill"),
                (rate("vllm:generation_tokens_total"), "generated"),
            ],
            "suffix: tok/s",
            width=24,
        ),
    ]


def workers() -> dict[str, Any]:
    """Generate RPCs, prefill cached vs computed, KV cache usage, thrash and retention, batching, parsed
    tool calls, vLLM's own series."""
    return dashboard(
        "tether-workers",
        "Tether / Workers",
        "GPU workers: Generate RPCs, prompt tokens cached vs computed, KV cache usage, turnover and "
        "retention, batching, the tool calls real models write, and vLLM's own series on vllm workers. "
        "See docs/observability.md.",
        [
            ("Workers", _workers_summary()),
            ("KV cache", _kv_cache()),
            ("Retention", _retention()),
            ("Batching", _batching()),
            ("Tool calls", _tool_calls()),
            ("vLLM", _vllm()),
        ],
    )


BOARDS = {"overview": overview, "router": router, "sessions": sessions, "workers": workers}
