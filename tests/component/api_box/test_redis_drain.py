"""The box's drain (api_box/io/drain.py), in-process: readiness off, no new connections, in-flight
responses finish, idle WebSockets close with 1012 after their turns are in Redis, HTTP finishes with
Connection: close, and another box continues the drained chains from Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from box_fakes import FakeWorkerPool, ws_turn
from conftest import AUTH, KEY
from prometheus_client import CollectorRegistry

from api_box.config import Settings
from api_box.io.app import build_admin_app, build_app
from api_box.io.drain import drain
from gpu_worker.client import GenerationRequest, WorkerEvent
from tests.redis_fixture import LocalRedis

SERVICE_RESTART = 1012
Boxes = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def make_box(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    fake_pool: FakeWorkerPool,
    redis_prefix: str,
    tmp_path: Any,
) -> Boxes:
    keys = tmp_path / "keys"
    keys.write_text(f"alpha {KEY}\n")

    async def factory(url: str, name: str, **overrides: Any) -> TestClient[Any, Any]:
        settings = Settings(
            box_id=name, workers=("127.0.0.1:1",), api_keys_file=str(keys), admin_port=-1,
            redis_url=url, redis_prefix=redis_prefix, redis_timeout_seconds=0.3,
            write_behind_flush_seconds=5.0, shutdown_grace_seconds=10.0,
        ).replace(**overrides)  # fmt: skip
        registry = CollectorRegistry()
        app: web.Application = build_app(settings, registry=registry, worker_pool=fake_pool)  # type: ignore[arg-type]
        client = await aiohttp_client(app)
        client.registry = registry  # type: ignore[attr-defined]
        return client

    return factory


@pytest.fixture
async def reached(fake_pool: FakeWorkerPool) -> AsyncIterator[asyncio.Queue[str]]:
    """Request ids of generations as they reach the worker (which holds them while `gate` is unset)."""
    arrivals: asyncio.Queue[str] = asyncio.Queue()
    generate = fake_pool.generate

    async def announcing(req: GenerationRequest) -> AsyncIterator[WorkerEvent]:
        arrivals.put_nowait(req.request_id)
        async for event in generate(req):
            yield event

    fake_pool.generate = announcing  # type: ignore[method-assign]
    return arrivals


def metric(box: TestClient[Any, Any], name: str) -> float:
    return float(box.registry.get_sample_value(name) or 0.0)  # type: ignore[attr-defined]


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, list[dict[str, Any]]]:
    """Read until the close: (close code, the events received before it)."""
    events: list[dict[str, Any]] = []
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type is WSMsgType.TEXT:
            events.append(orjson.loads(msg.data))
            continue
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED), msg
        return ws.close_code, events


def create(**fields: Any) -> str:
    return orjson.dumps({"type": "response.create", "model": "m", "store": True, **fields}).decode()


async def test_drain_finishes_in_flight_work_then_closes_with_1012_and_hands_off(
    make_box: Boxes,
    redis_url: str,
    fake_pool: FakeWorkerPool,
    reached: asyncio.Queue[str],
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> None:
    box, peer = await make_box(redis_url, "box-a"), await make_box(redis_url, "box-b")
    admin = await aiohttp_client(build_admin_app(CollectorRegistry(), box.app))
    assert (await admin.get("/readyz")).status == 200
    idle = await box.ws_connect("/v1/responses", headers=AUTH)
    busy = await box.ws_connect("/v1/responses", headers=AUTH)
    first = (await ws_turn(busy, {"input": "hi", "store": True}))[-1]["response"]
    await reached.get()
    fake_pool.gate = asyncio.Event()  # the next generations wait at the worker
    await busy.send_str(create(input="more", previous_response_id=first["id"]))
    http = asyncio.ensure_future(box.post("/v1/responses", json={"model": "m", "input": "x"}, headers=AUTH))
    await reached.get()
    await reached.get()  # both are running

    draining = asyncio.ensure_future(drain(box.app, box.server.runner))  # type: ignore[arg-type]
    assert await closed_with(idle) == (SERVICE_RESTART, [])  # idle: closed at once
    assert metric(box, "tether_box_draining") == 1
    assert metric(box, "tether_box_drain_started_timestamp_seconds") > 0
    assert (await admin.get("/readyz")).status == 503  # readiness fails at once
    with pytest.raises(aiohttp.ClientConnectionError):
        await box.ws_connect("/v1/responses", headers=AUTH)  # no new connections
    fake_pool.gate.set()
    code, events = await closed_with(busy)
    assert code == SERVICE_RESTART
    assert events[-1]["type"] == "response.completed"  # the in-flight response finished first
    answer = await http
    assert answer.status == 200
    assert answer.headers.get("Connection", "").lower() == "close"
    report = await draining
    assert (report.websockets_left, report.http_left, report.flushed) == (0, 0, True)
    # The chain continues on another box, restored from Redis.
    async with peer.ws_connect("/v1/responses", headers=AUTH) as ws:
        resumed = await ws_turn(ws, {"input": "again", "previous_response_id": events[-1]["response"]["id"]})
    assert resumed[-1]["type"] == "response.completed"


async def test_a_create_after_the_close_decision_is_not_run_and_redis_down_still_ends_the_drain(
    local_redis: Callable[[], LocalRedis], make_box: Boxes, fake_pool: FakeWorkerPool
) -> None:
    server = local_redis()
    box = await make_box(server.url, "box-a", write_behind_flush_seconds=0.5)
    ws = await box.ws_connect("/v1/responses", headers=AUTH)
    server.stop()
    done = (await ws_turn(ws, {"input": "hi"}))[-1]  # completes; its record cannot be written
    assert done["type"] == "response.completed"
    calls = len(fake_pool.sent)
    draining = asyncio.ensure_future(drain(box.app, box.server.runner))  # type: ignore[arg-type]
    await ws.send_str(create(input="late", previous_response_id=done["response"]["id"]))
    code, events = await closed_with(ws)
    assert (code, events) == (SERVICE_RESTART, [])  # not started: the client resends it elsewhere
    assert len(fake_pool.sent) == calls
    report = await draining
    assert not report.flushed
