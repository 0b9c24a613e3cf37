"""What api_box hands to and gets from the worker pool: requests, stream events, errors.

Light on purpose (no grpc, no engines): `ToolSpec` and `AgentState` come from the wire contract
(gpu_worker/wire/agent.py), which the engines share, so the box never imports the engines (or torch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gpu_worker.wire.agent import AgentState, ToolSpec

__all__ = [
    "AgentState",
    "CallDelta",
    "CallResult",
    "CallStart",
    "Done",
    "GenerationRequest",
    "Prefill",
    "TextDelta",
    "ToolSpec",
    "WorkerError",
    "WorkerEvent",
    "WorkerRejected",
    "WorkerTimeout",
    "WorkerUnavailable",
]

# How one `WorkerPool.generate` call ended, for `tether_box_worker_calls_total{result}`.
CallResult = Literal["ok", "resend", "failover", "error"]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation. `chain` is always the WHOLE prompt chain; the pool sends only
    `chain[held_len:]` when the box believes the worker holds the first `held_len` tokens (whose chain
    digest is `held_digest`), and the whole chain otherwise or on a resend."""

    request_id: str
    cache_key: str | None
    chain: Sequence[int]
    held_len: int = 0
    held_digest: bytes = b""
    max_output_tokens: int = 1024
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"
    agent: AgentState = field(default_factory=AgentState)
    metadata: Mapping[str, str] = field(default_factory=dict)
    model: str = ""
    seed: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    generate: bool = True
    # The tokenizer `chain` was rendered with (ModelDescription.fingerprint); "" skips the worker's check.
    tokenizer_fingerprint: str = ""
    timeout: float | None = None  # seconds for the whole call; None = the pool's request_timeout
    # Hash key for requests without a cache_key (HTTP full-context mode). None: the chain's first
    # 64-token block, so the turns of one conversation meet the same worker's prefix cache.
    routing_key: str | None = None
    # Keep the chain this call commits ahead of unretained chains when the worker evicts, this long
    # (prompt_cache_options.ttl); 0: plain LRU. The worker grants it within its retained share.
    retain_seconds: int = 0


@dataclass(frozen=True, slots=True)
class Prefill:
    """The prompt is in the worker's KV cache; `cached_tokens` of it were reused."""

    prompt_tokens: int
    cached_tokens: int
    computed_tokens: int
    queue_seconds: float
    worker: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    tokens: int


@dataclass(frozen=True, slots=True)
class CallStart:
    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class CallDelta:
    arguments: str
    tokens: int


@dataclass(frozen=True, slots=True)
class Done:
    """The last event. The worker now holds `chain_len` tokens for the cache key (prompt + output),
    with digest `chain_digest`: the box's next `held_len`/`held_digest`."""

    finish_reason: str  # "stop" | "length" | "tool_call" | "stopped" (pool.stop)
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    output_token_ids: tuple[int, ...]
    chain_len: int
    chain_digest: bytes
    worker: str
    retained_seconds: int = 0  # how long the worker keeps the chain retained (0: not retained)


WorkerEvent = Prefill | TextDelta | CallStart | CallDelta | Done


class WorkerError(Exception):
    """Base of the pool's errors. `code` is the gRPC status name, `target` the worker (if any)."""

    def __init__(self, message: str, *, code: str = "UNKNOWN", target: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.target = target


class WorkerUnavailable(WorkerError):
    """No worker could be reached, or the worker died after events were yielded (fail the response;
    the next turn goes elsewhere)."""


class WorkerRejected(WorkerError):
    """The worker refused the request: INVALID_ARGUMENT (bad input) or RESOURCE_EXHAUSTED (over the
    token budget, queue full)."""

    def __init__(self, code: str, message: str, *, target: str | None = None) -> None:
        super().__init__(message, code=code, target=target)


class WorkerTimeout(WorkerError):
    """The call's deadline passed (DEADLINE_EXCEEDED)."""
