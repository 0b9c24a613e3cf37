"""The per-connection state machine of WebSocket mode, as a table. Pure: time is passed in as `now`.

Rule 1: everything that decides what a connection does next lives in this file; the shell
(api_box/io/ws.py) only performs the returned effects (start a turn, send an error event, close).

    IDLE ──create──▶ RUNNING ──turn done, queue empty──▶ IDLE
      ▲                │  ▲
      │                │  └── turn done, next queued create ──┘ (stays RUNNING)
      │                └──create──▶ queued FIFO (bounded: too_many_queued_requests beyond it)
      └── rejected create: error event, stays IDLE (the socket stays open)
    IDLE ──deadline──▶ CLOSED   (error websocket_connection_limit_reached, then close 1000)
    RUNNING ──deadline──▶ RUNNING, expired: the running turn finishes, then every queued create is
                          answered with websocket_connection_limit_reached and the socket closes (1000)

Invariants: at most one response in flight; creates run in arrival order; a rejected create is answered
in its place in that order; a failed turn (4xx or 5xx) that continued from an id evicts that id from the
connection-local cache; the cache holds only the most recent response of the connection.

Close code at the connection limit: 1000. The age limit is not an error of the transport, and the SDK
treats 1000 as a clean end (no auto-reconnect), which is what a client that must open a new connection
and resend its context needs (protocol.md §7 leaves 1000 or 1008 to us). A drain uses 1012 (reconnect).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from api_box.core.errors import BoxError, ConnectionLimitReached, RequestError, TooManyQueued
from api_box.core.protocol import CreateRequest
from api_box.core.store import ResponseRecord

CLOSE_NORMAL = 1000
CLOSE_SERVICE_RESTART = 1012

_LIMIT_MESSAGE = (
    "Responses websocket connection limit reached ({age}). Create a new websocket connection to continue."
)


def _age_text(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} minutes"
    return f"{seconds:g} seconds"


class ConnState(enum.IntEnum):
    """Where a connection is."""

    IDLE = 0
    RUNNING = 1
    CLOSED = 2


IDLE, RUNNING, CLOSED = ConnState.IDLE, ConnState.RUNNING, ConnState.CLOSED


@dataclass(frozen=True, slots=True)
class Arrival:
    """A frame that arrived: a parsed create, or the error that rejected it; when, and its size."""

    create: CreateRequest | RequestError
    received_at: float = 0.0
    size: int = 0


@dataclass(frozen=True, slots=True)
class StartTurn:
    """Run this create now (the connection is RUNNING until turn_finished)."""

    arrival: Arrival

    @property
    def create(self) -> CreateRequest:
        """The create to run."""
        assert isinstance(self.arrival.create, CreateRequest)
        return self.arrival.create


@dataclass(frozen=True, slots=True)
class SendError:
    """Send this error as a WebSocket error event."""

    error: BoxError


@dataclass(frozen=True, slots=True)
class Close:
    """Close the WebSocket with this code."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ReleaseChain:
    """The connection no longer references this store:false chain: the worker may drop it."""

    cache_key: str


Effect = StartTurn | SendError | Close | ReleaseChain


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """How a turn ended: its record when it completed, else failed; the id it continued from."""

    record: ResponseRecord | None
    previous_response_id: str | None

    @property
    def failed(self) -> bool:
        """True when the turn produced no chainable response."""
        return self.record is None


class ConnectionSession:
    """One WebSocket connection: FIFO of creates, the connection-local response cache, the age limit."""

    def __init__(self, *, opened_at: float, max_age_seconds: float, max_queued: int) -> None:
        self.state = IDLE
        self.deadline = opened_at + max_age_seconds
        self._max_age = max_age_seconds
        self._max_queued = max_queued
        self._queue: deque[Arrival] = deque()
        self._expired = False
        self.last: ResponseRecord | None = None

    @property
    def queued(self) -> int:
        """Creates waiting behind the running one."""
        return len(self._queue)

    def lookup(self, response_id: str) -> ResponseRecord | None:
        """The connection-local cached response with this id (only the most recent one is kept)."""
        last = self.last
        return last if last is not None and last.response_id == response_id else None

    def resume(self, record: ResponseRecord) -> None:
        """A sealed store:false handoff opened at connect (api_box/core/sealed.py): the connection-local
        response to continue from, before any create has run."""
        if self.state is IDLE and self.last is None:
            self.last = record

    def receive(self, incoming: Arrival, now: float) -> list[Effect]:
        """A create (or a rejected create) arrived on the socket."""
        if now >= self.deadline:
            self._expired = True
        return _TABLE[(self.state, _RECEIVE)](self, incoming)

    def turn_finished(self, outcome: TurnOutcome, now: float) -> list[Effect]:
        """The running turn ended (completed, incomplete or failed)."""
        if now >= self.deadline:
            self._expired = True
        return _TABLE[(self.state, _TURN_DONE)](self, outcome)

    def deadline_reached(self, now: float) -> list[Effect]:
        """The shell's timer fired; a no-op before the deadline (timers may fire early)."""
        if now < self.deadline:
            return []
        self._expired = True
        return _TABLE[(self.state, _DEADLINE)](self, None)

    def close(self, *, keep_chain: bool = False) -> list[Effect]:
        """The socket closed: release what the connection held, except a chain handed off to the client's
        next connection (`keep_chain`: the worker keeps its KV, so the next box continues it warm)."""
        effects = [] if keep_chain else self._release(self.last)
        self.last = None
        self._queue.clear()
        self.state = CLOSED
        return effects

    # -- transitions -------------------------------------------------------------------------------

    def _idle_receive(self, incoming: object) -> list[Effect]:
        assert isinstance(incoming, Arrival)
        if self._expired:
            return self._close_expired(extra=1)
        return self._dispatch(incoming)

    def _running_receive(self, incoming: object) -> list[Effect]:
        assert isinstance(incoming, Arrival)
        if len(self._queue) >= self._max_queued:
            error = TooManyQueued(
                f"At most {self._max_queued} response.create events may wait behind a running one."
            )
            return [SendError(error)]
        self._queue.append(incoming)
        return []

    def _running_turn_done(self, outcome: object) -> list[Effect]:
        assert isinstance(outcome, TurnOutcome)
        effects = self._remember(outcome)
        self.state = IDLE
        if self._expired:
            return effects + self._close_expired(extra=0)
        while self._queue and self.state is IDLE:
            effects += self._dispatch(self._queue.popleft())
        return effects

    def _idle_deadline(self, _: object) -> list[Effect]:
        return self._close_expired(extra=0)

    def _running_deadline(self, _: object) -> list[Effect]:
        return []  # the running turn finishes first; _running_turn_done closes

    def _ignore(self, _: object) -> list[Effect]:
        return []

    # -- helpers -----------------------------------------------------------------------------------

    def _dispatch(self, incoming: Arrival) -> list[Effect]:
        rejected = incoming.create
        if isinstance(rejected, RequestError):
            return [SendError(rejected), *self._evict(rejected.previous_response_id)]
        self.state = RUNNING
        return [StartTurn(incoming)]

    def _remember(self, outcome: TurnOutcome) -> list[Effect]:
        if outcome.record is None:
            return self._evict(outcome.previous_response_id)
        old, self.last = self.last, outcome.record
        if old is not None and old.ref.chain is not outcome.record.ref.chain:
            return self._release(old)
        return []

    def _evict(self, response_id: str | None) -> list[Effect]:
        last = self.last
        if response_id is None or last is None or last.response_id != response_id:
            return []
        self.last = None
        return self._release(last)

    @staticmethod
    def _release(record: ResponseRecord | None) -> list[Effect]:
        if record is None or record.store:
            return []
        return [ReleaseChain(record.ref.chain.cache_key)]

    def _close_expired(self, *, extra: int) -> list[Effect]:
        """One limit error per create that will not run (at least one), then close 1000."""
        message = _LIMIT_MESSAGE.format(age=_age_text(self._max_age))
        answers = max(1, len(self._queue) + extra)
        effects: list[Effect] = [SendError(ConnectionLimitReached(message)) for _ in range(answers)]
        effects += self.close()
        effects.append(Close(CLOSE_NORMAL, "connection limit reached"))
        return effects


_RECEIVE, _TURN_DONE, _DEADLINE = "receive", "turn_done", "deadline"
_Handler = Callable[[ConnectionSession, object], list[Effect]]

# (state, input) -> handler. Anything not listed cannot happen in that state and is ignored.
_TABLE: dict[tuple[ConnState, str], _Handler] = {
    (IDLE, _RECEIVE): ConnectionSession._idle_receive,
    (IDLE, _TURN_DONE): ConnectionSession._ignore,
    (IDLE, _DEADLINE): ConnectionSession._idle_deadline,
    (RUNNING, _RECEIVE): ConnectionSession._running_receive,
    (RUNNING, _TURN_DONE): ConnectionSession._running_turn_done,
    (RUNNING, _DEADLINE): ConnectionSession._running_deadline,
    (CLOSED, _RECEIVE): ConnectionSession._ignore,
    (CLOSED, _TURN_DONE): ConnectionSession._ignore,
    (CLOSED, _DEADLINE): ConnectionSession._ignore,
}
