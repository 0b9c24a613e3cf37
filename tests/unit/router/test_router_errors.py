"""The one error map: statuses per error, for plain HTTP and for WebSocket upgrades, and the JSON body."""

from __future__ import annotations

import json

import pytest

from router.core.errors import BadHead, EmptyRing, HeadTimeout, HeadTooLarge, NoUpstream, Overloaded
from router.io.errors import error_response


def parse(response: bytes) -> tuple[str, dict[str, str], dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert int(headers["Content-Length"]) == len(body)
    return status, headers, json.loads(body)


@pytest.mark.parametrize(
    ("exc", "http", "websocket", "reason"),
    [
        (Overloaded("full"), "503 Service Unavailable", "426 Upgrade Required", "overloaded"),
        (NoUpstream("none"), "502 Bad Gateway", "426 Upgrade Required", "no_upstream"),
        (EmptyRing("empty"), "503 Service Unavailable", "426 Upgrade Required", "no_upstream"),
        (BadHead("bad"), "400 Bad Request", "400 Bad Request", "malformed"),
        (
            HeadTooLarge("big"),
            "431 Request Header Fields Too Large",
            "431 Request Header Fields Too Large",
            "head_too_large",
        ),
        (HeadTimeout("slow"), "408 Request Timeout", "408 Request Timeout", "head_timeout"),
        (ValueError("a bug"), "500 Internal Server Error", "500 Internal Server Error", "internal"),
    ],
)
def test_statuses_for_http_and_for_websocket_upgrades(
    exc: Exception, http: str, websocket: str, reason: str
) -> None:
    """A WebSocket upgrade the router cannot serve (no box, at its limit) gets 426, so that the client
    falls back to HTTP; a bad request keeps its status; plain HTTP keeps every status."""
    for upgrade, expected in ((False, http), (True, websocket)):
        response, counted = error_response(exc, websocket=upgrade)
        status, headers, body = parse(response)
        assert status == f"HTTP/1.1 {expected}"
        assert counted == reason
        assert (headers["Content-Type"], headers["Connection"]) == ("application/json", "close")
        error = body["error"]
        assert isinstance(error, dict)
        assert (error["type"], error["code"]) == ("router_error", reason)
        assert error["message"] == ("internal router error" if reason == "internal" else str(exc))
