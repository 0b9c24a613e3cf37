"""Fixtures for the router's component tests: in-process aiohttp boxes on port 0 and routers in front.

Every test here runs twice: on asyncio's own event loop and on uvloop (what `tether-router` runs on), whose
transports behave differently in corners (they do not even subclass asyncio.Transport).

A box answers WebSocket upgrades on GET /v1/responses (echoing each message as `{"box", "echo"}`) and
POST /v1/responses (answering `{"box", "body_bytes"}`), so a test sees which box a connection reached.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

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

    async def start(settings: Settings, source: MembershipSource | None = None) -> RunningRouter:
        running = await start_router(settings, registry=CollectorRegistry(), source=source)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop(drain_timeout=0.5)
