"""The worker's exception tree. Each class carries the gRPC status it maps to (by name, so this module
stays free of grpc); `gpu_worker/server/errors.py` is the one function that turns them into statuses.

    WorkerError                      INTERNAL            (base; anything unexpected)
    ├── InvalidRequest               INVALID_ARGUMENT    bad tokens, sizes, tools, metadata, max_output_tokens
    ├── PreconditionFailed           FAILED_PRECONDITION the worker does not hold the stated prefix;
    │                                                    `reason` goes to trailing metadata
    │                                                    `tether-precondition`
    ├── ResourceExhausted            RESOURCE_EXHAUSTED
    │   ├── OverBudget                                   the request alone exceeds the KV token budget
    │   └── QueueFull                                    the admission queue is full
    ├── Draining                     UNAVAILABLE         the worker is shutting down
    ├── DeadlineExceeded             DEADLINE_EXCEEDED   the client's deadline passed while we worked
    └── EngineFailure                INTERNAL            the engine broke its contract or crashed
"""

from __future__ import annotations

from typing import ClassVar, Literal

__all__ = [
    "DeadlineExceeded",
    "Draining",
    "EngineFailure",
    "InvalidRequest",
    "OverBudget",
    "PreconditionFailed",
    "PreconditionReason",
    "QueueFull",
    "ResourceExhausted",
    "WorkerError",
]

PreconditionReason = Literal["unknown_cache_key", "length_mismatch", "digest_mismatch", "tokenizer_mismatch"]


class WorkerError(Exception):
    """Base of every error the worker reports to a client."""

    code: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(WorkerError):
    """The request is malformed or outside the configured limits."""

    code: ClassVar[str] = "INVALID_ARGUMENT"


class PreconditionFailed(WorkerError):
    """The worker does not hold the prefix (base_len + digest) the request builds on."""

    code: ClassVar[str] = "FAILED_PRECONDITION"

    def __init__(self, reason: PreconditionReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: PreconditionReason = reason


class ResourceExhausted(WorkerError):
    """The worker cannot take the request now (capacity, not correctness)."""

    code: ClassVar[str] = "RESOURCE_EXHAUSTED"


class OverBudget(ResourceExhausted):
    """The request alone needs more tokens than the whole KV budget."""


class QueueFull(ResourceExhausted):
    """The bounded admission queue is full."""


class Draining(WorkerError):
    """The worker is shutting down and takes no new work."""

    code: ClassVar[str] = "UNAVAILABLE"


class DeadlineExceeded(WorkerError):
    """The client's deadline passed before the generation finished."""

    code: ClassVar[str] = "DEADLINE_EXCEEDED"


class EngineFailure(WorkerError):
    """The engine crashed or broke the event-order contract."""

    code: ClassVar[str] = "INTERNAL"
