"""WebSocket mode: `GET /v1/responses` upgraded. One reader, one sender, at most one turn per lane.

Tasks of a connection, all owned by `WsConnection.serve` and cancelled when it ends:
- the handler coroutine itself is the only reader: text frames are parsed (api_box/core/protocol.py) and
  fed to the connection state machine (api_box/core/session.py), whose effects this shell performs;
- the sender drains a bounded queue of frames; a client that stops reading fills it and the connection is
  closed (1008, or aborted when even the close frame cannot be written);
- the running turns (api_box/io/turns.py), one per busy lane (`stream_id`; the state machine bounds how
  many run at once), emit their events into that queue; a named lane's events carry its `stream_id`.

Transport rules: a frame over max_frame_bytes closes with 1009 (aiohttp's max_msg_size); a text frame that
is not UTF-8 closes with 1007 (RFC 6455 §8.1); a binary frame, malformed or too-deep JSON, an unknown event
type or an invalid create is answered with an error event, in its place in the FIFO, and the socket stays
open. The connection-age limit closes with 1000 after websocket_connection_limit_reached; a server
shutdown closes with 1012 (the SDK reconnects on it).

Drain (api_box/io/drain.py): `drain()` closes with 1012 once no response is running or queued and the
cold store has written this connection's turns; a frame that arrives after that decision is not run
(no response.created was sent for it; the client resends it after reconnecting).

Sealed handoff (api_box/io/sealed.py): a connection opened with X-Tether-Handoff-Key takes the sealed
store:false response left under that key before reading its first frame, and seals its own last
store:false response before its drain close.

Steering (api_box/core/steer.py, api_box/core/session.py): a `response.steer` frame is parsed and fed to
the state machine like a create; its answers (response.steer.accepted / .pending / .failed) are numbered in
the target response's stream and carry its lane's stream_id; a steered response is asked to stop through
its TurnControl (api_box/io/turns.py), and its successor runs as a turn of the same lane.

Resume (api_box/io/resume.py): a keyed connection that ends without a close frame (the peer vanished: EOF
or a reset without a close handshake, no pong, a send that failed, a client that stopped reading) parks
its connection-local responses for the grace window; the running responses are cancelled first and
leave no trace (the worker stops; the lane's cache is as before they started). Before reading its first
frame, a keyed connection takes over a live connection of this box with the same key (aborting it, which
parks it), then takes what is parked under its key, else the sealed handoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import orjson
from aiohttp import WSMsgType, web

from api_box.config import Settings
from api_box.core.errors import BinaryFrame, InvalidJson, RequestError
from api_box.core.events import Event
from api_box.core.protocol import decode_json, parse_create_object
from api_box.core.session import (
    CLOSE_SERVICE_RESTART,
    Arrival,
    Close,
    ConnectionSession,
    ConnState,
    Effect,
    Lane,
    ReleaseChain,
    SendError,
    StartTurn,
    SteerAccepted,
    SteerFailed,
    SteerPending,
    StopResponse,
    TurnOutcome,
)
from api_box.core.steer import (
    STEER_EVENT,
    accepted_event,
    failed_event,
    parse_steer,
    pending_event,
    required_inputs,
)
from api_box.io.errors import as_box_error, ws_error_event
from api_box.io.metrics import CLIENT_TO_SERVER, SERVER_TO_CLIENT, BoxMetrics
from api_box.io.resume import ResumeTicket
from api_box.io.sealed import KeyedHandoff
from api_box.io.tasks import TaskSet
from api_box.io.turns import TurnControl, TurnRunner, new_id

_LOG = logging.getLogger("api_box.ws")
CLOSE_INVALID_TEXT = 1007
CLOSE_POLICY = 1008
_CLOSE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class _CloseCommand:
    code: int
    reason: str


class WsConnection:
    """One accepted WebSocket."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        tenant: str,
        settings: Settings,
        runner: TurnRunner,
        tasks: TaskSet,
        abort: Callable[[], None] = lambda: None,
        handoff: KeyedHandoff | None = None,
        resume: ResumeTicket | None = None,
    ) -> None:
        self.ws = ws
        self._handoff = handoff  # the client sent X-Tether-Handoff-Key (and the box has the feature on)
        self._resume = resume  # the same key, for parking this connection if its socket drops
        self._abort = abort  # drops the TCP connection at once (a peer that does not read)
        self.tenant = tenant
        self.settings = settings
        self.runner = runner
        self.metrics: BoxMetrics = runner.metrics
        self.tasks = tasks
        self._loop = asyncio.get_running_loop()
        self.session = ConnectionSession(
            opened_at=self._loop.time(),
            max_age_seconds=settings.connection_max_seconds,
            max_queued=settings.max_queued_creates,
            max_in_flight=settings.ws_max_in_flight,
            max_lanes=settings.ws_max_streams,
            steering=settings.ws_steering,
            max_pending_steers=settings.ws_max_pending_steers,
            new_steer_id=lambda: new_id("steer"),
        )
        self._frames: asyncio.Queue[bytes | _CloseCommand] = asyncio.Queue(settings.send_queue_frames)
        self._turns: dict[Lane, asyncio.Task[None]] = {}  # the running turn of each busy lane
        self._controls: dict[Lane, TurnControl] = {}  # each lane's latest response (steers number in it)
        self._sender: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._send_started: float | None = None
        self._bytes_in = self.metrics.bytes.labels("ws", CLIENT_TO_SERVER)
        self._bytes_out = self.metrics.bytes.labels("ws", SERVER_TO_CLIENT)
        self._closing = False
        self._close_queued = False
        self._queued_reported = 0
        self._done = asyncio.Event()
        self._draining = False
        self._drain_close: asyncio.Task[None] | None = None  # set once the drain decided to close
        self._handed_off = False  # the last response was sealed for the client's next connection
        self._lost = False  # the socket ended without a close handshake: park it (with a resume key)

    async def serve(self) -> None:
        """Read frames until the socket closes, then release everything the connection holds."""
        self.metrics.websocket_connections.inc()
        self._sender = asyncio.create_task(self._send_loop())
        self._watchdog = self._loop.call_later(self.settings.send_timeout_seconds / 2, self._watch_sends)
        self._arm_timer()
        try:
            await self._resume_or_take_handoff()
            while not self._closing:
                msg = await self.ws.receive()
                if msg.type is WSMsgType.TEXT:
                    self._on_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    self._on_binary(msg.data)
                else:
                    # CLOSE, CLOSING, CLOSED or ERROR (1009 is sent by aiohttp itself). CLOSED and ERROR
                    # without a close of ours: the peer went away without a close frame.
                    lost = msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR) and not self._close_queued
                    self._lost = self._lost or lost
                    break
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the connection is lost (handler_cancellation); a shutdown
            # has queued its close (1012) before that.
            self._lost = self._lost or not self._close_queued
            raise
        finally:
            await self._shutdown()

    async def wait_closed(self) -> None:
        """Return once `serve` has released everything."""
        await self._done.wait()

    def close(self, code: int = CLOSE_SERVICE_RESTART, reason: str = "server shutting down") -> None:
        """Ask the connection to close after the frames already queued (server shutdown or drain)."""
        self._request_close(code, reason)

    def drain(self) -> None:
        """The box is draining: close with 1012 as soon as this connection is idle and flushed."""
        self._draining = True
        self._drain_when_idle()

    def _drain_when_idle(self) -> None:
        idle = self.session.state is ConnState.IDLE and not self.session.queued
        if self._draining and idle and self._drain_close is None and not self._closing:
            self._drain_close = asyncio.create_task(self._flush_then_close())

    async def _flush_then_close(self) -> None:
        # The client reconnects at once, possibly to another box that restores from the cold store.
        await self.runner.cold.flush()
        last = self.session.last
        if self._handoff is not None and last is not None:
            # Sealed: the worker keeps the chain's KV, so the client's next box continues it warm (the
            # worker pool routes by cache key, and the worker's LRU frees it if nobody comes back).
            self._handed_off = await self._handoff.seal(self.tenant, last)
        self._request_close(CLOSE_SERVICE_RESTART, "server draining")

    async def take_over(self) -> None:
        """A new connection with this client's resume key opened on this box: end this one as dropped
        (its responses are parked for the new one) and return once it has."""
        self._lost = True
        self._closing = True
        if self._sender is not None:
            self._sender.cancel()
        self._abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait_closed(), _CLOSE_TIMEOUT)

    async def _resume_or_take_handoff(self) -> None:
        """Once, before the first frame is read: the responses parked under the client's resume key
        (taking over a live connection with that key first), else the sealed handoff of a drained box."""
        ticket = self._resume
        if ticket is not None:
            previous = ticket.attach(self)
            if previous is not None:
                _LOG.info("a connection with the same resume key took over a live one")
                await previous.take_over()
            cache = ticket.take()
            if cache is not None and self.session.restore(cache):
                return
        await self._take_handoff()

    async def _take_handoff(self) -> None:
        """Install the sealed response a drained box left for this key."""
        if self._handoff is not None:
            record = await self._handoff.take(self.tenant)
            if record is not None:
                self.session.resume(record)

    # -- reading -----------------------------------------------------------------------------------

    def _on_text(self, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self._bytes_in.inc(len(raw))
        if self._drain_close is not None:
            return  # closing for a drain: not run, the client resends it after reconnecting
        limits = self.settings.limits
        try:
            obj = decode_json(raw, limits)
            if obj.get("type") == STEER_EVENT:
                self._apply(self.session.steer(parse_steer(obj, limits, len(raw)), self._loop.time()))
                return
            incoming: object = parse_create_object(obj, limits, websocket=True)
        except InvalidJson as exc:
            if not _is_utf8(raw):
                self._request_close(CLOSE_INVALID_TEXT, "invalid UTF-8 in a text frame")
                return
            incoming = exc
        except RequestError as exc:
            incoming = exc
        self._receive(Arrival(incoming, self._loop.time(), len(raw)))  # type: ignore[arg-type]

    def _on_binary(self, data: bytes) -> None:
        self._bytes_in.inc(len(data))
        if self._drain_close is not None:
            return
        error = BinaryFrame("Binary frames are not supported; send each event as a JSON text frame.")
        self._receive(Arrival(error, self._loop.time(), len(data)))

    def _receive(self, arrival: Arrival) -> None:
        self._apply(self.session.receive(arrival, self._loop.time()))

    # -- effects -----------------------------------------------------------------------------------

    def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, StartTurn):
                lane = effect.arrival.lane
                self._turns[lane] = asyncio.create_task(self._run_turn(effect.arrival))
            elif isinstance(effect, SendError):
                self._send_event(ws_error_event(effect.error, self.metrics), effect.lane)
            elif isinstance(effect, Close):
                self._request_close(effect.code, effect.reason)
            elif isinstance(effect, ReleaseChain):
                self.tasks.spawn(self.runner.pool.drop(effect.cache_key))
            else:
                self._steer_effect(effect)
        queued = self.session.queued
        if queued != self._queued_reported:
            self.metrics.create_queue_depth.inc(queued - self._queued_reported)
            self._queued_reported = queued

    def _steer_effect(self, effect: SteerAccepted | SteerPending | SteerFailed | StopResponse) -> None:
        """Perform a steering effect of the state machine (api_box/core/session.py)."""
        steers = self.metrics.steers
        if isinstance(effect, StopResponse):
            control = self._controls.get(effect.lane)
            if control is not None:
                control.stop_requested = True
            return
        if isinstance(effect, SteerFailed):
            steers.labels("failed").inc()
            self.metrics.steer_failures.labels(effect.code).inc()
            number = self._sequence_number(effect.lane, effect.previous_response_id)
            event = failed_event(
                effect.code,
                effect.message,
                previous_response_id=effect.previous_response_id,
                raw_input=effect.raw_input,
                steer_id=effect.steer_id,
                sequence_number=number,
            )
            self._send_event(event, effect.lane)  # a lane only when the target response is known
            return
        number = self._sequence_number(effect.lane, effect.steer.previous_response_id)
        if isinstance(effect, SteerAccepted):
            steers.labels("accepted").inc()
            self._send_event(accepted_event(effect.steer, number), effect.lane)
        else:
            steers.labels("pending").inc()
            self._send_event(pending_event(effect.steer, effect.required, number), effect.lane)

    def _sequence_number(self, lane: Lane, response_id: str) -> int:
        """The next number of the stream of `response_id` when it is the lane's latest response, else 0."""
        control = self._controls.get(lane)
        if control is None or control.response_id != response_id:
            return 0
        return control.sequence_number()

    async def _run_turn(self, arrival: Arrival) -> None:
        create = StartTurn(arrival).create
        lane = create.stream_id

        async def emit(event: Event) -> None:
            self._send_event(event, lane)

        def created(response_id: str) -> None:
            self.session.response_created(response_id, lane=lane)
            if arrival.steers:
                self.metrics.steers.labels("committed").inc(len(arrival.steers))

        self._controls[lane] = control = TurnControl(created)
        try:
            result = await self.runner.run(
                create,
                tenant=self.tenant,
                mode="ws",
                emit=emit,
                received_at=arrival.received_at,
                request_bytes=arrival.size,
                local=self.session,
                control=control,
            )
            outcome = result.outcome
            if result.status == "completed":
                outcome = replace(outcome, required=required_inputs(result.resource["output"]))
        except Exception as exc:  # refused before the response existed: an error event
            error = as_box_error(exc)
            if not arrival.automatic:  # a successor the client did not send: its steers fail instead
                self._send_event(ws_error_event(error, self.metrics), lane)
            outcome = TurnOutcome(None, create.previous_response_id, refused=error.message)
        if self._turns.get(lane) is asyncio.current_task():
            del self._turns[lane]  # before _apply, which may start the lane's next turn
        try:
            self._apply(self.session.turn_finished(outcome, self._loop.time(), lane=lane))
        except Exception:  # a bug here must not leave the connection silently stuck
            _LOG.exception("websocket turn bookkeeping failed; closing the connection")
            self._request_close(1011, "internal error")
        self._drain_when_idle()

    def _send_event(self, event: Event, lane: Lane = None) -> None:
        """Queue one event; a named lane's events echo its stream_id, the default lane's do not."""
        if lane is not None:
            event["stream_id"] = lane
        self._enqueue(orjson.dumps(event))

    def _enqueue(self, frame: bytes | _CloseCommand) -> None:
        if self._closing:
            return
        try:
            self._frames.put_nowait(frame)
        except asyncio.QueueFull:
            # Not even a close frame could get through a full socket: drop the connection.
            _LOG.warning("client is not reading: %d frames queued; aborting", self._frames.qsize())
            self._closing = self._lost = True
            if self._sender is not None:
                self._sender.cancel()
            self._abort()
            return
        if isinstance(frame, bytes):
            self._bytes_out.inc(len(frame))

    def _request_close(self, code: int, reason: str) -> None:
        if not self._closing:
            self._enqueue(_CloseCommand(code, reason))
            self._close_queued = not self._closing  # False when the queue overflowed instead
            self._closing = True

    # -- sending -----------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        try:
            while True:
                frame = await self._frames.get()
                if isinstance(frame, _CloseCommand):
                    await self._close_now(frame.code, frame.reason)
                    return
                # Watched by _watch_sends rather than a timeout object per frame (cheaper per delta).
                self._send_started = self._loop.time()
                await self.ws.send_frame(frame, WSMsgType.TEXT)
                self._send_started = None
        except (ConnectionError, RuntimeError) as exc:
            _LOG.info("websocket send failed (%s); closing", type(exc).__name__)
            self._lost = self._lost or not self._close_queued
            self._closing = True
            await self._close_now(CLOSE_POLICY, "send failed")

    def _watch_sends(self) -> None:
        """Abort a connection whose current frame has not been written for send_timeout_seconds."""
        timeout = self.settings.send_timeout_seconds
        started = self._send_started
        if started is not None and self._loop.time() - started > timeout:
            _LOG.warning("a frame could not be sent for %.0fs; aborting the connection", timeout)
            self._closing = self._lost = True
            if self._sender is not None:
                self._sender.cancel()
            self._abort()
            return
        self._watchdog = self._loop.call_later(timeout / 2, self._watch_sends)

    async def _close_now(self, code: int, reason: str) -> None:
        """Close with `code`; abort the transport when even the close frame cannot be written in time."""
        if self.ws.closed:
            return
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self.ws.close(code=code, message=reason.encode())
        except (TimeoutError, ConnectionError, RuntimeError):
            _LOG.info("websocket close did not complete; connection aborted")
            self._abort()

    # -- lifetime ----------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        self._timer = self._loop.call_at(self.session.deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        if self._loop.time() < self.session.deadline:
            self._arm_timer()  # fired early
            return
        self._apply(self.session.deadline_reached(self._loop.time()))

    async def _shutdown(self) -> None:
        for timer in (self._timer, self._watchdog):
            if timer is not None:
                timer.cancel()
        if self._drain_close is not None and not self._drain_close.done():
            self._drain_close.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain_close
        turns = [turn for turn in self._turns.values() if not turn.done()]
        for turn in turns:
            turn.cancel()
        for turn in turns:
            with contextlib.suppress(asyncio.CancelledError):
                await turn
        self._closing = True
        self._apply(self.session.close(keep_chain=self._handed_off, parked=self._park()))
        if self._resume is not None:
            self._resume.detach(self)
        sender = self._sender
        if sender is not None and not sender.done():
            if self._close_queued and not self.ws.closed:
                # Let the requested close (and the frames before it, e.g. an error event) go out.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(sender), _CLOSE_TIMEOUT + 1.0)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        await self._close_now(CLOSE_SERVICE_RESTART, "closing")
        self.metrics.websocket_connections.dec()
        self._done.set()

    def _park(self) -> bool:
        """Park the connection-local responses of a dropped keyed connection (its turns are cancelled)."""
        if not self._lost or self._resume is None or self._handed_off:
            return False
        cache = self.session.cached()
        return cache is not None and self._resume.park(cache)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
