"""The data path: asyncio Protocols that read one request head, then splice raw bytes both ways.

`ClientConnection` buffers the head (bounded by size and time), hands it to the Router for a routing
decision and an upstream connect, then forwards every chunk as it arrives: no frame parsing, one
`transport.write` per chunk. Backpressure is flow control of the transports themselves: when one side's
write buffer passes its high-water mark, reading from the other side pauses until it drains, so a
connection holds at most about two write buffers (64 KiB each by default) however fast either peer is.

Closing: an EOF from either side is passed on as a half-close (`write_eof`); once both directions ended,
or when either side's connection is lost, both transports close (buffered bytes are still flushed). A
client that does not read cannot hold its slot and its buffered bytes forever: one whose write buffer
stays above its high-water mark for `send_timeout` seconds is dropped, and so is one that has not taken
what the box sent before it went away within that time.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import TYPE_CHECKING, cast

from router.core.errors import BadHead, HeadTimeout, HeadTooLarge
from router.core.head import Mode, find_head_end, parse_head
from router.io.errors import error_response

if TYPE_CHECKING:
    from router.io.router import Router

__all__ = ["ClientConnection", "UpstreamConnection"]

_LOG = logging.getLogger("router.relay")
LINGER_SECONDS = 2.0  # how long a rejected connection is drained before it is closed
LINGER_BYTES = 1 << 20  # ... or until this much was dropped


class State(enum.Enum):
    """Where a client connection is in its life."""

    HEAD = "head"  # reading the request head
    CONNECTING = "connecting"  # head parsed, reading paused, connecting to a box
    RELAY = "relay"  # splicing bytes
    LINGER = "linger"  # an error response was sent; reading and dropping until the client closes
    CLOSED = "closed"


class ClientConnection(asyncio.Protocol):
    """One accepted client connection."""

    __slots__ = (
        "_buffer",
        "_client_eof",
        "_finished",
        "_router",
        "_searched",
        "_stall",
        "_timer",
        "_upstream_eof",
        "active",
        "c2s",
        "member",
        "mode",
        "s2c",
        "state",
        "transport",
        "upstream",
    )

    def __init__(self, router: Router) -> None:
        self._router = router
        self._buffer = bytearray()
        self._searched = 0
        self._timer: asyncio.TimerHandle | None = None
        self._stall: asyncio.TimerHandle | None = None  # armed while the client is not taking bytes
        self._client_eof = False
        self._upstream_eof = False
        self._finished = False
        self.state = State.HEAD
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.mode: Mode | None = None
        self.member: str | None = None
        self.c2s = 0
        self.s2c = 0
        self.active = True  # set on every chunk; the idle sweeper clears it

    # ------------------------------------------------------------------ client side callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        refusal = self._router.accepted(self)
        if refusal is not None:
            self.reject(refusal)
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._router.settings.head_timeout, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        if self.state is State.RELAY:
            self.c2s += len(data)
            self.active = True
            self.upstream.write(data)  # type: ignore[union-attr]  # set whenever state is RELAY
        elif self.state is State.HEAD:
            self._head_data(data)
        elif self.state is State.CONNECTING:
            self._buffer += data  # at most one chunk: reading is paused while connecting
        elif self.state is State.LINGER:
            self._searched += len(data)
            if self._searched > LINGER_BYTES and self.transport is not None:
                self.transport.close()

    def eof_received(self) -> bool:
        if self.state is not State.RELAY or self.upstream is None:
            return False  # the client gave up before relaying started: close
        self._client_eof = True
        if self._upstream_eof:
            self.close()
        elif self.upstream.can_write_eof():
            self.upstream.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def pause_writing(self) -> None:  # the client reads slower than the box writes
        if self.upstream is not None:
            self.upstream.pause_reading()
        if self._stall is None:  # the client must take some of it within send_timeout
            timeout = self._router.settings.send_timeout
            self._stall = asyncio.get_running_loop().call_later(timeout, self._stalled)

    def resume_writing(self) -> None:
        self._cancel_stall()
        if self.upstream is not None and self.state is State.RELAY:
            self.upstream.resume_reading()

    def _stalled(self) -> None:
        self._stall = None
        _LOG.info("a client took no bytes for %.0f s; dropping it", self._router.settings.send_timeout)
        self.abort()

    def _cancel_stall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    # ------------------------------------------------------------------ head
    def _head_data(self, data: bytes) -> None:
        self._buffer += data
        limit = self._router.settings.max_head_bytes
        end = find_head_end(self._buffer, self._searched)
        if end > limit or (end < 0 and len(self._buffer) > limit):
            self.reject(HeadTooLarge(f"the request head exceeds {limit} bytes"))
            return
        if end < 0:
            self._searched = len(self._buffer)
            return
        raw, rest = bytes(self._buffer[:end]), bytes(self._buffer[end:])
        self._buffer = bytearray()
        try:
            head = parse_head(raw)
        except BadHead as exc:
            self.reject(exc)
            return
        self._cancel_timer()
        self.state = State.CONNECTING
        assert self.transport is not None
        self.transport.pause_reading()
        self._router.route(self, head, raw, rest)

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.state is State.HEAD:
            self.reject(
                HeadTimeout(f"no complete request head within {self._router.settings.head_timeout} s")
            )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pending(self) -> bytes:
        """Bytes that arrived after the head while connecting (forwarded right after it)."""
        data, self._buffer = bytes(self._buffer), bytearray()
        return data

    # ------------------------------------------------------------------ router → connection
    def start_relay(self, upstream: asyncio.Transport, member: str, mode: Mode, first: bytes) -> None:
        """The box accepted: forward the head (and anything after it), then splice."""
        assert self.transport is not None
        self.upstream, self.member, self.mode = upstream, member, mode
        self.state = State.RELAY
        first += self.pending()
        self.transport.resume_reading()  # before writing: the write may pause us again (backpressure)
        self.c2s += len(first)
        upstream.write(first)

    def reject(self, exc: BaseException) -> None:
        """Answer with an error response, counted under the error's reason, then close lingering: the
        response is followed by a FIN and whatever the client still sends is read and dropped for a moment.
        Closing at once with unread bytes would make the kernel answer with a reset, which can destroy the
        response before the client reads it (a slowloris or an oversized head is still sending)."""
        transport = self.transport
        if self.state in (State.CLOSED, State.LINGER) or transport is None:
            return
        response, reason = error_response(exc)
        self._router.rejected(self, reason, exc)
        self.state = State.LINGER
        self._cancel_timer()
        self._buffer = bytearray()
        self._searched = 0  # now counts the bytes dropped while lingering
        transport.write(response)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()
        self._timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._linger_over)

    def _linger_over(self) -> None:
        self._timer = None
        if self.transport is not None:
            self.transport.close()

    def upstream_eof(self) -> None:
        """The box ended its side (a half-close is passed on to the client)."""
        self._upstream_eof = True
        if self._client_eof:
            self.close()
        elif self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()

    def upstream_lost(self) -> None:
        """The box's side is gone: close the client's, flushing what is buffered for it, for at most
        send_timeout (a client that stopped reading would otherwise keep the connection forever)."""
        transport = self.transport
        if transport is None:
            return
        transport.close()
        # A fixed deadline, on the connection's timer (unused while relaying): unlike the stall timer, a
        # partial drain (resume_writing) does not cancel it.
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(self._router.settings.send_timeout, self.abort)

    def close(self) -> None:
        """Close both sides, flushing what is buffered."""
        if self.transport is not None:
            self.transport.close()
        if self.upstream is not None:
            self.upstream.close()

    def abort(self) -> None:
        """Drop both sides now (shutdown after the drain budget, idle timeout)."""
        if self.transport is not None:
            self.transport.abort()
        if self.upstream is not None:
            self.upstream.abort()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        was_relaying = self.state is State.RELAY
        self.state = State.CLOSED
        self._cancel_timer()
        self._cancel_stall()
        if self.upstream is not None:
            self.upstream.close()
        self._router.closed(self, was_relaying)
        # Break the protocol <-> transport cycles now, so a closed connection is freed by reference counting
        # instead of waiting for (and lengthening) a garbage-collector pass.
        self.transport = self.upstream = None


class UpstreamConnection(asyncio.Protocol):
    """The box side of a relayed connection: forwards to the client connection."""

    __slots__ = ("_client", "_client_transport")

    def __init__(self, client: ClientConnection) -> None:
        self._client = client
        self._client_transport = client.transport

    def data_received(self, data: bytes) -> None:
        client = self._client
        client.s2c += len(data)
        client.active = True
        if self._client_transport is not None:
            self._client_transport.write(data)

    def eof_received(self) -> bool:
        self._client.upstream_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._client_transport is not None:
            self._client.upstream_lost()
        self._client_transport = None

    def pause_writing(self) -> None:  # the box reads slower than the client writes
        if self._client_transport is not None:
            self._client_transport.pause_reading()

    def resume_writing(self) -> None:
        if self._client_transport is not None:
            self._client_transport.resume_reading()
