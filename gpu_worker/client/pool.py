"""WorkerPool: the box's view of the worker fleet (see the package docstring for the semantics)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import grpc

from gpu_worker.client._convert import event_from_pb, request_to_pb
from gpu_worker.client.rendezvous import rank, routing_key_of_chain
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

__all__ = ["CHANNEL_OPTIONS", "WorkerPool"]

_LOG = logging.getLogger("gpu_worker.client")
_MiB = 1 << 20

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
    """FAILED_PRECONDITION: the worker does not hold the prefix; resend the whole chain."""


class _Unreachable(Exception):
    """The worker cannot be reached (or went away): fail over if nothing was yielded yet."""


class WorkerPool:
    """Consistent-hash routing of chains onto workers, with the delta protocol and failover."""

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

    # ------------------------------------------------------------------------------------ lifecycle
    @property
    def targets(self) -> tuple[str, ...]:
        """The configured workers, in configuration order."""
        return self._targets

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

    # -------------------------------------------------------------------------------------- routing
    def owner(self, cache_key: str) -> str:
        """The worker a chain goes to now: the first in its rendezvous order not marked down."""
        return self._candidates(cache_key)[0]

    def _candidates(self, key: str) -> list[str]:
        now = time.monotonic()
        ranked = rank(key, self._targets)
        up = [t for t in ranked if self._down_until.get(t, 0.0) <= now]
        return up + [t for t in ranked if t not in up]

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
        candidates = self._candidates(key)[: self._max_attempts]
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
        try:
            async for message in call:
                event = event_from_pb(message, target)
                if event is not None:
                    done = isinstance(event, Done)
                    yield event
        except grpc.aio.AioRpcError as exc:
            raise _classify(exc, target) from None
        finally:
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

    async def drop(self, cache_key: str) -> bool:
        """Best effort DropSession on the chain's owner; True when the worker held it."""
        if not self._stubs:
            return False
        target = self.owner(cache_key)
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
        return _Precondition(details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return _Unreachable(details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return WorkerTimeout(details, code=code.name, target=target)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
        return WorkerRejected(code.name, details, target=target)
    return WorkerError(details, code=code.name, target=target)
