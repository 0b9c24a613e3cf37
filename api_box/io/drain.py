"""Graceful drain of one box on SIGTERM: `await drain(app, runner)`, then `runner.cleanup()`.

1. Readiness fails at once: /readyz answers 503, tether_box_draining is 1 and
   tether_box_drain_started_timestamp_seconds is set.
2. No new connections: the listening sockets close. A router's connect is refused and it walks to the
   key's ring successor (static and DNS membership); a Kubernetes router has already dropped the
   terminating pod. HTTP responses sent from now on carry `Connection: close`.
3. In-flight responses finish within `shutdown_grace_seconds`: every WebSocket closes with 1012 (the SDK
   reconnects) as soon as no response is running or queued on it and its turns are written to the cold
   store; HTTP requests in progress finish. A create that arrives on a socket after its close was
   decided is not run (no response.created was sent for it): the client resends it after reconnecting.
   A socket that sent X-Tether-Handoff-Key seals its store:false last response first (api_box/io/sealed.py),
   and so does each dropped socket still parked for a resume (api_box/io/resume.py).
4. The write-behind queue is flushed (its own budget, write_behind_flush_seconds).
5. `runner.cleanup()` then closes whatever is still open with 1012 (responses still running past the
   budget are cancelled), stops the background tasks, the cold store and the worker pool; the process
   exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import hdrs, web

from api_box.io.state import STATE

_LOG = logging.getLogger("api_box.drain")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class InFlight:
    """HTTP requests being handled (WebSocket upgrades excluded: a drain waits for those separately)."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        """A request started."""
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        """A request ended."""
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no request is in flight."""
        await self._idle.wait()


INFLIGHT = web.AppKey("tether_box_inflight", InFlight)


@web.middleware
async def inflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count HTTP requests in flight; while draining, ask clients not to reuse the connection."""
    if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
        return await handler(request)
    inflight = request.app[INFLIGHT]
    inflight.enter()
    try:
        response = await handler(request)
    finally:
        inflight.leave()
    if request.app[STATE].draining and not response.prepared:
        response.force_close()
    return response


@dataclass(frozen=True, slots=True)
class DrainReport:
    """How a drain went."""

    seconds: float
    websockets_left: int  # still open when the budget ran out (closed by cleanup)
    http_left: int  # HTTP requests still in flight when the budget ran out
    flushed: bool  # every turn appended before the flush was written (or dropped)


async def drain(
    app: web.Application, runner: web.BaseRunner, *, wall: Callable[[], float] = time.time
) -> DrainReport:
    """Steps 1–4 of the module docstring; the caller runs `runner.cleanup()` next."""
    state = app[STATE]
    loop = asyncio.get_running_loop()
    started = loop.time()
    state.draining = True
    state.metrics.draining.set(1)
    state.metrics.drain_started_timestamp.set(wall())
    for site in list(runner.sites):
        await site.stop()
    connections = list(state.connections)
    _LOG.info("draining: %d WebSockets, %d HTTP requests in flight", len(connections), app[INFLIGHT].count)
    for conn in connections:
        conn.drain()
    waits = [asyncio.ensure_future(conn.wait_closed()) for conn in connections]
    waits.append(asyncio.ensure_future(app[INFLIGHT].wait_idle()))
    _, pending = await asyncio.wait(waits, timeout=state.settings.shutdown_grace_seconds)
    for task in pending:
        task.cancel()
    # Dropped sockets whose client has not come back yet: sealed too, so it continues on the next box.
    await state.resumes.seal_parked(state.handoffs)
    flushed = await state.runner.cold.flush()
    report = DrainReport(
        seconds=loop.time() - started,
        websockets_left=len(state.connections),
        http_left=app[INFLIGHT].count,
        flushed=flushed,
    )
    _LOG.info(
        "drained in %.2f s: %d WebSockets and %d HTTP requests left over, write-behind %s",
        report.seconds,
        report.websockets_left,
        report.http_left,
        "flushed" if flushed else "NOT flushed",
    )
    return report
