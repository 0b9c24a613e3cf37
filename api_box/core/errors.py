"""The API box's one exception tree. Every class carries its wire meaning: HTTP status, error type, code.

Codes are always strings (Open Responses requires a string `error.code`, even where OpenAI sends null).
The shells turn these into wire form in exactly one function each: `api_box.io.errors.ws_error_event` (a
WebSocket `error` event, the socket stays open), `api_box.io.errors.http_error_response` (an HTTP status
with `{"error": {...}}`), and `response.failed` for failures after a response was created.

    BoxError                               500 server_error          server_error
    ├── RequestError                       400 invalid_request_error (request-scoped: the socket stays open)
    │   ├── InvalidJson                        invalid_json              malformed JSON or not UTF-8
    │   ├── JsonTooDeep                        json_too_deep             nesting deeper than the limit
    │   ├── UnknownEventType                   unknown_event_type        a WS event other than response.create
    │   ├── BinaryFrame                        binary_frame_unsupported  a binary WebSocket frame
    │   ├── MissingParameter                   missing_required_parameter
    │   ├── InvalidType                        invalid_type              a field of the wrong JSON type
    │   ├── InvalidValue                       invalid_value             a value out of range or unknown
    │   ├── UnsupportedParameter               unsupported_parameter     background, image input, ...
    │   ├── InvalidStreamId                    invalid_stream_id         a malformed WebSocket stream_id
    │   ├── StringTooLong                      string_above_max_length
    │   ├── TooManyItems                       too_many_items
    │   ├── TooManyTools                       too_many_tools
    │   ├── UnknownCallId                      unknown_call_id           function_call_output with no call
    │   ├── PreviousResponseNotFound           previous_response_not_found
    │   ├── ContextLengthExceeded              context_length_exceeded   chain longer than the box allows
    │   ├── ModelNotFound                  404 model_not_found           no worker serves the model
    │   ├── ConnectionLimitReached             websocket_connection_limit_reached (then close 1000)
    │   ├── StreamLimitReached                 websocket_stream_limit_reached  too many named lanes
    │   ├── RejectedByModel                    request_rejected_by_model  the worker's own limits refused it
    │   └── TooManyQueued                  429 too_many_queued_requests  the per-connection FIFO is full
    ├── AuthenticationError                401 invalid_api_key
    │   └── MissingApiKey                      missing_api_key
    ├── NotFound                           404 not_found             GET/DELETE of an unknown response id
    ├── PayloadTooLarge                    413 payload_too_large     HTTP body over the limit
    ├── RequestTimeout                     408 request_timeout       HTTP body not received in time
    ├── WebSocketUnavailable               426 websocket_unavailable the box cannot take a WebSocket now
    │                                                                (draining, connection limit): use HTTP
    ├── ModelOverloaded                    503 model_overloaded      the worker is at capacity (retry later)
    ├── StoreUnavailable                   503 store_unavailable     the cold store did not answer a delete
    └── WorkerFailed                       500 server_error          the worker died or timed out
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthenticationError",
    "BinaryFrame",
    "BoxError",
    "ConnectionLimitReached",
    "ContextLengthExceeded",
    "InvalidJson",
    "InvalidStreamId",
    "InvalidType",
    "InvalidValue",
    "JsonTooDeep",
    "MissingApiKey",
    "MissingParameter",
    "ModelNotFound",
    "ModelOverloaded",
    "NotFound",
    "PayloadTooLarge",
    "PreviousResponseNotFound",
    "RejectedByModel",
    "RequestError",
    "RequestTimeout",
    "StoreUnavailable",
    "StreamLimitReached",
    "StringTooLong",
    "TooManyItems",
    "TooManyQueued",
    "TooManyTools",
    "UnknownCallId",
    "UnknownEventType",
    "UnsupportedParameter",
    "WebSocketUnavailable",
    "WorkerFailed",
    "all_codes",
]


class BoxError(Exception):
    """Base of every error the box reports; unexpected failures map to this (500, no details)."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "server_error"

    def __init__(
        self, message: str = "The server had an error processing your request.", *, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        # The previous_response_id of the request that failed, when it could be read: a failed
        # continuation evicts that id from the connection-local cache.
        self.previous_response_id: str | None = None
        # The WebSocket lane (stream_id) of the request that failed, when valid: its error event echoes it.
        self.stream_id: str | None = None

    def error_object(self) -> dict[str, str | None]:
        """The `error` object of the wire envelope: type, code, message, param."""
        return {"type": self.error_type, "code": self.code, "message": self.message, "param": self.param}


class RequestError(BoxError):
    """A request-scoped client error: the request is refused, the connection stays usable."""

    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class InvalidJson(RequestError):
    """The body or frame is not valid JSON (or not valid UTF-8), or not a JSON object."""

    code = "invalid_json"


class JsonTooDeep(RequestError):
    """The JSON nests deeper than the configured limit."""

    code = "json_too_deep"


class UnknownEventType(RequestError):
    """A WebSocket event whose type is not `response.create`."""

    code = "unknown_event_type"


class BinaryFrame(RequestError):
    """A binary WebSocket frame: events are JSON text frames."""

    code = "binary_frame_unsupported"


class MissingParameter(RequestError):
    """A required field is absent."""

    code = "missing_required_parameter"


class InvalidType(RequestError):
    """A field has the wrong JSON type."""

    code = "invalid_type"


class InvalidValue(RequestError):
    """A field has a value out of range or not one of the allowed values."""

    code = "invalid_value"


class UnsupportedParameter(RequestError):
    """A known field or item type that this server does not support (e.g. `background`)."""

    code = "unsupported_parameter"


class InvalidStreamId(InvalidValue):
    """A WebSocket `stream_id` that is not 1-256 characters of [A-Za-z0-9_.-]."""

    code = "invalid_stream_id"


class StringTooLong(RequestError):
    """A string is longer than its limit."""

    code = "string_above_max_length"


class TooManyItems(RequestError):
    """More input items than the limit."""

    code = "too_many_items"


class TooManyTools(RequestError):
    """More tools than the limit."""

    code = "too_many_tools"


class UnknownCallId(RequestError):
    """A function_call_output whose call_id matches no function_call of the chain."""

    code = "unknown_call_id"


class PreviousResponseNotFound(RequestError):
    """previous_response_id names no response this tenant can continue from here."""

    code = "previous_response_not_found"

    def __init__(self, response_id: str) -> None:
        super().__init__(
            f"Previous response with id '{response_id}' not found.", param="previous_response_id"
        )


class ContextLengthExceeded(RequestError):
    """The chain would exceed the box's maximum tokens per chain."""

    code = "context_length_exceeded"


class ModelNotFound(RequestError):
    """No worker serves the requested model (GET /v1/models lists the ones served)."""

    status = 404
    code = "model_not_found"


class ConnectionLimitReached(RequestError):
    """The WebSocket connection reached its maximum age; the box closes it (1000) after this error."""

    code = "websocket_connection_limit_reached"


class StreamLimitReached(RequestError):
    """A create opened one named lane (stream_id) more than a connection may have."""

    code = "websocket_stream_limit_reached"


class RejectedByModel(RequestError):
    """The model worker refused the request as invalid for it (its own limits: prompt or output tokens)."""

    code = "request_rejected_by_model"


class TooManyQueued(RequestError):
    """The connection's FIFO of response.create events is full."""

    status = 429
    code = "too_many_queued_requests"


class AuthenticationError(BoxError):
    """No or a wrong API key (HTTP 401, before any WebSocket upgrade)."""

    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class MissingApiKey(AuthenticationError):
    """No `Authorization: Bearer` header."""

    code = "missing_api_key"


class NotFound(BoxError):
    """An unknown (or another tenant's) response id on GET/DELETE."""

    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(BoxError):
    """An HTTP body over the configured limit."""

    status = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class RequestTimeout(BoxError):
    """An HTTP body that did not arrive within the body timeout."""

    status = 408
    error_type = "invalid_request_error"
    code = "request_timeout"


class WebSocketUnavailable(BoxError):
    """The box cannot serve a new WebSocket now (it is draining, or holds its most connections): the
    upgrade is answered 426, on which clients such as the Codex CLI fall back to HTTP."""

    status = 426
    code = "websocket_unavailable"


class ModelOverloaded(BoxError):
    """The model worker has no capacity for the request now (its queue or KV budget): retry later."""

    status = 503
    code = "model_overloaded"


class StoreUnavailable(BoxError):
    """The cold store could not be reached to complete a delete (retrying the DELETE is safe)."""

    status = 503
    code = "store_unavailable"


class WorkerFailed(BoxError):
    """The worker died mid-stream, timed out, or could not be reached: the response fails (server_error)."""

    status = 500
    error_type = "server_error"
    code = "server_error"


def all_codes() -> frozenset[str]:
    """Every code this tree can produce (the bounded label set of tether_box_errors_total)."""
    codes: set[str] = set()
    stack: list[type[BoxError]] = [BoxError]
    while stack:
        cls = stack.pop()
        codes.add(cls.code)
        stack.extend(cls.__subclasses__())
    return frozenset(codes)
