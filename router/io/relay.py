"""The data path: asyncio Protocols that read one request head, then splice raw bytes both ways.

`ClientConnection` is the shell of one connection whose state and deadlines live in its core
(`router/core/connection.py`): it feeds the core what happens (bytes before the relay, EOFs, lost
transports, full and drained write buffers, its one timer firing) and performs what the core answers. While
relaying, every chunk is forwarded as it arrives (no frame parsing, one `transport.write` per chunk) and
counted in plain ints; the core hears nothing from that hot path.

Backpressure is flow control of the transports themselves: when one side's write buffer passes its
high-water mark, reading from the other side pauses until it drains, so a connection holds at most about two
write buffers (64 KiB each by default) however fast either peer is.

Closing: an EOF from either side is passed on as a half-close (`write_eof`); once both directions ended,
or when either side's connection is lost, both transports close (buffered bytes are still flushed). A
client that does not read cannot hold its slot and its buffered bytes forever: one whose write buffer
stays above its high-water mark for `send_timeout` seconds is dropped, and so is one that has not taken
what the box sent before it went away within that time; a connection that moved no byte for
`idle_timeout` is closed.

The connection's owner (the Router) is reached through `Owner`: this module imports nothing of it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, cast

from router.core.connection import Connection, Do, HeadRead, Limits, Reject, State
from router.core.errors import RouterError
from router.core.head import Mode, RequestHead
from router.io.clock import Clock, Timer
from router.io.errors import error_response

__all__ = ["ClientConnection", "Owner", "UpstreamConnection"]

_LOG = logging.getLogger("router.relay")
_ACCESS_LOG = logging.getLogger("router.access")


class Owner(Protocol):
    """What a connection needs from the router that accepted it."""

    clock: Clock
    limits: Limits

    def accepted(self, conn: ClientConnection) -> RouterError | None:
        """Track a new connection; the error to refuse it with (once its head was read), or None."""

    def route(self, conn: ClientConnection, head: RequestHead, raw: bytes) -> None:
        """Pick a box and connect; then `start_relay` or `reject`."""

    def rejected(self, conn: ClientConnection, reason: str, exc: BaseException) -> None:
        """Count a connection answered with an error response."""

    def closed(self, conn: ClientConnection, was_relaying: bool) -> None:
        """Untrack a connection whose client side is gone."""


class ClientConnection(asyncio.Protocol):
    """One accepted client connection: the shell of a `Connection` core."""

    __slots__ = (
        "_clock",
        "_core",
        "_owner",
        "_sink",
        "_timer",
        "_timer_at",
        "c2s",
        "member",
        "s2c",
        "transport",
        "upstream",
    )

    def __init__(self, owner: Owner) -> None:
        self._owner = owner
        self._clock = owner.clock
        self._core: Connection | None = None  # made when the connection is accepted
        self._timer: Timer | None = None  # armed at `_timer_at`, never later than the core's deadline
        self._timer_at = 0.0
        self._sink: asyncio.Transport | None = None  # the upstream while client bytes are relayed to it
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.member: str | None = None
        self.c2s = 0
        self.s2c = 0

    @property
    def core(self) -> Connection:
        """The connection's state and deadlines (read it; only this shell feeds it)."""
        assert self._core is not None, "the connection was not accepted yet"
        return self._core

    @property
    def mode(self) -> Mode | None:
        """`ws` or `http` once the head was read."""
        return None if self._core is None else self._core.mode

    @property
    def connecting(self) -> bool:
        """Whether the connection waits for a box (its head was read, no box accepted yet)."""
        return self._core is not None and self._core.state is State.CONNECTING

    # ------------------------------------------------------------------ client side callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        refusal = self._owner.accepted(self)  # over the limit: the head is read only to be refused
        self._core = Connection(self._owner.limits, self._clock.time(), refusal)
        self._arm()

    def data_received(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None:  # the hot path: relaying
            self.c2s += len(data)
            sink.write(data)
            return
        try:
            outcome = self.core.receive(data)
        except Exception as exc:  # a bug in the core: answer 500, never leave the connection hanging
            self.reject(exc)
            return
        if isinstance(outcome, HeadRead):
            assert self.transport is not None
            self.transport.pause_reading()
            self._owner.route(self, outcome.head, outcome.raw)
        else:
            self._perform(outcome)

    def eof_received(self) -> bool:
        action = self.core.client_eof()
        if action is Do.PASS_EOF and self.upstream is not None and self.upstream.can_write_eof():
            self.upstream.write_eof()
        elif action is Do.CLOSE:
            self.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        core = self._core
        if core is None or core.state is State.CLOSED:
            return
        was_relaying = core.finish()
        self._sink = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.upstream is not None:
            self.upstream.close()
        self._owner.closed(self, was_relaying)
        # Break the protocol <-> transport cycles now, so a closed connection is freed by reference counting
        # instead of waiting for (and lengthening) a garbage-collector pass.
        self.transport = self.upstream = None

    def pause_writing(self) -> None:  # the client reads slower than the box writes
        if self.upstream is not None:
            self.upstream.pause_reading()
        core = self.core
        if not core.stalled:
            core.client_paused(self._clock.time())
            self._arm()

    def resume_writing(self) -> None:
        if self.core.client_resumed() and self.upstream is not None:
            self.upstream.resume_reading()

    # ------------------------------------------------------------------ the one timer
    def _arm(self) -> None:
        """Make sure the timer fires no later than the core's deadline. A timer armed earlier is kept (it
        finds nothing due, then re-arms), so a deadline cleared by the core costs no cancel."""
        deadline = self.core.deadline
        if deadline is None or (self._timer is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._clock.call_at(deadline, self._expired)

    def _expired(self) -> None:
        self._timer = None
        core = self.core
        # The clock runs a timer once its time came; a loop whose clock is coarser than the deadline may
        # read a hair earlier. It is the armed time at least.
        now = max(self._clock.time(), self._timer_at)
        while core.state is not State.CLOSED:
            deadline = core.deadline
            if deadline is None or deadline > now:
                break
            self._perform(core.on_timer(now, self.c2s + self.s2c))
        if core.state is not State.CLOSED:
            self._arm()

    def _perform(self, action: Do | Reject) -> None:
        if isinstance(action, Reject):
            self.reject(action.error)
        elif action is Do.NOTHING:
            pass
        elif action is Do.CLOSE:
            self.close()
        elif action is Do.CLOSE_IDLE:
            _ACCESS_LOG.debug("closing a connection idle for %.0f s", self._owner.limits.idle_timeout)
            self.close()
        elif action is Do.ABORT_STALLED:
            _LOG.info("a client took no bytes for %.0f s; dropping it", self._owner.limits.send_timeout)
            self.abort()
        else:
            self.abort()

    # ------------------------------------------------------------------ router → connection
    def start_relay(self, upstream: asyncio.Transport, member: str, first: bytes) -> None:
        """The box accepted: forward the head (and anything after it), then splice."""
        assert self.transport is not None
        core = self.core
        core.start_relay(self._clock.time())
        self.upstream = self._sink = upstream
        self.member = member
        first += core.take_early()
        self.transport.resume_reading()  # before writing: the write may pause us again (backpressure)
        self.c2s += len(first)
        upstream.write(first)
        self._arm()

    def reject(self, exc: BaseException) -> None:
        """Answer with an error response, counted under the error's reason, then close lingering: the
        response is followed by a FIN and whatever the client still sends is read and dropped for a moment.
        Closing at once with unread bytes would make the kernel answer with a reset, which can destroy the
        response before the client reads it (a slowloris or an oversized head is still sending)."""
        transport = self.transport
        if transport is None or not self.core.reject(self._clock.time()):
            return
        response, reason = error_response(exc, websocket=self.core.mode is Mode.WS)
        self._owner.rejected(self, reason, exc)
        transport.write(response)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()
        self._arm()

    def upstream_eof(self) -> None:
        """The box ended its side (a half-close is passed on to the client)."""
        action = self.core.upstream_eof()
        if action is Do.CLOSE:
            self.close()
        elif self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()

    def upstream_lost(self) -> None:
        """The box's side is gone: close the client's, flushing what is buffered for it, for at most
        send_timeout (a client that stopped reading would otherwise keep the connection forever)."""
        transport = self.transport
        if transport is None:
            return
        self._sink = None  # what the client still sends has nowhere to go
        transport.close()
        self.core.upstream_lost(self._clock.time())
        self._arm()

    def close(self) -> None:
        """Close both sides, flushing what is buffered."""
        if self.transport is not None:
            self.transport.close()
        if self.upstream is not None:
            self.upstream.close()

    def abort(self) -> None:
        """Drop both sides now (shutdown after the drain budget, a stalled or idle client)."""
        if self.transport is not None:
            self.transport.abort()
        if self.upstream is not None:
            self.upstream.abort()


class UpstreamConnection(asyncio.Protocol):
    """The box side of a relayed connection: forwards to the client connection."""

    __slots__ = ("_client", "_client_transport")

    def __init__(self, client: ClientConnection) -> None:
        self._client = client
        self._client_transport = client.transport

    def data_received(self, data: bytes) -> None:
        self._client.s2c += len(data)
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
