"""Fixtures for the router's component tests: in-process aiohttp boxes on port 0 and routers in front.

Every test here runs twice: on asyncio's own event loop and on uvloop (what `tether-router` runs on), whose
transports behave differently in corners (they do not even subclass asyncio.Transport).

A box answers WebSocket upgrades on GET /v1/responses (echoing each message as `{"box", "echo"}`) and
POST /v1/responses (answering `{"box", "body_bytes"}`), so a test sees which box a connection reached.

`FakeClock` is the router's time in tests of its deadlines: it moves only when the test advances it, so no
test waits for a real head, idle, send or drain timeout to pass.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry

from router.app import RunningRouter, start_router
from router.config import Settings
from router.io.sources import MembershipSource


@dataclass
class Box:
    """A running test box."""

    name: str
    port: int
    runner: web.AppRunner
    ws_connections: int = 0

    @property
    def spec(self) -> str:
        return f"{self.name}=127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


def _box_app(box_name: str, stats: dict[str, int]) -> web.Application:
    async def responses_ws(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        stats["ws"] += 1
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(json.dumps({"box": box_name, "echo": msg.data}))
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def responses_post(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"box": box_name, "body_bytes": len(body)})

    async def readyz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/v1/responses", responses_ws)
    app.router.add_post("/v1/responses", responses_post)
    app.router.add_get("/readyz", readyz)
    return app


async def start_box(name: str, port: int = 0) -> Box:
    """Start one box on 127.0.0.1 (`port` 0: a free one)."""
    stats = {"ws": 0}
    runner = web.AppRunner(_box_app(name, stats), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return Box(name, int(runner.addresses[0][1]), runner)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def router_settings(boxes: str, **overrides: object) -> Settings:
    values: dict[str, object] = {"host": "127.0.0.1", "port": 0, "admin_port": 0, "boxes": boxes}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], object]]:
    factories: dict[str, Callable[[], object]] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux
        return factories
    return {**factories, "uvloop": uvloop.new_event_loop}


@dataclass(order=True)
class FakeTimer:
    """A callback scheduled on a FakeClock."""

    when: float
    seq: int
    callback: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A `router.io.clock.Clock` whose time moves only in `advance` (it starts at 1000.0)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[FakeTimer] = []
        self._seq = 0
        self._changed: asyncio.Event | None = None

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> FakeTimer:
        self._seq += 1
        timer = FakeTimer(when, self._seq, callback)
        heapq.heappush(self._timers, timer)
        if self._changed is not None:
            self._changed.set()
        return timer

    def pending(self) -> list[float]:
        """When the live timers are due, earliest first."""
        return sorted(t.when for t in self._timers if not t.cancelled)

    async def armed(self, when: float, within: float = 5.0) -> None:
        """Return once a live timer is due at exactly `when` (what the router armed for a deadline it
        computed from this clock's unmoving `now`)."""
        async with asyncio.timeout(within):
            while when not in self.pending():
                self._changed = asyncio.Event()
                await self._changed.wait()

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, running every timer that comes due on the way, in order. After
        each, the event loop runs what it started (a close, a woken task) before the next one runs."""
        target = self.now + seconds
        while self._timers and self._timers[0].when <= target:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, timer.when)
            timer.cancelled = True
            timer.callback()
            await asyncio.sleep(0)
        self.now = target
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Return once `predicate()` holds (checked each millisecond); fail after `within` seconds."""
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.001)


StartBoxes = Callable[..., Awaitable[list[Box]]]
StartRouter = Callable[..., Awaitable[RunningRouter]]


@pytest.fixture
async def boxes() -> AsyncIterator[StartBoxes]:
    started: list[Box] = []

    async def start(count: int, prefix: str = "box") -> list[Box]:
        new = [await start_box(f"{prefix}-{i}") for i in range(count)]
        started.extend(new)
        return new

    yield start
    await asyncio.gather(*(box.stop() for box in started))


@pytest.fixture
async def routers() -> AsyncIterator[StartRouter]:
    started: list[RunningRouter] = []

    async def start(
        settings: Settings, source: MembershipSource | None = None, clock: FakeClock | None = None
    ) -> RunningRouter:
        running = await start_router(settings, registry=CollectorRegistry(), source=source, clock=clock)
        started.append(running)
        return running

    yield start
    for running in started:
        router = running.router
        for conn in [*router.connections, *router.refusing]:
            conn.abort()  # a drain on a fake clock would wait for time that never comes
        async with asyncio.timeout(5):
            await router.wait_no_connections()
        await running.stop(drain_timeout=0.5)
