"""The per-connection state machine of WebSocket mode, as a table. Pure: time is passed in as `now`.

Rule 1: everything that decides what a connection does next lives in this file; the shell
(api_box/io/ws.py) only performs the returned effects (start a turn, send an error event, close).

    IDLE ──create──▶ RUNNING ──last running turn done, nothing ready──▶ IDLE
      ▲                │  ▲
      │                │  └── turn done, next create of a lane starts ──┘ (stays RUNNING)
      │                └──create──▶ its lane's FIFO (bounded: too_many_queued_requests beyond it)
      └── rejected create: error event, stays IDLE (the socket stays open)
    IDLE ──deadline──▶ CLOSED   (error websocket_connection_limit_reached, then close 1000)
    RUNNING ──deadline──▶ RUNNING, expired: the running turns finish, then every queued create is
                          answered with websocket_connection_limit_reached and the socket closes (1000)

Lanes (`stream_id`, the openai SDK's `responses_websocket` sessions): creates of one lane run one at a time in
arrival order; different lanes run concurrently, at most `max_in_flight` responses at once (a lane ready to
run waits for a slot, in the order lanes became ready); at most `max_lanes` distinct named lanes per
connection (websocket_stream_limit_reached). The default lane (no stream_id) is the only lane of a client that
never names one, so such a client sees exactly one response in flight, as Open Responses requires.

Invariants: per lane, at most one response in flight and creates start in arrival order; a rejected
create is answered in its place in its lane's order; a failed turn (4xx or 5xx) that continued from its
own lane's cached response evicts it, while a failed fork from another lane's response keeps that parent;
the connection-local cache holds the most recent response of each lane.

Resume (api_box/core/parking.py): `cached()` is what a connection whose socket dropped leaves parked, per
lane its most recent response and the one before it when both share one chain (so keeping it costs no
chain); `restore` installs that in the client's next connection, where a lane's first continuation may
name either (the client may not have seen the last one's terminal event before the socket died). A turn
cancelled by the drop never reaches `turn_finished`: it changes nothing.

Steering (api_box/core/steer.py): a `response.steer` names a response running on this connection (the
shell reports each response id as it is created: `response_created`). Accepted (up to
`max_pending_steers` per response): `SteerAccepted`, and on the first one `StopResponse` (the shell asks the
worker to end it early; it ends incomplete, reason steered, keeping what it generated). When it ends, its
steers go on in one of three ways: it failed, or the connection is expiring: `SteerFailed` for each; it
completed waiting for tool outputs: `SteerPending` for each, and they are prepended to the lane's next
create that continues from it (any other create fails them, response_not_active); otherwise a successor
starts at once on the same lane, ahead of its queue: the response's create with the steers' messages as
input, continuing from it (its `response.created` commits them; refused before that: `SteerFailed`
successor_creation_failed, and the steered response stays the lane's to continue from). A steer for a
response that is not running: response_already_completed when it is cached here, else
response_not_found; a warm-up or a compacting response: steering_not_supported.

Close code at the connection limit: 1000. The age limit is not an error of the transport, and the SDK
treats 1000 as a clean end (no auto-reconnect), which is what a client that must open a new connection
and resend its context needs (OpenAI documents no close code for the age limit; 1000 or 1008 would both
be defensible). A drain uses 1012, on which the SDK reconnects.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from api_box.core.errors import (
    BoxError,
    ConnectionLimitReached,
    RequestError,
    StreamLimitReached,
    TooManyQueued,
)
from api_box.core.protocol import CreateRequest
from api_box.core.steer import (
    INVALID_INPUT,
    RESPONSE_ALREADY_COMPLETED,
    RESPONSE_NOT_ACTIVE,
    RESPONSE_NOT_FOUND,
    STEERING_NOT_SUPPORTED,
    SUCCESSOR_CREATION_FAILED,
    TOO_MANY_PENDING_STEERS,
    InvalidSteer,
    RequiredInput,
    Steer,
    SteerRequest,
)
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
Lane = str | None  # a stream_id; None is the default lane


@dataclass(frozen=True, slots=True)
class Arrival:
    """A frame that arrived: a parsed create, or the error that rejected it; when, and its size."""

    create: CreateRequest | RequestError
    received_at: float = 0.0
    size: int = 0
    steers: tuple[Steer, ...] = ()  # steering input this create commits (a successor, or a continuation)
    automatic: bool = False  # a successor the box started for steers (the client sent no create)

    @property
    def lane(self) -> Lane:
        """The lane it arrived on (a rejected create names one when its stream_id was valid)."""
        return self.create.stream_id


@dataclass(frozen=True, slots=True)
class StartTurn:
    """Run this create now (its lane is busy until turn_finished)."""

    arrival: Arrival

    @property
    def create(self) -> CreateRequest:
        """The create to run."""
        assert isinstance(self.arrival.create, CreateRequest)
        return self.arrival.create


@dataclass(frozen=True, slots=True)
class SendError:
    """Send this error as a WebSocket error event, on `lane` (a named lane's events echo its stream_id)."""

    error: BoxError
    lane: Lane = None


@dataclass(frozen=True, slots=True)
class Close:
    """Close the WebSocket with this code."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ReleaseChain:
    """The connection no longer references this store:false chain: the worker may drop it."""

    cache_key: str


@dataclass(frozen=True, slots=True)
class SteerAccepted:
    """Send response.steer.accepted."""

    steer: Steer
    lane: Lane = None


@dataclass(frozen=True, slots=True)
class SteerPending:
    """Send response.steer.pending: the steered response completed waiting for these tool outputs."""

    steer: Steer
    required: tuple[RequiredInput, ...]
    lane: Lane = None


@dataclass(frozen=True, slots=True)
class SteerFailed:
    """Send response.steer.failed with the input as sent (and the steer's id once it was accepted)."""

    code: str
    message: str
    previous_response_id: str
    raw_input: Any
    steer_id: str | None = None
    lane: Lane = None


@dataclass(frozen=True, slots=True)
class StopResponse:
    """End the running response of `lane` early: it was steered."""

    lane: Lane = None


Effect = (
    StartTurn | SendError | Close | ReleaseChain | SteerAccepted | SteerPending | SteerFailed | StopResponse
)


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """How a turn ended: its record when it completed, else failed; the id it continued from."""

    record: ResponseRecord | None
    previous_response_id: str | None
    required: tuple[RequiredInput, ...] = ()  # the tool calls it ended with (outputs the client owes)
    refused: str | None = None  # why it was refused before it was created (no response exists)

    @property
    def failed(self) -> bool:
        """True when the turn produced no chainable response."""
        return self.record is None


@dataclass(frozen=True, slots=True)
class CachedLane:
    """One lane of a parked connection: its most recent response, and the one before it (same chain)."""

    lane: Lane
    last: ResponseRecord
    prior: ResponseRecord | None = None


@dataclass(frozen=True, slots=True)
class LocalCache:
    """The connection-local responses of a connection, lane by lane, and which one completed last."""

    lanes: tuple[CachedLane, ...]
    latest: ResponseRecord | None

    def records(self) -> list[ResponseRecord]:
        """Every response held (a lane's prior included)."""
        return [r for c in self.lanes for r in (c.last, c.prior) if r is not None]

    def nbytes(self) -> int:
        """Bytes held: each distinct chain once, plus every record's own bytes."""
        records = self.records()
        chains = {id(r.ref.chain): r.ref.chain for r in records}
        return sum(c.nbytes() for c in chains.values()) + sum(r.own_bytes() for r in records)

    def store_false_chains(self) -> list[str]:
        """Cache keys of the store:false chains held: what the worker may drop once this is gone."""
        return sorted({r.ref.chain.cache_key for r in self.records() if not r.store})


@dataclass(slots=True)
class _LaneState:
    queue: deque[Arrival] = field(default_factory=deque)
    running: bool = False
    last: ResponseRecord | None = None  # the lane's most recent response (the connection-local cache)
    # The response `last` replaced, while it shares last's chain (kept for a resume, never looked up
    # on a live connection unless `resumed`).
    prior: ResponseRecord | None = None
    resumed: bool = False  # restored after a drop: `prior` may be continued until the lane's next turn
    arrival: Arrival | None = None  # the running create
    response_id: str | None = None  # the running response, once created
    steers: list[Steer] = field(default_factory=list)  # accepted for the running response
    waiting: _Waiting | None = None  # steers queued for the continuation of a response awaiting tools


@dataclass(frozen=True, slots=True)
class _Waiting:
    parent: str
    steers: tuple[Steer, ...]


@dataclass(frozen=True, slots=True)
class _Finished:
    outcome: TurnOutcome
    lane: Lane
    now: float = 0.0


class ConnectionSession:
    """One WebSocket connection: per-lane FIFOs of creates, the connection-local cache, the age limit."""

    def __init__(
        self,
        *,
        opened_at: float,
        max_age_seconds: float,
        max_queued: int,
        max_in_flight: int = 16,
        max_lanes: int = 32,
        steering: bool = True,
        max_pending_steers: int = 8,
        new_steer_id: Callable[[], str] | None = None,
    ) -> None:
        self.state = IDLE
        self.deadline = opened_at + max_age_seconds
        self._max_age = max_age_seconds
        self._max_queued = max_queued
        self._max_in_flight = max(1, max_in_flight)
        self._max_lanes = max_lanes
        self._lanes: dict[Lane, _LaneState] = {None: _LaneState()}
        self._ready: deque[Lane] = deque()  # idle lanes with queued creates, waiting for a free slot
        self._running = 0
        self._queued = 0
        self._expired = False
        self._latest: ResponseRecord | None = None
        self._steering = steering
        self._max_steers = max_pending_steers
        counter = itertools.count(1)
        self._new_steer_id = new_steer_id or (lambda: f"steer_{next(counter)}")

    @property
    def queued(self) -> int:
        """Creates waiting behind running ones, across lanes."""
        return self._queued

    @property
    def running(self) -> int:
        """Responses in flight, across lanes."""
        return self._running

    @property
    def last(self) -> ResponseRecord | None:
        """The most recently completed response the connection still caches (what a drain seals)."""
        latest = self._latest
        return latest if any(record is latest for record in self._cached()) else None

    def lookup(self, response_id: str) -> ResponseRecord | None:
        """The connection-local cached response with this id (the most recent one of each lane; after a
        resume also the one before it, until the lane's next turn ends)."""
        for record in self._cached():
            if record.response_id == response_id:
                return record
        for state in self._lanes.values():
            if state.resumed and state.prior is not None and state.prior.response_id == response_id:
                return state.prior
        return None

    def cached(self) -> LocalCache | None:
        """What a dropped connection parks for its client's next connection (None: nothing cached)."""
        lanes = tuple(
            CachedLane(lane, state.last, state.prior)
            for lane, state in self._lanes.items()
            if state.last is not None
        )
        return LocalCache(lanes, self.last) if lanes else None

    def restore(self, cache: LocalCache) -> bool:
        """Install a parked connection's responses (before any create has run); whether it was taken."""
        if self.state is not IDLE or self._latest is not None or any(self._cached()):
            return False
        for cached in cache.lanes:
            self._lanes[cached.lane] = _LaneState(last=cached.last, prior=cached.prior, resumed=True)
        self._latest = cache.latest
        return True

    def resume(self, record: ResponseRecord) -> None:
        """A sealed store:false handoff opened at connect (api_box/core/sealed.py): the connection-local
        response to continue from, before any create has run."""
        default = self._lanes[None]
        if self.state is IDLE and self._latest is None and default.last is None:
            default.last = self._latest = record

    def receive(self, incoming: Arrival, now: float) -> list[Effect]:
        """A create (or a rejected create) arrived on the socket."""
        if now >= self.deadline:
            self._expired = True
        return _TABLE[(self.state, _RECEIVE)](self, incoming)

    def turn_finished(self, outcome: TurnOutcome, now: float, *, lane: Lane = None) -> list[Effect]:
        """The running turn of `lane` ended (completed, incomplete or failed)."""
        if now >= self.deadline:
            self._expired = True
        return _TABLE[(self.state, _TURN_DONE)](self, _Finished(outcome, lane, now))

    def response_created(self, response_id: str, *, lane: Lane = None) -> None:
        """The running turn of `lane` created its response (a steer may name it from now on)."""
        state = self._lanes.get(lane)
        if state is not None and state.running:
            state.response_id = response_id

    def steer(self, incoming: SteerRequest | InvalidSteer, now: float) -> list[Effect]:
        """A response.steer arrived (see the module docstring)."""
        if now >= self.deadline:
            self._expired = True
        if isinstance(incoming, InvalidSteer):
            failed = SteerFailed(
                INVALID_INPUT, incoming.message, incoming.previous_response_id, incoming.raw_input
            )
            return [failed]
        target = incoming.previous_response_id
        for lane, state in self._lanes.items():
            if state.running and state.response_id == target:
                return self._steer_running(lane, state, incoming)
        if not self._steering:
            return [_failed(STEERING_NOT_SUPPORTED, "Steering is turned off on this server.", incoming)]
        for lane, state in self._lanes.items():
            if state.last is not None and state.last.response_id == target:
                message = f"The response '{target}' has completed; send a response.create that continues it."
                return [_failed(RESPONSE_ALREADY_COMPLETED, message, incoming, lane=lane)]
        message = f"No response with id '{target}' is running on this connection."
        return [_failed(RESPONSE_NOT_FOUND, message, incoming)]

    def deadline_reached(self, now: float) -> list[Effect]:
        """The shell's timer fired; a no-op before the deadline (timers may fire early)."""
        if now < self.deadline:
            return []
        self._expired = True
        return _TABLE[(self.state, _DEADLINE)](self, None)

    def close(self, *, keep_chain: bool = False, parked: bool = False) -> list[Effect]:
        """The socket closed: release what the connection held, except the chain handed off to the
        client's next connection (`keep_chain`: the worker keeps the KV of `last`, so the next box
        continues it warm) or every chain when the connection was parked (`parked`: `cached()` owns them
        now and releases them when it expires)."""
        kept = self.last if keep_chain else None
        records = [] if parked else [r for r in self._cached() if r is not kept]
        for state in self._lanes.values():
            state.last = state.prior = None
            state.queue.clear()
            state.steers, state.waiting = [], None
        self._latest = None
        self._ready.clear()
        self._queued = 0
        self.state = CLOSED
        keys = {r.ref.chain.cache_key for r in records if not r.store}
        if kept is not None:
            keys.discard(kept.ref.chain.cache_key)
        return [ReleaseChain(key) for key in sorted(keys)]

    # -- transitions -------------------------------------------------------------------------------

    def _idle_receive(self, incoming: object) -> list[Effect]:
        assert isinstance(incoming, Arrival)
        if self._expired:
            return self._close_expired(extra=[incoming])
        return self._admit(incoming)

    def _running_receive(self, incoming: object) -> list[Effect]:
        assert isinstance(incoming, Arrival)
        return self._admit(incoming)

    def _running_turn_done(self, finished: object) -> list[Effect]:
        assert isinstance(finished, _Finished)
        lane, outcome = finished.lane, finished.outcome
        state = self._lanes.get(lane)
        if state is None or not state.running:
            return []  # not a turn this session started (cannot happen)
        state.running = False
        self._running -= 1
        arrival, steers = state.arrival, tuple(state.steers)
        state.arrival, state.response_id, state.steers = None, None, []
        effects: list[Effect] = []
        if arrival is not None and arrival.steers and outcome.refused is not None:
            message = f"The successor response could not be created: {outcome.refused}"
            effects += [
                _failed(SUCCESSOR_CREATION_FAILED, message, s.request, s, lane) for s in arrival.steers
            ]
        if outcome.record is not None or arrival is None or not arrival.automatic:
            effects += self._remember(outcome, lane)  # a failed successor keeps the steered response
        successor: Arrival | None = None
        if steers:
            assert arrival is not None
            successor, settled = self._after_steered(lane, arrival, outcome, steers, finished.now)
            effects += settled
        if self._expired:
            if self._running == 0:
                effects += self._close_expired(extra=[])
            return effects
        if successor is not None:
            effects += self._dispatch(successor)  # at once, ahead of the lane's queue
        elif state.queue:
            self._ready.append(lane)
        effects += self._pump()
        if self._running == 0:
            self.state = IDLE
        return effects

    def _idle_deadline(self, _: object) -> list[Effect]:
        return self._close_expired(extra=[])

    def _running_deadline(self, _: object) -> list[Effect]:
        return []  # the running turns finish first; the last one to end closes

    def _ignore(self, _: object) -> list[Effect]:
        return []

    # -- helpers -----------------------------------------------------------------------------------

    def _steer_running(self, lane: Lane, state: _LaneState, incoming: SteerRequest) -> list[Effect]:
        assert state.arrival is not None
        create = state.arrival.create
        assert isinstance(create, CreateRequest)
        if not self._steering:
            return [
                _failed(STEERING_NOT_SUPPORTED, "Steering is turned off on this server.", incoming, lane=lane)
            ]
        if not create.generate or create.compact_threshold is not None:
            message = "A warm-up (generate: false) or a compacting response cannot be steered."
            return [_failed(STEERING_NOT_SUPPORTED, message, incoming, lane=lane)]
        if self._expired or self.state is CLOSED:
            message = "This connection is closing; no successor response can start on it."
            return [_failed(RESPONSE_NOT_ACTIVE, message, incoming, lane=lane)]
        if len(state.steers) >= self._max_steers:
            message = f"At most {self._max_steers} steering submissions may wait for one response."
            return [_failed(TOO_MANY_PENDING_STEERS, message, incoming, lane=lane)]
        steer = Steer(self._new_steer_id(), incoming)
        state.steers.append(steer)
        effects: list[Effect] = [SteerAccepted(steer, lane)]
        if len(state.steers) == 1:
            effects.append(StopResponse(lane))
        return effects

    def _after_steered(
        self, lane: Lane, arrival: Arrival, outcome: TurnOutcome, steers: tuple[Steer, ...], now: float
    ) -> tuple[Arrival | None, list[Effect]]:
        """What becomes of the steers of a response that ended: a successor to start, or events."""
        record = outcome.record
        if record is None:
            message = "The steered response failed; no successor response was created."
            return None, [_failed(SUCCESSOR_CREATION_FAILED, message, s.request, s, lane) for s in steers]
        if self._expired:
            message = "This connection is closing; no successor response can start on it."
            return None, [_failed(RESPONSE_NOT_ACTIVE, message, s.request, s, lane) for s in steers]
        if outcome.required:
            self._lanes[lane].waiting = _Waiting(record.response_id, steers)
            return None, [SteerPending(s, outcome.required, lane) for s in steers]
        parent = arrival.create
        assert isinstance(parent, CreateRequest)
        create = replace(
            parent,
            input=tuple(item for s in steers for item in s.request.items),
            previous_response_id=record.response_id,
            compactions=(),
            compact_threshold=None,
            images_replaced=0,
        )
        size = sum(s.request.size for s in steers)
        return Arrival(create, now, size, steers=steers, automatic=True), []

    def _with_waiting(self, state: _LaneState, incoming: Arrival) -> tuple[Arrival, list[Effect]]:
        """A create on a lane whose steers wait for a continuation: they go in front of its input when it
        continues the steered response, else they fail."""
        waiting, state.waiting = state.waiting, None
        assert waiting is not None
        create = incoming.create
        assert isinstance(create, CreateRequest)
        if create.previous_response_id == waiting.parent:
            items = tuple(item for s in waiting.steers for item in s.request.items)
            steered = replace(create, input=items + create.input)
            return replace(incoming, create=steered, steers=waiting.steers), []
        message = f"The lane continued from another response than '{waiting.parent}'."
        lane = incoming.lane
        return incoming, [_failed(RESPONSE_NOT_ACTIVE, message, s.request, s, lane) for s in waiting.steers]

    def _admit(self, incoming: Arrival) -> list[Effect]:
        """A create on its lane: run it now when the lane and a slot are free, else queue it."""
        lane = incoming.lane
        state = self._lanes.get(lane)
        if state is None:
            if len(self._lanes) - 1 >= self._max_lanes:
                message = f"At most {self._max_lanes} named streams (stream_id) may be used per connection."
                return [SendError(StreamLimitReached(message, param="stream_id"), lane)]
            state = self._lanes[lane] = _LaneState()
        free = not state.running and not state.queue
        if free and self._running < self._max_in_flight and not self._expired:
            return self._dispatch(incoming)
        if self._queued >= self._max_queued:
            error = TooManyQueued(
                f"At most {self._max_queued} response.create events may wait behind running ones."
            )
            return [SendError(error, lane)]
        if free:
            self._ready.append(lane)  # a free lane waiting for a slot
        state.queue.append(incoming)
        self._queued += 1
        return []

    def _pump(self) -> list[Effect]:
        """Start the next create of ready lanes while slots are free."""
        effects: list[Effect] = []
        while self._ready and self._running < self._max_in_flight:
            state = self._lanes[self._ready.popleft()]
            while state.queue and not state.running:
                self._queued -= 1
                effects += self._dispatch(state.queue.popleft())
        return effects

    def _dispatch(self, incoming: Arrival) -> list[Effect]:
        rejected = incoming.create
        if isinstance(rejected, RequestError):
            lane = incoming.lane
            return [SendError(rejected, lane), *self._evict(rejected.previous_response_id, lane)]
        state = self._lanes[incoming.lane]
        effects: list[Effect] = []
        if state.waiting is not None and not incoming.automatic:
            incoming, effects = self._with_waiting(state, incoming)
        state.running, state.arrival = True, incoming
        self._running += 1
        self.state = RUNNING
        return [*effects, StartTurn(incoming)]

    def _remember(self, outcome: TurnOutcome, lane: Lane) -> list[Effect]:
        state = self._lanes[lane]
        if outcome.record is None:
            return self._evict(outcome.previous_response_id, lane)
        old, state.last = state.last, outcome.record
        state.prior = old if old is not None and old.ref.chain is outcome.record.ref.chain else None
        state.resumed = False
        self._latest = outcome.record
        return self._release(old)

    def _evict(self, response_id: str | None, lane: Lane) -> list[Effect]:
        """A failed continuation evicts the response it continued from, when that is its own lane's."""
        state = self._lanes[lane]
        last = state.last
        if state.resumed and state.prior is not None and state.prior.response_id == response_id:
            state.prior, state.resumed = None, False
            return []
        if response_id is None or last is None or last.response_id != response_id:
            return []
        state.last = state.prior = None
        state.resumed = False
        return self._release(last)

    def _release(self, record: ResponseRecord | None) -> list[Effect]:
        """Release a store:false chain no lane caches any more (lanes may share one chain)."""
        if record is None or record.store:
            return []
        chain = record.ref.chain
        if any(other.ref.chain is chain for other in self._cached()):
            return []
        return [ReleaseChain(chain.cache_key)]

    def _cached(self) -> Iterator[ResponseRecord]:
        return (state.last for state in self._lanes.values() if state.last is not None)

    def _close_expired(self, *, extra: list[Arrival]) -> list[Effect]:
        """One limit error per create that will not run (at least one), then close 1000."""
        message = _LIMIT_MESSAGE.format(age=_age_text(self._max_age))
        waiting = [arrival for state in self._lanes.values() for arrival in state.queue] + extra
        lanes: list[Lane] = [arrival.lane for arrival in waiting] or [None]
        effects: list[Effect] = [SendError(ConnectionLimitReached(message), lane) for lane in lanes]
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


def _failed(
    code: str, message: str, request: SteerRequest, steer: Steer | None = None, lane: Lane = None
) -> SteerFailed:
    return SteerFailed(
        code,
        message,
        request.previous_response_id,
        request.raw_input,
        steer.steer_id if steer is not None else None,
        lane,
    )
