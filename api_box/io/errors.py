"""The one place where errors become wire form: a WebSocket error event, or an HTTP error response.

Anything that is not a BoxError (a bug, a worker failure) is first mapped by `as_box_error`: a request the
worker refused as invalid becomes RejectedByModel (400, with the worker's reason), one it had no capacity
for ModelOverloaded (503), other worker errors WorkerFailed (server_error), anything else a generic 500
with no details (the details go to the log, never to the client).

`ClientGone` is not an error of the request: an HTTP client that went away (or took no bytes for
send_timeout_seconds) mid-stream; the turn is abandoned, not failed.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from api_box.core.errors import BoxError, ModelOverloaded, RejectedByModel, WorkerFailed
from api_box.io.metrics import BoxMetrics
from gpu_worker.client import WorkerError, WorkerRejected, WorkerTimeout

_LOG = logging.getLogger("api_box.errors")


class ClientGone(ConnectionError):
    """The client of a streamed HTTP response went away or stopped reading: abandon the turn."""


def as_box_error(exc: BaseException) -> BoxError:
    """The BoxError for any exception: a BoxError is itself; a worker's refusal is 400
    request_rejected_by_model (RESOURCE_EXHAUSTED: 503 model_overloaded), with the worker's reason; a worker
    timeout or failure is 500 server_error; anything else is a 500 server_error without details (logged)."""
    if isinstance(exc, BoxError):
        return exc
    if isinstance(exc, WorkerRejected):
        if exc.code == "RESOURCE_EXHAUSTED":
            return ModelOverloaded(f"The model worker has no capacity for this request: {exc.message}")
        return RejectedByModel(f"The model worker refused this request: {exc.message}")
    if isinstance(exc, WorkerTimeout):
        return WorkerFailed("The model worker did not answer in time.")
    if isinstance(exc, WorkerError):
        return WorkerFailed("The model worker failed while processing your request.")
    _LOG.error("unexpected error", exc_info=exc)
    return BoxError()


def ws_error_event(error: BoxError, metrics: BoxMetrics) -> dict[str, Any]:
    """The WebSocket error envelope: {"type":"error","status":N,"error":{type,code,message,param}}."""
    metrics.errors.labels(error.code).inc()
    return {"type": "error", "status": error.status, "error": error.error_object()}


def http_error_response(error: BoxError, metrics: BoxMetrics) -> web.Response:
    """An HTTP error: the status and {"error":{message,type,param,code}}."""
    metrics.errors.labels(error.code).inc()
    return web.Response(
        status=error.status,
        body=orjson.dumps({"error": error.error_object()}),
        content_type="application/json",
    )
