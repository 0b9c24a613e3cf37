"""Cold handoff between two in-process boxes through a real Redis: restore on a continuation (WebSocket
and HTTP) and on GET, ownership after a restore, tenant scoping, store:false, Redis down and back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from box_fakes import FakeWorkerPool, ws_turn
from conftest import AUTH, KEY, OTHER_AUTH, OTHER_KEY
from prometheus_client import CollectorRegistry

from api_box.config import Settings
from api_box.io.app import build_app
from api_box.io.redis_store import RedisColdStore
from api_box.io.state import STATE
from tests.redis_fixture import LocalRedis

TOOLS = [{"type": "function", "name": "read_file", "description": "Read", "parameters": {"type": "object"}}]
Boxes = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def make_box(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    fake_pool: FakeWorkerPool,
    redis_prefix: str,
    tmp_path: Any,
) -> Boxes:
    """A box on `url` (the session's Redis by default), sharing the fake worker pool with its peers."""
    keys = tmp_path / "keys"
    keys.write_text(f"alpha {KEY}\nbeta {OTHER_KEY}\n")

    async def factory(url: str, name: str, **overrides: Any) -> TestClient[Any, Any]:
        settings = Settings(
            box_id=name,
            workers=("127.0.0.1:1",),
            api_keys_file=str(keys),
            admin_port=-1,
            redis_url=url,
            redis_prefix=redis_prefix,
            redis_timeout_seconds=0.3,
            write_behind_flush_seconds=5.0,
        ).replace(**overrides)
        registry = CollectorRegistry()
        app: web.Application = build_app(settings, registry=registry, worker_pool=fake_pool)  # type: ignore[arg-type]
        client = await aiohttp_client(app)
        client.registry = registry  # type: ignore[attr-defined]
        return client

    return factory


def metric(box: TestClient[Any, Any], name: str, **labels: str) -> float:
    value = box.registry.get_sample_value(name, labels or None)  # type: ignore[attr-defined]
    return 0.0 if value is None else float(value)


def cold(box: TestClient[Any, Any]) -> RedisColdStore:
    store = box.app[STATE].runner.cold
    assert isinstance(store, RedisColdStore)
    return store


async def agent_turns(box: TestClient[Any, Any], turns: int, **extra: Any) -> list[dict[str, Any]]:
    """A store:true agent run on one WebSocket: a user message, then tool outputs; the final responses."""
    responses: list[dict[str, Any]] = []
    common = {"tools": TOOLS, "instructions": "agent", "store": True, **extra}
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        event = {"input": "go", "metadata": {"fake_calls": str(turns)}, **common}
        for _ in range(turns):
            final = (await ws_turn(ws, event))[-1]
            assert final["type"] == "response.completed", final
            response = final["response"]
            responses.append(response)
            call = next(i for i in response["output"] if i["type"] == "function_call")
            output = [{"type": "function_call_output", "call_id": call["call_id"], "output": "data"}]
            event = {"input": output, "previous_response_id": response["id"], **common}
            event["metadata"] = {"fake_calls": str(turns)}
    return responses


def continuation(previous: dict[str, Any], **extra: Any) -> dict[str, Any]:
    call = next(i for i in previous["output"] if i["type"] == "function_call")
    return {
        "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "more"}],
        "previous_response_id": previous["id"],
        "tools": TOOLS,
        "instructions": "agent",
        "store": True,
        **extra,
    }


async def test_a_websocket_continuation_on_another_box_is_restored_and_owned_there(
    make_box: Boxes, redis_url: str, fake_pool: FakeWorkerPool
) -> None:
    box_a, box_b = await make_box(redis_url, "box-a"), await make_box(redis_url, "box-b")
    responses = await agent_turns(box_a, 3)
    assert await cold(box_a).flush()
    async with box_b.ws_connect("/v1/responses", headers=AUTH) as ws:
        events = await ws_turn(ws, continuation(responses[-1], metadata={"fake_calls": "9"}))
        assert events[-1]["type"] == "response.completed", events[-1]
        restored_call = fake_pool.sent[-1]
        # The restored chain is the whole history: the worker gets it in full once (held_len 0) ...
        assert restored_call.request.held_len == 0
        assert restored_call.chain[: len(fake_pool.sent[-2].chain)] == fake_pool.sent[-2].chain
        nxt = await ws_turn(ws, continuation(events[-1]["response"], metadata={"fake_calls": "9"}))
        assert nxt[-1]["type"] == "response.completed"
    # ... and from then on box B owns it: deltas again, found in its memory.
    assert fake_pool.sent[-1].request.held_len > 0
    assert metric(box_b, "tether_box_session_lookups_total", result="redis") == 1
    assert metric(box_b, "tether_box_session_lookups_total", result="memory") == 1
    assert metric(box_b, "tether_box_cold_restore_seconds_count") == 1
    assert metric(box_b, "tether_box_redis_up") == 1
    assert await cold(box_b).flush()
    # Box A never saw those turns; it restores them from what box B wrote.
    async with box_a.ws_connect("/v1/responses", headers=AUTH) as ws:
        again = await ws_turn(ws, continuation(nxt[-1]["response"]))
    assert again[-1]["type"] == "response.completed"
    assert metric(box_a, "tether_box_session_lookups_total", result="redis") == 1


async def test_http_continuation_get_and_input_items_restore_from_redis(
    make_box: Boxes, redis_url: str
) -> None:
    box_a, box_b = await make_box(redis_url, "box-a"), await make_box(redis_url, "box-b")
    responses = await agent_turns(box_a, 2)
    assert await cold(box_a).flush()
    last = responses[-1]
    got = await box_b.get(f"/v1/responses/{last['id']}", headers=AUTH)
    assert got.status == 200
    assert (await got.json())["id"] == last["id"]
    items = await (await box_b.get(f"/v1/responses/{last['id']}/input_items", headers=AUTH)).json()
    assert items["data"][0]["type"] == "function_call_output"
    post = await box_b.post("/v1/responses", json={"model": "m", **continuation(last)}, headers=AUTH)
    assert post.status == 200, await post.text()
    assert (await post.json())["previous_response_id"] == last["id"]


async def test_other_tenants_and_store_false_responses_are_not_found(make_box: Boxes, redis_url: str) -> None:
    box_a, box_b = await make_box(redis_url, "box-a"), await make_box(redis_url, "box-b")
    stored = (await agent_turns(box_a, 1))[-1]
    unstored = (await agent_turns(box_a, 1, store=False))[-1]
    assert await cold(box_a).flush()
    async with box_b.ws_connect("/v1/responses", headers=OTHER_AUTH) as ws:
        events = await ws_turn(ws, continuation(stored))
    assert events[-1]["error"]["code"] == "previous_response_not_found"
    assert (await box_b.get(f"/v1/responses/{stored['id']}", headers=OTHER_AUTH)).status == 404
    async with box_b.ws_connect("/v1/responses", headers=AUTH) as ws:
        events = await ws_turn(ws, continuation(unstored))
    assert events[-1]["error"]["code"] == "previous_response_not_found"


async def test_redis_down_keeps_live_sessions_and_recovers_without_a_restart(
    local_redis: Callable[[], LocalRedis], make_box: Boxes
) -> None:
    server = local_redis()
    box_a, box_b = await make_box(server.url, "box-a"), await make_box(server.url, "box-b")
    async with box_a.ws_connect("/v1/responses", headers=AUTH) as ws:
        first = (await ws_turn(ws, {"input": "go", "tools": TOOLS, "metadata": {"fake_calls": "9"}}))[-1]
        assert await cold(box_a).flush()
        server.stop()
        # The live session does not notice: the next turns complete from memory.
        second = (await ws_turn(ws, continuation(first["response"], metadata={"fake_calls": "9"})))[-1]
        assert second["type"] == "response.completed"
        # A cold restore on the other box is a clean miss.
        async with box_b.ws_connect("/v1/responses", headers=AUTH) as other:
            missed = (await ws_turn(other, continuation(first["response"])))[-1]
        assert missed["error"]["code"] == "previous_response_not_found"
        assert metric(box_b, "tether_box_redis_up") == 0
        third = (await ws_turn(ws, continuation(second["response"], metadata={"fake_calls": "9"})))[-1]
        assert third["type"] == "response.completed"
        assert metric(box_a, "tether_box_write_behind_queue_depth") >= 1
        server.start()  # back, empty; nobody restarts the boxes
        assert await cold(box_a).flush()
        assert metric(box_a, "tether_box_redis_up") == 1
        # Redis came back empty: box A writes the chain whole on its next turn, and it restores again.
        fourth = (await ws_turn(ws, continuation(third["response"], metadata={"fake_calls": "9"})))[-1]
        assert fourth["type"] == "response.completed"
    assert await cold(box_a).flush()
    async with box_b.ws_connect("/v1/responses", headers=AUTH) as ws:
        resumed = (await ws_turn(ws, continuation(fourth["response"])))[-1]
    assert resumed["type"] == "response.completed"
    assert metric(box_b, "tether_box_redis_up") == 1
