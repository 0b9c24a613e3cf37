"""WebSocket lanes (`stream_id`, as the openai SDK's `responses_websocket` sessions send it), in-process:
concurrency across lanes, order within one, the echo of stream_id, the limits and their errors, forks across
lanes, HTTP refusing stream_id; and the official SDK's lane helper (openai.lib.responses_websocket) against a
box with a real worker."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import orjson
from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient
from box_fakes import FakeWorkerPool
from conftest import AUTH, KEY, BoxFactory
from openai.lib.responses_websocket import AsyncResponsesWebSocketSession, ResponsesWebSocketLimits

TERMINAL = {"response.completed", "response.failed", "response.incomplete"}


async def send(ws: ClientWebSocketResponse, lane: str | None, **fields: Any) -> None:
    event: dict[str, Any] = {"type": "response.create", "model": "m", "input": "hi", "store": False, **fields}
    if lane is not None:
        event["stream_id"] = lane
    await ws.send_str(orjson.dumps(event).decode())


async def receive(ws: ClientWebSocketResponse) -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads((await ws.receive(timeout=10)).data)
    return event


async def until_done(ws: ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    """Events up to the `count`-th terminal response event or error."""
    events: list[dict[str, Any]] = []
    while sum(e["type"] in TERMINAL or e["type"] == "error" for e in events) < count:
        events.append(await receive(ws))
    return events


async def test_two_lanes_run_at_once_and_every_event_echoes_its_lane(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    fake_pool.gate = asyncio.Event()  # generations wait after prefill until the gate opens
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        await send(ws, "a", input="qa")
        await send(ws, "b", input="qb")
        created: dict[str, str] = {}
        while len(created) < 2:
            event = await receive(ws)
            if event["type"] == "response.created":
                created[event["stream_id"]] = event["response"]["id"]
        fake_pool.gate.set()  # both responses are in flight before either could finish
        events = await until_done(ws, 2)
        await send(ws, None)
        default = await until_done(ws, 1)
    for event in events:
        assert event["stream_id"] in ("a", "b")
        if "response" in event:
            assert event["response"]["id"] == created[event["stream_id"]]
    assert sorted(e["stream_id"] for e in events if e["type"] == "response.completed") == ["a", "b"]
    assert default[-1]["type"] == "response.completed"
    assert all("stream_id" not in e for e in default)  # the default lane omits it


async def test_one_lane_runs_its_creates_in_order(box: TestClient[Any, Any]) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        for n in range(3):
            await send(ws, "a", input=f"q{n}")
        events = await until_done(ws, 3)
    kinds = [e["type"] for e in events if e["type"] in ("response.created", "response.completed")]
    assert kinds == ["response.created", "response.completed"] * 3  # never interleaved on one lane


async def test_in_flight_limit_queues_a_ready_lane_until_a_slot_frees(
    make_box: BoxFactory, fake_pool: FakeWorkerPool
) -> None:
    box = await make_box(ws_max_in_flight=1)
    fake_pool.gate = asyncio.Event()
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        await send(ws, "a")
        await send(ws, "b")
        first = await receive(ws)
        assert (first["type"], first["stream_id"]) == ("response.created", "a")
        await asyncio.sleep(0.05)
        assert len(fake_pool.sent) == 1  # b waits for a slot
        fake_pool.gate.set()
        events = [first, *await until_done(ws, 2)]
    order = [
        (e["type"], e["stream_id"]) for e in events if e["type"] in ("response.created", "response.completed")
    ]
    assert order == [
        ("response.created", "a"),
        ("response.completed", "a"),
        ("response.created", "b"),
        ("response.completed", "b"),
    ]


async def test_one_named_lane_too_many_gets_the_stream_limit_error_and_the_socket_stays_open(
    make_box: BoxFactory,
) -> None:
    box = await make_box(ws_max_streams=2)
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        for lane in ("a", "b"):
            await send(ws, lane)
            assert (await until_done(ws, 1))[-1]["type"] == "response.completed"
        await send(ws, "c")
        error = (await until_done(ws, 1))[-1]
        await send(ws, "a")  # known lanes keep working
        again = await until_done(ws, 1)
    assert error["type"] == "error"
    assert error["status"] == 400
    assert error["error"]["code"] == "websocket_stream_limit_reached"
    assert error["stream_id"] == "c"
    assert again[-1]["type"] == "response.completed"


async def test_bad_creates_are_answered_on_their_lane_and_a_malformed_stream_id_on_the_default_one(
    box: TestClient[Any, Any],
) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        await send(ws, "bad lane!")
        invalid = (await until_done(ws, 1))[-1]
        await ws.send_str(orjson.dumps({"type": "response.create", "stream_id": "a"}).decode())  # no model
        missing = (await until_done(ws, 1))[-1]
    assert invalid["error"]["code"] == "invalid_stream_id"
    assert invalid["error"]["param"] == "stream_id"
    assert "stream_id" not in invalid
    assert missing["error"]["code"] == "missing_required_parameter"
    assert missing["stream_id"] == "a"


async def test_a_lane_forks_from_another_lanes_response_and_a_failed_fork_keeps_the_parent(
    box: TestClient[Any, Any],
) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        await send(ws, "a", input="root")
        parent = (await until_done(ws, 1))[-1]["response"]["id"]
        orphan = [{"type": "function_call_output", "call_id": "call_nope", "output": "x"}]
        await send(ws, "b", input=orphan, previous_response_id=parent)
        failed = (await until_done(ws, 1))[-1]
        await send(ws, "b", input="fork", previous_response_id=parent)
        fork = (await until_done(ws, 1))[-1]
        await send(ws, "a", input="go on", previous_response_id=parent)
        same_lane = (await until_done(ws, 1))[-1]
    assert failed["error"]["code"] == "unknown_call_id"
    assert fork["type"] == "response.completed"
    assert fork["response"]["previous_response_id"] == parent
    assert same_lane["type"] == "response.completed"  # the failed fork on b did not evict a's response


async def test_http_refuses_stream_id(box: TestClient[Any, Any]) -> None:
    response = await box.post(
        "/v1/responses", headers=AUTH, json={"model": "m", "input": "hi", "stream_id": "a"}
    )
    body = await response.json()
    assert response.status == 400
    assert body["error"]["code"] == "unsupported_parameter"
    assert body["error"]["param"] == "stream_id"


async def test_the_sdk_lane_helper_runs_two_agents_on_one_connection(real_box: Any) -> None:
    client_box, _, _ = await real_box(speed=0.0)
    client = openai.AsyncOpenAI(api_key=KEY, base_url=str(client_box.make_url("/v1")), max_retries=0)
    limits = ResponsesWebSocketLimits(
        max_lanes=4, max_events_per_lane=4096, max_events=8192, max_bytes_per_lane=1 << 24, max_bytes=1 << 25
    )
    connect = client.responses.connect()
    async with connect as connection, AsyncResponsesWebSocketSession(connection, limits=limits) as session:
        lanes = {name: session.lane(name) for name in ("planner", "coder")}

        async def turn(name: str, text: str, previous: str | None = None) -> Any:
            event: dict[str, Any] = {"type": "response.create", "model": "tether-sim", "input": text}
            event |= {"store": False, "previous_response_id": previous} if previous else {"store": False}
            await lanes[name].send(event)  # type: ignore[arg-type]
            return await asyncio.wait_for(lanes[name].get_final_response(), 20)

        first = await asyncio.gather(turn("planner", "Plan the change"), turn("coder", "Write the code"))
        second = await asyncio.gather(
            turn("planner", "Next step", first[0].id), turn("coder", "Fix the test", first[1].id)
        )
    for response in (*first, *second):
        assert response.status == "completed"
        assert response.output_text
    assert [r.previous_response_id for r in second] == [first[0].id, first[1].id]
    for response in second:
        assert response.usage is not None
        assert response.usage.input_tokens_details.cached_tokens > 0  # each lane continues its own chain
