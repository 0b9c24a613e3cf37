"""The router's exception tree. Each class carries the HTTP status it answers with and the `reason` label of
`tether_router_rejected_total`; `router/io/errors.py:error_response` is the one function that turns them into
bytes on the wire. Every one of them is raised before a single byte reached a box.

                           HTTP  WebSocket
    RouterError             500  500  internal        (base; anything unexpected)
    ├── BadHead             400  400  malformed       the request head is not valid HTTP/1.1
    ├── HeadTooLarge        431  431  head_too_large  no end of head within the size limit
    ├── HeadTimeout         408  408  head_timeout    the head did not arrive in time (slowloris)
    ├── Overloaded          503  426  overloaded      the router holds its maximum number of connections
    ├── NoUpstream          502  426  no_upstream     every candidate box refused or timed out
    │   └── EmptyRing       503  426  no_upstream     the ring has no members at all
    └── ConfigError          —    —   —               bad settings or membership input; never on the wire

A WebSocket upgrade the router cannot serve (no box, or the router at its limit) is answered
`426 Upgrade Required`: clients of the Responses API's WebSocket mode (the Codex CLI) take it as "use HTTP"
and send the turn as a plain POST, which gets the HTTP status if it cannot be served either.
"""

from __future__ import annotations

from typing import ClassVar, Literal

__all__ = [
    "BadHead",
    "ConfigError",
    "EmptyRing",
    "HeadTimeout",
    "HeadTooLarge",
    "NoUpstream",
    "Overloaded",
    "RejectReason",
    "RouterError",
]

RejectReason = Literal["internal", "malformed", "head_too_large", "head_timeout", "overloaded", "no_upstream"]


class RouterError(Exception):
    """Base of every error the router reports; unexpected ones answer 500 without details."""

    http_status: ClassVar[int] = 500
    websocket_status: ClassVar[int | None] = None  # the status for a WebSocket upgrade; None: http_status
    reason: ClassVar[RejectReason] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadHead(RouterError):
    """The request head is malformed (request line, header syntax, framing headers)."""

    http_status: ClassVar[int] = 400
    reason: ClassVar[RejectReason] = "malformed"


class HeadTooLarge(RouterError):
    """The head did not end within the configured maximum size."""

    http_status: ClassVar[int] = 431
    reason: ClassVar[RejectReason] = "head_too_large"


class HeadTimeout(RouterError):
    """The complete head did not arrive within the head-read timeout."""

    http_status: ClassVar[int] = 408
    reason: ClassVar[RejectReason] = "head_timeout"


class Overloaded(RouterError):
    """The router already relays its configured maximum number of connections."""

    http_status: ClassVar[int] = 503
    websocket_status: ClassVar[int | None] = 426
    reason: ClassVar[RejectReason] = "overloaded"


class NoUpstream(RouterError):
    """No box accepted the connection: the key's owner and its ring successors all failed."""

    http_status: ClassVar[int] = 502
    websocket_status: ClassVar[int | None] = 426
    reason: ClassVar[RejectReason] = "no_upstream"


class EmptyRing(NoUpstream):
    """The ring has no members (membership is empty or not known yet)."""

    http_status: ClassVar[int] = 503


class ConfigError(RouterError, ValueError):
    """Invalid settings or membership input. Raised at startup or by a membership source; never sent."""
