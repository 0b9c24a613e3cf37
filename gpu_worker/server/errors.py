"""The one map from the worker's exception tree (gpu_worker/core/errors.py) to gRPC statuses."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from gpu_worker.core.errors import PreconditionFailed, WorkerError

__all__ = ["PRECONDITION_METADATA_KEY", "GrpcStatus", "status_of"]

PRECONDITION_METADATA_KEY = "tether-precondition"


@dataclass(frozen=True, slots=True)
class GrpcStatus:
    """What the servicer aborts a call with."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str], ...] = ()


def status_of(exc: BaseException) -> GrpcStatus:
    """The status for `exc`: a WorkerError's own code and message; anything else is INTERNAL with no
    details (they may leak internals; the log has them)."""
    if isinstance(exc, PreconditionFailed):
        return GrpcStatus(
            grpc.StatusCode.FAILED_PRECONDITION, exc.message, ((PRECONDITION_METADATA_KEY, exc.reason),)
        )
    if isinstance(exc, WorkerError):
        return GrpcStatus(grpc.StatusCode[exc.code], exc.message)
    return GrpcStatus(grpc.StatusCode.INTERNAL, "internal error; see the worker log")
