"""The grpc.aio servicer: protobuf in, WorkerService, protobuf out; errors through server/errors.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gpu_worker.core.errors import DeadlineExceeded, InvalidRequest, WorkerError
from gpu_worker.core.validation import WorkRequest
from gpu_worker.engines.base import AgentState, ToolSpec
from gpu_worker.server.errors import status_of
from gpu_worker.server.metrics import WorkerMetrics
from gpu_worker.server.service import WorkerService, closing_iterator
from gpu_worker.wire._pb import worker_pb2 as pb
from gpu_worker.wire._pb import worker_pb2_grpc as pb_grpc
from gpu_worker.wire.model import description_to_pb

__all__ = ["WorkerServicer", "work_request_of"]

_LOG = logging.getLogger("gpu_worker.server")
_DEADLINE_SLACK = 0.25  # seconds: a cancellation this close to the deadline is the deadline


def work_request_of(msg: pb.GenerateRequest) -> WorkRequest:
    """The core's view of a wire request."""
    return WorkRequest(
        request_id=msg.request_id,
        cache_key=msg.cache_key,
        base_len=msg.base_len,
        base_digest=bytes(msg.base_digest),
        tokens=list(msg.tokens),
        max_output_tokens=msg.max_output_tokens,
        tools=tuple(ToolSpec(t.name, t.description, t.parameters_json) for t in msg.tools),
        tool_choice=msg.tool_choice,
        metadata=dict(msg.metadata),
        model=msg.model,
        agent=AgentState(
            tool_calls_since_user_message=msg.agent.tool_calls_since_user_message,
            user_messages=msg.agent.user_messages,
            last_item_is_tool_output=msg.agent.last_item_is_tool_output,
        ),
        seed=msg.seed,
        temperature=msg.temperature,
        generate=msg.generate,
        tokenizer_fingerprint=msg.tokenizer_fingerprint,
        top_p=msg.top_p,
        retain_seconds=msg.retain_seconds,
    )


class WorkerServicer(pb_grpc.WorkerServicer):
    """tether.worker.v1.Worker over a WorkerService."""

    def __init__(self, service: WorkerService, metrics: WorkerMetrics) -> None:
        self._service = service
        self._metrics = metrics

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.GenerateEvent]:
        """One generation as a stream of events; errors end it with a status (see proto)."""
        code = "OK"
        try:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded("the deadline passed before the worker started")
            async with closing_iterator(self._service.generate(work_request_of(request))) as events:
                async for event in events:
                    yield event
        except asyncio.CancelledError:
            # The client cancelled, or its deadline passed: the client gives up at its deadline and
            # resets the stream, which may reach us a little before our copy of the deadline expires.
            remaining = context.time_remaining()
            code = (
                "DEADLINE_EXCEEDED" if remaining is not None and remaining < _DEADLINE_SLACK else "CANCELLED"
            )
            raise
        except Exception as exc:
            status = status_of(exc)
            code = status.code.name
            if not isinstance(exc, WorkerError):
                _LOG.exception("Generate %s failed", request.request_id)
            await context.abort(status.code, status.details, status.trailing_metadata)
        finally:
            self._metrics.generate_total.labels(code=code).inc()

    async def DescribeModel(
        self, request: pb.DescribeModelRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelDescription:
        """What this worker serves (gpu_worker/wire/model.py)."""
        message: pb.ModelDescription = description_to_pb(self._service.description)
        return message

    async def Stop(
        self, request: pb.StopRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.StopResponse:
        """End a running generation early (a steered response); whether one with that id runs here."""
        if not request.request_id:
            status = status_of(InvalidRequest("request_id is empty"))
            await context.abort(status.code, status.details, status.trailing_metadata)
        return pb.StopResponse(stopping=self._service.stop(request.request_id))

    async def DropSession(
        self, request: pb.DropSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DropSessionResponse:
        """Forget a chain; idempotent."""
        if not request.cache_key:
            status = status_of(InvalidRequest("cache_key is empty"))
            await context.abort(status.code, status.details, status.trailing_metadata)
        freed = self._service.drop(request.cache_key)
        return pb.DropSessionResponse(dropped=freed > 0, tokens_freed=freed)
