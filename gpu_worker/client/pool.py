"""WorkerPool: the box's view of the worker fleet (see the package docstring for the semantics)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import grpc

from gpu_worker.client._convert import event_from_pb, request_to_pb
from gpu_worker.client.policy import WorkerRouting, WorkerSelector
from gpu_worker.client.rendezvous import routing_key_of_chain
from gpu_worker.client.types import (
    CallResult,
    Done,
    GenerationRequest,
    WorkerError,
    WorkerEvent,
    WorkerRejected,
    WorkerTimeout,
    WorkerUnavailable,
)
from gpu_worker.wire._pb import worker_pb2 as pb
from gpu_worker.wire._pb import worker_pb2_grpc as pb_grpc
from gpu_worker.wire.model import ModelDescription, description_from_pb

__all__ = ["CHANNEL_OPTIONS", "WorkerPool"]

_LOG = logging.getLogger("gpu_worker.client")
_MiB = 1 << 20
_MAX_CHAIN_MODELS = 65_536

# Keepalive per the worker's server settings (gpu_worker/server/app.py): the client pings every 10 s,
# above the server's 5 s minimum, so the server never answers GOAWAY too_many_pings. Short reconnect
# backoff: a restarted worker is found again within seconds, not after grpc's 120 s maximum.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.max_send_message_length", 16 * _MiB),
    ("grpc.max_receive_message_length", 16 * _MiB),
)


class _Precondition(Exception):
    """FAILED_PRECONDITION: the worker does not hold the prefix (resend the whole chain), or, with reason
    `tokenizer_mismatch`, the request was rendered for another model's tokenizer (no resend helps)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class _Unreachable(Exception):
    """The worker cannot be reached (or went away): fail over if nothing was yielded yet."""


class WorkerPool:
    """Routing of chains onto workers (affinity by default, see policy.py), with the delta protocol and
    failover."""

    def __init__(
        self,
        targets: Sequence[str],
        connect_timeout: float = 2.0,
        request_timeout: float = 300.0,
        *,
        down_cooldown: float = 5.0,
        max_attempts: int = 3,
        on_call: Callable[[CallResult], None] | None = None,
        channel_options: Sequence[tuple[str, Any]] = CHANNEL_OPTIONS,
        routing: str = "affinity",
    ) -> None:
        unique = tuple(dict.fromkeys(t.strip() for t in targets if t.strip()))
        if not unique:
            raise ValueError("WorkerPool needs at least one target")
        if connect_timeout <= 0 or request_timeout <= 0 or max_attempts < 1:
            raise ValueError("timeouts must be > 0 and max_attempts >= 1")
        self._targets = unique
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._down_cooldown = down_cooldown
        self._max_attempts = max_attempts
        self._on_call = on_call
        self._channel_options = tuple(channel_options)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, pb_grpc.WorkerStub] = {}
        self._down_until: dict[str, float] = {}
        self._counts: Counter[str] = Counter()
        self._selector = WorkerSelector(routing)  # ValueError on an unknown policy
        self._in_flight: Counter[str] = Counter()  # calls running on each worker (least-loaded reads it)
        # What each worker said it serves (DescribeModel); None: a worker without the RPC, which serves
        # any model name in Tether's own format. A target missing here has not answered yet.
        self._described: dict[str, ModelDescription | None] = {}
        # The model of recent chains, so DropSession reaches the worker that served them (bounded).
        self._chain_models: OrderedDict[str, str] = OrderedDict()
        self._running: dict[str, str] = {}  # request id -> the worker streaming it now (for stop)

    # ------------------------------------------------------------------------------------ lifecycle
    @property
    def targets(self) -> tuple[str, ...]:
        """The configured workers, in configuration order."""
        return self._targets

    @property
    def routing(self) -> WorkerRouting:
        """The worker selection policy: affinity, round-robin or least-loaded (policy.py)."""
        return self._selector.routing

    @property
    def in_flight(self) -> Mapping[str, int]:
        """Calls running on each worker now (workers with none are left out)."""
        return {t: n for t, n in self._in_flight.items() if n}

    @property
    def call_counts(self) -> Mapping[str, int]:
        """Finished `generate` calls by result (ok, resend, failover, error) since start."""
        return dict(self._counts)

    async def start(self) -> None:
        """Open one channel per worker. Call inside the serving loop (channels bind to it)."""
        for target in self._targets:
            if target not in self._channels:
                channel = grpc.aio.insecure_channel(target, options=self._channel_options)
                self._channels[target] = channel
                self._stubs[target] = pb_grpc.WorkerStub(channel)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        """Close every channel; in-flight calls are cancelled."""
        channels, self._channels, self._stubs = self._channels, {}, {}
        await asyncio.gather(*(c.close(None) for c in channels.values()), return_exceptions=True)

    # ------------------------------------------------------------------------------------- models
    async def describe(self) -> None:
        """Ask every worker that has not described its model yet (concurrently; unreachable ones later)."""
        if not self._stubs:
            raise RuntimeError("WorkerPool.start() was not awaited")
        pending = [t for t in self._targets if t not in self._described]
        await asyncio.gather(*(self._describe_one(t) for t in pending))

    async def _describe_one(self, target: str) -> None:
        try:
            reply = await self._stubs[target].DescribeModel(
                pb.DescribeModelRequest(), timeout=self._connect_timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self._described[target] = None
            else:
                _LOG.info("DescribeModel on %s failed: %s", target, exc.code().name)
            return
        try:
            self._described[target] = description_from_pb(reply)
        except ValueError as exc:
            _LOG.error("worker %s describes an invalid model: %s", target, exc)

    def forget_description(self, target: str) -> None:
        """Ask `target` again on the next `describe` (it answered tokenizer_mismatch: it was replaced)."""
        self._described.pop(target, None)

    @property
    def descriptions(self) -> Mapping[str, ModelDescription | None]:
        """What each worker that answered DescribeModel serves (None: a worker without the RPC)."""
        return dict(self._described)

    def description(self, model: str) -> ModelDescription | None:
        """The description of the model a worker serves under the name `model`, if any does."""
        for target in self._targets:
            found = self._described.get(target)
            if found is not None and model in found.names:
                return found
        return None

    def has_untyped_workers(self) -> bool:
        """Whether a worker without DescribeModel answered (it serves any name, Tether's format)."""
        return any(self._described.get(t, False) is None for t in self._targets)

    def _serving(self, model: str) -> tuple[str, ...]:
        """The workers that serve `model`: those that name it, else those that do not describe models."""
        if not model:
            return self._targets
        named = tuple(
            t for t in self._targets if (d := self._described.get(t)) is not None and model in d.names
        )
        if named:
            return named
        untyped = tuple(t for t in self._targets if self._described.get(t, None) is None)
        return untyped or self._targets

    # -------------------------------------------------------------------------------------- routing
    def owner(self, cache_key: str, model: str = "") -> str:
        """The worker a chain goes to under affinity: the first in its rendezvous order not marked down.
        (Round-robin and least-loaded pick per call; `generate` reports the worker in its events.)"""
        serving = self._serving(model)
        return self._selector.affinity_order(cache_key, serving, down=self._down(serving))[0]

    def _candidates(self, key: str, model: str = "") -> list[str]:
        serving = self._serving(model)
        return self._selector.order(key, serving, down=self._down(serving), in_flight=self._in_flight)

    def _down(self, targets: Sequence[str]) -> set[str]:
        now = time.monotonic()
        return {t for t in targets if self._down_until.get(t, 0.0) > now}

    def _mark_down(self, target: str) -> None:
        self._down_until[target] = time.monotonic() + self._down_cooldown
        _LOG.warning("worker %s unreachable; marked down for %.1fs", target, self._down_cooldown)

    def _record(self, result: CallResult) -> None:
        self._counts[result] += 1
        if self._on_call is not None:
            try:
                self._on_call(result)
            except Exception:  # a metrics callback must never break a generation
                _LOG.exception("on_call callback failed")

    # ----------------------------------------------------------------------------------- generation
    async def generate(self, req: GenerationRequest) -> AsyncIterator[WorkerEvent]:
        """Stream one generation: Prefill, deltas, then Done. See the package docstring."""
        _check_request(req)
        if not self._stubs:
            raise RuntimeError("WorkerPool.start() was not awaited")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (req.timeout if req.timeout is not None else self._request_timeout)
        key = req.cache_key or req.routing_key or routing_key_of_chain(req.chain)
        candidates = self._candidates(key, req.model)[: self._max_attempts]
        if req.cache_key and req.model:
            self._chain_models[req.cache_key] = req.model
            self._chain_models.move_to_end(req.cache_key)
            if len(self._chain_models) > _MAX_CHAIN_MODELS:
                self._chain_models.popitem(last=False)
        index, full, resent, yielded = 0, req.held_len == 0, False, False
        try:
            while True:
                target = candidates[index]
                try:
                    async with aclosing(self._attempt(target, req, full=full, deadline=deadline)) as events:
                        async for event in events:
                            yielded = True
                            yield event
                except _Precondition as exc:
                    if exc.reason == "tokenizer_mismatch":
                        self.forget_description(target)
                        raise WorkerRejected("FAILED_PRECONDITION", str(exc), target=target) from None
                    if full or yielded:
                        raise WorkerError(str(exc), code="FAILED_PRECONDITION", target=target) from None
                    resent, full = True, True
                    continue
                except _Unreachable as exc:
                    self._mark_down(target)
                    if yielded:
                        message = f"worker {target} went away mid-stream: {exc}"
                        raise WorkerUnavailable(message, target=target) from None
                    index, full = index + 1, True
                    if index >= len(candidates):
                        tried = ", ".join(candidates)
                        raise WorkerUnavailable(f"no worker reachable (tried {tried})") from None
                    continue
                self._record("failover" if index > 0 else "resend" if resent else "ok")
                return
        except WorkerError:
            self._record("error")
            raise

    async def _attempt(
        self, target: str, req: GenerationRequest, *, full: bool, deadline: float
    ) -> AsyncGenerator[WorkerEvent, None]:
        await self._wait_connected(target, deadline)
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            message = "deadline passed before the call started"
            raise WorkerTimeout(message, code="DEADLINE_EXCEEDED", target=target)
        call = self._stubs[target].Generate(request_to_pb(req, full=full), timeout=remaining)
        done = False
        self._in_flight[target] += 1
        self._running[req.request_id] = target
        try:
            async for message in call:
                event = event_from_pb(message, target)
                if event is not None:
                    done = isinstance(event, Done)
                    yield event
        except grpc.aio.AioRpcError as exc:
            raise _classify(exc, target) from None
        finally:
            self._in_flight[target] -= 1
            if self._running.get(req.request_id) == target:
                del self._running[req.request_id]
            call.cancel()  # no-op when the call finished; stops the worker when our consumer left early
        if not done:
            raise WorkerError("the stream ended without a Done event", code="INTERNAL", target=target)

    async def _wait_connected(self, target: str, deadline: float) -> None:
        channel = self._channels[target]
        if channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY:
            return
        remaining = deadline - asyncio.get_running_loop().time()
        timeout = min(self._connect_timeout, remaining)
        try:
            await asyncio.wait_for(channel.channel_ready(), max(timeout, 0.0))
        except TimeoutError:
            if remaining <= self._connect_timeout:  # the call's own deadline ran out, not the worker
                raise WorkerTimeout(
                    "deadline passed while connecting", code="DEADLINE_EXCEEDED", target=target
                ) from None
            raise _Unreachable(f"not connected within {timeout:.1f}s") from None

    async def stop(self, request_id: str) -> bool:
        """Ask the worker streaming `request_id` to end it early (Stop: a steered response); True when
        it runs there. The stream then ends with Done finish_reason "stopped", or as usual when the
        output holds a tool call or the engine cannot stop early. Never raises."""
        target = self._running.get(request_id)
        if target is None:
            return False
        try:
            reply = await self._stubs[target].Stop(
                pb.StopRequest(request_id=request_id), timeout=self._connect_timeout
            )
        except grpc.aio.AioRpcError as exc:
            _LOG.info("Stop on %s failed: %s", target, exc.code().name)
            return False
        return bool(reply.stopping)

    async def drop(self, cache_key: str) -> bool:
        """Best effort DropSession where the chain lives: its owner under affinity, every worker of its
        model under the other policies (any of them may hold a copy); True when a worker held it."""
        if not self._stubs:
            return False
        model = self._chain_models.pop(cache_key, "")
        if self.routing == "affinity":
            targets: Sequence[str] = (self.owner(cache_key, model),)
        else:
            targets = self._serving(model)
        dropped = await asyncio.gather(*(self._drop_on(t, cache_key) for t in targets))
        return any(dropped)

    async def _drop_on(self, target: str, cache_key: str) -> bool:
        try:
            reply = await self._stubs[target].DropSession(
                pb.DropSessionRequest(cache_key=cache_key), timeout=self._connect_timeout
            )
        except grpc.aio.AioRpcError as exc:
            _LOG.info("DropSession on %s failed: %s", target, exc.code().name)
            return False
        return bool(reply.dropped)


def _check_request(req: GenerationRequest) -> None:
    if not 0 <= req.held_len <= len(req.chain):
        raise ValueError(f"held_len {req.held_len} is outside 0..len(chain)={len(req.chain)}")
    if req.held_len and not req.cache_key:
        raise ValueError("held_len > 0 needs a cache_key")


def _classify(exc: grpc.aio.AioRpcError, target: str) -> Exception:
    code = exc.code()
    details = exc.details() or code.name
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        pairs: Any = exc.trailing_metadata() or ()
        reasons = [str(value) for key, value in pairs if key == "tether-precondition"]
        return _Precondition(details, reasons[0] if reasons else "")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return _Unreachable(details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return WorkerTimeout(details, code=code.name, target=target)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
        return WorkerRejected(code.name, details, target=target)
    return WorkerError(details, code=code.name, target=target)
