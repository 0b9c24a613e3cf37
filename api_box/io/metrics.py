"""The API box's Prometheus metrics (names from docs/metrics.md), on an injected registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from api_box.core.chain import CHAIN_START_REASONS
from api_box.core.errors import all_codes
from api_box.core.steer import STEER_CODES
from tether_runtime.metrics import ITL_BUCKETS, LATENCY_BUCKETS, register_build_info

MODES = ("ws", "http", "sse")
DIRECTIONS = ("client_to_server", "server_to_client")
CLIENT_TO_SERVER, SERVER_TO_CLIENT = DIRECTIONS
WRITE_BEHIND_DROP_REASONS = ("queue_full", "redis_down")  # what the alert rules and dashboards expect
SEALED_HANDOFF_RESULTS = ("sealed", "restored", "missing", "rejected", "skipped")
IMAGE_HANDLINGS = ("placeholder",)  # images sent to a model without vision become a text placeholder
COMPACTION_RESULTS = ("made", "expanded", "rejected")
# Dropped WebSockets parked for a resume (api_box/io/resume.py), by what became of them.
PARKED_RESULTS = ("parked", "resumed", "expired", "evicted", "replaced", "skipped", "shutdown")
# response.steer submissions (api_box/core/steer.py): accepted, committed by a successor's response.created,
# left pending for tool outputs, or failed (by code in tether_box_steer_failures_total).
STEER_RESULTS = ("accepted", "committed", "pending", "failed")


@dataclass(frozen=True, slots=True)
class BoxMetrics:
    """Every tether_box_* metric; the cold store (io/redis_store.py) updates the redis/write-behind ones."""

    registry: CollectorRegistry
    bytes: Counter
    full_context_bytes: Counter
    responses: Counter
    errors: Counter
    time_to_first_token: Histogram
    inter_token_latency: Histogram
    turn_duration: Histogram
    websocket_connections: Gauge
    sessions: Gauge
    session_store_bytes: Gauge
    session_lookups: Counter
    chain_starts: Counter
    create_queue_depth: Gauge
    cold_restore_seconds: Histogram
    write_behind_queue_depth: Gauge
    write_behind_lag_seconds: Gauge
    write_behind_dropped: Counter
    redis_up: Gauge
    sealed_handoffs: Counter
    draining: Gauge
    drain_started_timestamp: Gauge
    websocket_deflate: Counter
    input_images: Counter
    compactions: Counter
    parked: Counter
    parked_connections: Gauge
    parked_bytes: Gauge
    resume_wait_seconds: Histogram
    steers: Counter
    steer_failures: Counter


def build_metrics(registry: CollectorRegistry, *, version: str | None = None) -> BoxMetrics:
    """Register the box's metrics (and build info and the process collector) on `registry`.

    `version` labels tether_build_info; None: the installed distribution's (tether_runtime/version.py).
    """
    r = registry
    register_build_info(r, "api_box", build_version=version)
    ProcessCollector(registry=r)
    metrics = BoxMetrics(
        registry=r,
        bytes=Counter("tether_box_bytes_total", "Payload bytes", ["mode", "direction"], registry=r),
        full_context_bytes=Counter(
            "tether_box_full_context_bytes_total",
            "Bytes the same turn would have uploaded as a stateless full-context request",
            ["mode"],
            registry=r,
        ),
        responses=Counter("tether_box_responses_total", "Responses finished", ["mode", "status"], registry=r),
        errors=Counter("tether_box_errors_total", "Error events and bodies sent", ["code"], registry=r),
        time_to_first_token=Histogram(
            "tether_box_time_to_first_token_seconds",
            "Create to first output delta",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        ),
        inter_token_latency=Histogram(
            "tether_box_inter_token_latency_seconds",
            "Between output deltas",
            ["mode"],
            buckets=ITL_BUCKETS,
            registry=r,
        ),
        turn_duration=Histogram(
            "tether_box_turn_duration_seconds",
            "Create to terminal event",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        ),
        websocket_connections=Gauge(
            "tether_box_websocket_connections", "Open WebSocket connections", registry=r
        ),
        sessions=Gauge("tether_box_sessions", "Responses held in the session store", registry=r),
        session_store_bytes=Gauge(
            "tether_box_session_store_bytes", "Bytes accounted to the session store", registry=r
        ),
        chain_starts=Counter(
            "tether_box_chain_starts_total",
            "Turns that start a new token chain instead of appending to their base's, by reason",
            ["reason"],
            registry=r,
        ),
        session_lookups=Counter(
            "tether_box_session_lookups_total", "previous_response_id lookups", ["result"], registry=r
        ),
        create_queue_depth=Gauge(
            "tether_box_create_queue_depth",
            "response.create events queued behind an in-flight one",
            registry=r,
        ),
        cold_restore_seconds=Histogram(
            "tether_box_cold_restore_seconds",
            "Cold-store restore of a chain",
            buckets=LATENCY_BUCKETS,
            registry=r,
        ),
        write_behind_queue_depth=Gauge(
            "tether_box_write_behind_queue_depth", "Turns waiting to be written to the cold store", registry=r
        ),
        write_behind_lag_seconds=Gauge(
            "tether_box_write_behind_lag_seconds", "Age of the oldest unwritten turn", registry=r
        ),
        write_behind_dropped=Counter(
            "tether_box_write_behind_dropped_total", "Turns not written", ["reason"], registry=r
        ),
        redis_up=Gauge("tether_box_redis_up", "1 when the last Redis operation succeeded", registry=r),
        sealed_handoffs=Counter(
            "tether_box_sealed_handoffs_total",
            "store:false handoffs across a drain, by outcome",
            ["result"],
            registry=r,
        ),
        draining=Gauge("tether_box_draining", "1 once the drain started", registry=r),
        drain_started_timestamp=Gauge(
            "tether_box_drain_started_timestamp_seconds", "When the drain started (0 before)", registry=r
        ),
        websocket_deflate=Counter(
            "tether_box_websocket_deflate_total",
            "WebSocket connections accepted, by whether permessage-deflate was negotiated",
            ["negotiated"],
            registry=r,
        ),
        input_images=Counter(
            "tether_box_input_images_total",
            "input_image parts received, by how they reached the model",
            ["handling"],
            registry=r,
        ),
        compactions=Counter(
            "tether_box_compactions_total",
            "Compaction items made and expanded, by outcome",
            ["result"],
            registry=r,
        ),
        parked=Counter(
            "tether_box_parked_total",
            "Dropped WebSockets parked for a resume, by what became of them",
            ["result"],
            registry=r,
        ),
        parked_connections=Gauge(
            "tether_box_parked_connections", "Dropped WebSockets parked for a resume now", registry=r
        ),
        parked_bytes=Gauge("tether_box_parked_bytes", "Bytes held by parked WebSockets", registry=r),
        resume_wait_seconds=Histogram(
            "tether_box_resume_wait_seconds",
            "How long a resumed WebSocket was parked",
            buckets=LATENCY_BUCKETS,
            registry=r,
        ),
        steers=Counter(
            "tether_box_steers_total", "response.steer submissions, by outcome", ["result"], registry=r
        ),
        steer_failures=Counter(
            "tether_box_steer_failures_total", "response.steer.failed events, by code", ["code"], registry=r
        ),
    )
    _initialise_labels(metrics)
    return metrics


def _initialise_labels(m: BoxMetrics) -> None:
    """Export every bounded label combination from the start, so dashboards see zeros, not gaps."""
    for mode in MODES:
        for direction in DIRECTIONS:
            m.bytes.labels(mode, direction)
        m.full_context_bytes.labels(mode)
        for status in ("completed", "failed", "incomplete"):
            m.responses.labels(mode, status)
        m.time_to_first_token.labels(mode)
        m.inter_token_latency.labels(mode)
        m.turn_duration.labels(mode)
    for code in sorted(all_codes()):
        m.errors.labels(code)
    for result in ("memory", "redis", "miss"):
        m.session_lookups.labels(result)
    for reason in CHAIN_START_REASONS:
        m.chain_starts.labels(reason)
    for reason in WRITE_BEHIND_DROP_REASONS:
        m.write_behind_dropped.labels(reason)
    for result in SEALED_HANDOFF_RESULTS:
        m.sealed_handoffs.labels(result)
    for negotiated in ("yes", "no"):
        m.websocket_deflate.labels(negotiated)
    for handling in IMAGE_HANDLINGS:
        m.input_images.labels(handling)
    for result in COMPACTION_RESULTS:
        m.compactions.labels(result)
    for result in PARKED_RESULTS:
        m.parked.labels(result)
    for result in STEER_RESULTS:
        m.steers.labels(result)
    for code in STEER_CODES:
        m.steer_failures.labels(code)


WORKER_CALL_RESULTS = ("ok", "resend", "failover", "error")


class WorkerCallsCollector(Collector):
    """tether_box_worker_calls_total{result}, read from the worker pool's own counts at scrape time."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        """One sample per result (zeros included)."""
        family = CounterMetricFamily("tether_box_worker_calls", "Worker calls by result", labels=["result"])
        counts = self._counts()
        for result in WORKER_CALL_RESULTS:
            family.add_metric([result], float(counts.get(result, 0)))
        yield family


def register_worker_calls(registry: CollectorRegistry, counts: Callable[[], Mapping[str, int]]) -> None:
    """Export the pool's call counts (the pool counts ok/resend/failover/error itself)."""
    registry.register(WorkerCallsCollector(counts))
