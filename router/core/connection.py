"""The life of one client connection, sans I/O: its states, its deadlines, what each event asks of the shell.

Rule 1: everything that decides a connection's state or when it must end lives here; the shell
(`router/io/relay.py`) only moves bytes and performs the returned actions.
Rule 2: no clock and no I/O: every method that needs the time takes `now` (the shell's monotonic clock), and
the shell arms one timer for `deadline` and calls `on_timer` when it fires.

    HEAD ──head read──▶ CONNECTING ──start_relay──▶ RELAY ──both EOFs, a side lost, a timer──▶ CLOSED
      │                      │
      └──bad head, timeout,──┴──reject──▶ LINGER ──client EOF, linger over, linger_bytes dropped──▶ CLOSED
         refusal, no box

Deadlines (`deadline` is the earliest that is set):
- head:   HEAD must end within `head_timeout` of the accept, however active the client (slowloris). A
          connection accepted over the router's limit (`refusal`) reads its head for at most
          `linger_seconds`, only so that its refusal can tell a WebSocket upgrade (426) from plain HTTP.
- linger: after an error response the client's bytes are read and dropped for `linger_seconds` (or until
          `linger_bytes` were dropped) before the close, so that no reset destroys the response.
- stall:  a client whose write buffer stays full (`client_paused`) for `send_timeout` is dropped; a partial
          drain (`client_resumed`) clears it.
- flush:  after the box went away (`upstream_lost`) the client must take what is buffered for it within
          `send_timeout`; fixed, a partial drain does not move it.
- idle:   while relaying, a check every `idle_timeout / idle_checks`: a connection that moved no byte at
          `idle_checks` checks in a row (`idle_timeout`, so it idled between 1 and 1 + 1/idle_checks of it)
          is closed; if it is still open at the next check (its close could not flush) it is aborted. Bytes
          are counted by the shell: `on_timer` compares the total it is given with the one it saw at the
          last check, so the relay's hot path reports nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from router.core.errors import HeadTimeout, HeadTooLarge, RouterError
from router.core.head import Mode, RequestHead, find_head_end, mode_of, parse_head

__all__ = ["Connection", "Do", "HeadRead", "Limits", "Reject", "State"]


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of every connection (seconds and bytes)."""

    head_timeout: float
    max_head_bytes: int
    send_timeout: float
    idle_timeout: float
    linger_seconds: float = 2.0
    linger_bytes: int = 1 << 20
    idle_checks: int = 4  # idle checks per idle_timeout: an idle connection is closed within 1 + 1/4 of it


class State(enum.Enum):
    """Where a client connection is in its life."""

    HEAD = "head"  # reading the request head
    CONNECTING = "connecting"  # head read, reading paused, connecting to a box
    RELAY = "relay"  # splicing bytes
    LINGER = "linger"  # an error response was sent; reading and dropping until the client closes
    CLOSED = "closed"


class Do(enum.Enum):
    """What the shell must do after an event."""

    NOTHING = "nothing"
    PASS_EOF = "pass_eof"  # pass a half-close on to the other side
    CLOSE = "close"  # close both sides, flushing what is buffered
    CLOSE_IDLE = "close_idle"  # the same, because no byte moved for idle_timeout
    ABORT = "abort"  # drop both sides now
    ABORT_STALLED = "abort_stalled"  # the same, because the client took no bytes for send_timeout


@dataclass(frozen=True, slots=True)
class HeadRead:
    """The head ended: route the connection. `raw` is the head as received (what followed it is kept for
    `take_early`)."""

    head: RequestHead
    raw: bytes


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer with `error` (its HTTP response) and linger."""

    error: RouterError


Action = Do | Reject


class Connection:
    """One client connection's state and deadlines."""

    __slots__ = (
        "_buffer",
        "_check_at",
        "_client_eof",
        "_dropped",
        "_flush_at",
        "_head_at",
        "_limits",
        "_linger_at",
        "_moved",
        "_quiet",
        "_searched",
        "_stall_at",
        "_upstream_eof",
        "mode",
        "refusal",
        "state",
    )

    def __init__(self, limits: Limits, now: float, refusal: RouterError | None = None) -> None:
        """A connection accepted at `now`. With `refusal` (the router is at its limit) its head is read
        only to answer with the refusal."""
        self._limits = limits
        self.state = State.HEAD
        self.refusal = refusal
        self.mode: Mode | None = None  # known once the head was read
        self._buffer = bytearray()
        self._searched = 0  # bytes of the buffer searched for the head's end
        self._dropped = 0  # bytes read and dropped while lingering
        budget = limits.head_timeout if refusal is None else min(limits.head_timeout, limits.linger_seconds)
        self._head_at: float | None = now + budget
        self._linger_at: float | None = None
        self._stall_at: float | None = None
        self._flush_at: float | None = None
        self._check_at: float | None = None
        self._client_eof = False
        self._upstream_eof = False
        self._moved = 0  # bytes relayed at the last idle check
        self._quiet = 0  # idle checks in a row that saw no byte move

    # ------------------------------------------------------------------ queries
    @property
    def deadline(self) -> float | None:
        """When `on_timer` must next be called (None: no deadline is set)."""
        earliest: float | None = None
        for at in (self._head_at, self._linger_at, self._stall_at, self._flush_at, self._check_at):
            if at is not None and (earliest is None or at < earliest):
                earliest = at
        return earliest

    @property
    def stalled(self) -> bool:
        """Whether the client's write buffer is full (its stall deadline is running)."""
        return self._stall_at is not None

    # ------------------------------------------------------------------ client bytes outside the relay
    def receive(self, data: bytes) -> HeadRead | Action:
        """Bytes from the client before or after relaying (the shell forwards relayed bytes itself).

        HEAD: buffered until the head ends: HeadRead then (CONNECTING), or Reject for a head that is too
        large or malformed, and for any head of a refused connection. CONNECTING: kept for after the head
        (`take_early`). LINGER: dropped; CLOSE once `linger_bytes` were dropped."""
        if self.state is State.HEAD:
            return self._head(data)
        if self.state is State.CONNECTING:
            self._buffer += data
        elif self.state is State.LINGER:
            self._dropped += len(data)
            if self._dropped > self._limits.linger_bytes:
                return Do.CLOSE
        return Do.NOTHING

    def _head(self, data: bytes) -> HeadRead | Reject | Do:
        self._buffer += data
        limit = self._limits.max_head_bytes
        end = find_head_end(self._buffer, self._searched)
        if end > limit or (end < 0 and len(self._buffer) > limit):
            return Reject(self.refusal or HeadTooLarge(f"the request head exceeds {limit} bytes"))
        if end < 0:
            self._searched = len(self._buffer)
            return Do.NOTHING
        raw, rest = bytes(self._buffer[:end]), bytes(self._buffer[end:])
        try:
            head = parse_head(raw)
        except RouterError as exc:
            return Reject(self.refusal or exc)
        self.mode = mode_of(head)
        if self.refusal is not None:
            return Reject(self.refusal)
        self._buffer = bytearray(rest)  # forwarded right after the head (`take_early`)
        self.state = State.CONNECTING
        self._head_at = None
        return HeadRead(head, raw)

    def take_early(self) -> bytes:
        """The bytes that followed the head (forwarded right after it when relaying starts)."""
        data, self._buffer = bytes(self._buffer), bytearray()
        return data

    # ------------------------------------------------------------------ transitions
    def start_relay(self, now: float) -> None:
        """A box accepted the connection: splice from now on; idle checks start."""
        if self.state is not State.CONNECTING:
            raise RuntimeError(f"start_relay in state {self.state.value}")
        self.state = State.RELAY
        self._check_at = now + self._limits.idle_timeout / self._limits.idle_checks

    def reject(self, now: float) -> bool:
        """An error response is being sent: linger until the client closes, `linger_seconds` pass or
        `linger_bytes` were dropped. False when the connection already lingers or closed (nothing to send)."""
        if self.state in (State.LINGER, State.CLOSED):
            return False
        self.state = State.LINGER
        self._head_at = self._check_at = None
        self._buffer = bytearray()
        self._dropped = 0
        self._linger_at = now + self._limits.linger_seconds
        return True

    def client_eof(self) -> Do:
        """The client ended its side: PASS_EOF on to the box while relaying (CLOSE when the box had ended
        too); outside the relay nothing is left to do but CLOSE."""
        if self.state is not State.RELAY:
            return Do.CLOSE
        self._client_eof = True
        return Do.CLOSE if self._upstream_eof else Do.PASS_EOF

    def upstream_eof(self) -> Do:
        """The box ended its side: PASS_EOF on to the client (CLOSE when the client had ended too)."""
        self._upstream_eof = True
        return Do.CLOSE if self._client_eof else Do.PASS_EOF

    def client_paused(self, now: float) -> None:
        """The client's write buffer passed its high-water mark: it must take bytes within send_timeout."""
        if self._stall_at is None and self.state is not State.CLOSED:
            self._stall_at = now + self._limits.send_timeout

    def client_resumed(self) -> bool:
        """The client's write buffer drained below its low-water mark. True when relaying (the shell then
        resumes reading from the box)."""
        self._stall_at = None
        return self.state is State.RELAY

    def upstream_lost(self, now: float) -> None:
        """The box's side is gone: what is buffered for the client must flush within send_timeout."""
        if self._flush_at is None and self.state is not State.CLOSED:
            self._flush_at = now + self._limits.send_timeout

    def finish(self) -> bool:
        """The client's side is gone: CLOSED, no deadline left. True when the connection was relaying."""
        was_relaying = self.state is State.RELAY
        self.state = State.CLOSED
        self._head_at = self._linger_at = self._stall_at = self._flush_at = self._check_at = None
        self._buffer = bytearray()
        return was_relaying

    # ------------------------------------------------------------------ time
    def on_timer(self, now: float, moved: int) -> Action:
        """The deadline came (`moved`: bytes relayed so far, both directions). One action per call; the
        shell calls again while `deadline` is not in the future."""
        if self._head_at is not None and now >= self._head_at:
            self._head_at = None
            limit = self._limits.head_timeout
            return Reject(self.refusal or HeadTimeout(f"no complete request head within {limit} s"))
        if self._linger_at is not None and now >= self._linger_at:
            self._linger_at = None
            return Do.CLOSE
        if self._flush_at is not None and now >= self._flush_at:
            self._flush_at = None
            return Do.ABORT
        if self._stall_at is not None and now >= self._stall_at:
            self._stall_at = None
            return Do.ABORT_STALLED
        if self._check_at is not None and now >= self._check_at:
            return self._idle_check(now, moved)
        return Do.NOTHING

    def _idle_check(self, now: float, moved: int) -> Do:
        limits = self._limits
        self._check_at = now + limits.idle_timeout / limits.idle_checks
        if moved != self._moved:
            self._moved, self._quiet = moved, 0
            return Do.NOTHING
        self._quiet += 1
        if self._quiet == limits.idle_checks:
            return Do.CLOSE_IDLE
        if self._quiet > limits.idle_checks:  # closed at the last check and still here: it could not flush
            return Do.ABORT
        return Do.NOTHING
