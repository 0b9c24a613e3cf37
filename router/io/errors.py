"""The one place where router errors become bytes on the wire: a complete HTTP/1.1 error response."""

from __future__ import annotations

import json
from http import HTTPStatus

from router.core.errors import RouterError

__all__ = ["error_response"]


def error_response(exc: BaseException, *, websocket: bool = False) -> tuple[bytes, str]:
    """The response for `exc` (RouterError: its status and reason; anything else: 500 without details),
    and the `reason` label to count it under. `websocket`: the request was a WebSocket upgrade, answered
    with the error's `websocket_status` where it has one (426: fall back to HTTP). The response closes the
    connection."""
    if isinstance(exc, RouterError) and type(exc) is not RouterError:
        status, reason, message = exc.http_status, exc.reason, exc.message
        if websocket and exc.websocket_status is not None:
            status = exc.websocket_status
    else:
        status, reason, message = 500, "internal", "internal router error"
    body = json.dumps(
        {"error": {"type": "router_error", "code": reason, "message": message, "param": None}},
        separators=(",", ":"),
    ).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head + body, reason
