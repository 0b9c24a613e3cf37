"""The one map from the worker's exception tree to gRPC statuses."""

from __future__ import annotations

import grpc
import pytest

from gpu_worker.core import errors
from gpu_worker.server.errors import PRECONDITION_METADATA_KEY, status_of


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidRequest("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.OverBudget("big"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.QueueFull("full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Draining("bye"), grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceeded("late"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.EngineFailure("boom"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_worker_error_has_its_status_and_message(exc: errors.WorkerError, code: grpc.StatusCode) -> None:
    status = status_of(exc)
    assert status.code == code
    assert status.details == exc.message
    assert status.trailing_metadata == ()


@pytest.mark.parametrize("reason", ["unknown_cache_key", "length_mismatch", "digest_mismatch"])
def test_precondition_failures_carry_a_machine_readable_reason(reason: errors.PreconditionReason) -> None:
    status = status_of(errors.PreconditionFailed(reason, "details"))
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION
    assert status.trailing_metadata == ((PRECONDITION_METADATA_KEY, reason),)
    assert status.details.startswith(reason)


def test_unknown_exceptions_are_internal_without_details() -> None:
    status = status_of(KeyError("secret internals"))
    assert status.code == grpc.StatusCode.INTERNAL
    assert "secret" not in status.details
