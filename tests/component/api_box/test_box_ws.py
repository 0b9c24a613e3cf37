"""WebSocket mode semantics, in-process with a fake worker pool."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from box_fakes import FakeWorkerPool, ws_turn
from conftest import AUTH, BoxFactory
from prometheus_client import CollectorRegistry

from api_box.io.state import STATE
from gpu_worker.wire import chat
from gpu_worker.wire.tokenizer import Special

TOOLS = [{"type": "function", "name": "read_file", "description": "Read", "parameters": {"type": "object"}}]
LIFECYCLE = {"response.created", "response.in_progress", "response.completed", "response.failed"}


def terminal(events: list[dict[str, Any]]) -> dict[str, Any]:
    return events[-1]


def calls_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in response["output"] if item["type"] == "function_call"]


async def test_sequential_turns_number_their_events_from_zero(box: TestClient[Any, Any]) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        for _ in range(2):
            events = await ws_turn(ws, {"input": "hi", "store": False})
            assert [e["sequence_number"] for e in events] == list(range(len(events)))
            assert events[0]["type"] == "response.created"
            assert terminal(events)["type"] == "response.completed"
            for e in events:
                if e["type"] in LIFECYCLE:
                    assert e["response"]["id"] == events[0]["response"]["id"]
                    assert "usage" in e["response"]
                    assert "tools" in e["response"]


async def test_a_continuation_sends_only_the_new_tokens(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        common = {"tools": TOOLS, "store": False, "instructions": "agent"}
        first = terminal(await ws_turn(ws, {"input": "go", "metadata": {"fake_calls": "1"}, **common}))
        call = calls_of(first["response"])[0]
        output = [{"type": "function_call_output", "call_id": call["call_id"], "output": "file contents"}]
        previous = first["response"]["id"]
        second = terminal(await ws_turn(ws, {"input": output, "previous_response_id": previous, **common}))
    assert second["type"] == "response.completed"
    sent = fake_pool.sent[1]
    assert not sent.resent
    assert sent.tokens_sent == len(chat.render_function_call_output("file contents"))
    assert sent.request.cache_key == fake_pool.sent[0].request.cache_key
    usage = second["response"]["usage"]
    assert usage["input_tokens_details"]["cached_tokens"] == sent.request.held_len > 0
    assert second["response"]["previous_response_id"] == first["response"]["id"]


async def test_creates_sent_together_run_one_at_a_time_in_order(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    fake_pool.gate = asyncio.Event()
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        for n in range(3):
            await ws.send_json({"type": "response.create", "model": "m", "input": f"q{n}", "store": False})
        first = await ws.receive_json()
        assert first["type"] == "response.created"
        assert len(fake_pool.sent) == 1  # the others wait in the connection's FIFO
        fake_pool.gate.set()
        events = [first]
        while sum(e["type"] == "response.completed" for e in events) < 3:
            events.append(await ws.receive_json())
    ids = [e["response"]["id"] for e in events if e["type"] in ("response.created", "response.completed")]
    assert ids[0::2] == ids[1::2]  # created and completed of one response are adjacent: never interleaved
    assert [list(s.chain) for s in fake_pool.sent] == [chat.render_message("user", f"q{n}") for n in range(3)]


async def test_too_many_queued_creates_get_an_error_and_the_socket_stays_open(
    make_box: BoxFactory, fake_pool: FakeWorkerPool
) -> None:
    box = await make_box(max_queued_creates=1)
    fake_pool.gate = asyncio.Event()
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        for n in range(3):
            await ws.send_json({"type": "response.create", "model": "m", "input": f"q{n}", "store": False})
        seen = []
        while not any(e["type"] == "error" for e in seen):
            seen.append(await ws.receive_json())
        error = seen[-1]
        assert error["status"] == 429
        assert error["error"]["code"] == "too_many_queued_requests"
        fake_pool.gate.set()
        done = 0
        while done < 2:
            done += (await ws.receive_json())["type"] == "response.completed"
        assert terminal(await ws_turn(ws, {"input": "again", "store": False}))["type"] == "response.completed"


async def test_store_false_keeps_only_the_most_recent_response(box: TestClient[Any, Any]) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        r1 = terminal(await ws_turn(ws, {"input": "one", "store": False}))["response"]["id"]
        r2 = terminal(await ws_turn(ws, {"input": "two", "store": False, "previous_response_id": r1}))[
            "response"
        ]["id"]
        stale = terminal(await ws_turn(ws, {"input": "x", "store": False, "previous_response_id": r1}))
        assert stale["type"] == "error"
        assert stale["status"] == 400
        assert stale["error"] == {
            "type": "invalid_request_error",
            "code": "previous_response_not_found",
            "message": f"Previous response with id '{r1}' not found.",
            "param": "previous_response_id",
        }
        ok = terminal(await ws_turn(ws, {"input": "three", "store": False, "previous_response_id": r2}))
        assert ok["type"] == "response.completed"


async def test_a_failed_continuation_evicts_the_previous_response(box: TestClient[Any, Any]) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        r1 = terminal(await ws_turn(ws, {"input": "one", "store": False}))["response"]["id"]
        bad = [{"type": "function_call_output", "call_id": "call_openresponses_missing", "output": "x"}]
        failed = terminal(await ws_turn(ws, {"input": bad, "store": False, "previous_response_id": r1}))
        assert failed["type"] == "error"
        assert failed["status"] == 400
        assert failed["error"]["code"] == "unknown_call_id"
        assert failed["error"]["type"] == "invalid_request_error"
        after = terminal(await ws_turn(ws, {"input": "again", "store": False, "previous_response_id": r1}))
        assert after["error"]["code"] == "previous_response_not_found"


async def test_store_true_continues_on_another_connection_with_a_delta(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        r1 = terminal(await ws_turn(ws, {"input": "one", "store": True}))["response"]["id"]
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        done = terminal(await ws_turn(ws, {"input": "two", "store": True, "previous_response_id": r1}))
    assert done["type"] == "response.completed"
    assert fake_pool.sent[1].request.held_len > 0
    assert not fake_pool.sent[1].resent


async def test_a_new_socket_cannot_continue_a_store_false_response(box: TestClient[Any, Any]) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        r1 = terminal(await ws_turn(ws, {"input": "one", "store": False}))["response"]["id"]
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        missing = terminal(await ws_turn(ws, {"input": "two", "store": False, "previous_response_id": r1}))
        assert missing["error"]["code"] == "previous_response_not_found"
        fresh = terminal(await ws_turn(ws, {"input": "full context again", "store": False}))
        assert fresh["type"] == "response.completed"


async def test_generate_false_warms_up_a_chainable_response(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        warm = await ws_turn(
            ws, {"input": "context", "instructions": "sys", "store": False, "generate": False}
        )
        assert [e["type"] for e in warm] == ["response.created", "response.completed"]
        response = terminal(warm)["response"]
        assert response["output"] == []
        assert response["usage"]["total_tokens"] == 0
        real = terminal(await ws_turn(ws, {"input": "question", "instructions": "sys", "store": False,
                                           "previous_response_id": response["id"]}))  # fmt: skip
    assert real["type"] == "response.completed"
    assert fake_pool.sent[0].request.generate is False
    assert fake_pool.sent[1].tokens_sent == len(chat.render_message("user", "question"))


async def test_instructions_are_not_carried_over(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        r1 = terminal(await ws_turn(ws, {"input": "one", "instructions": "be terse", "store": False}))
        r2 = terminal(
            await ws_turn(ws, {"input": "two", "store": False, "previous_response_id": r1["response"]["id"]})
        )
    assert r2["response"]["instructions"] is None
    first, second = fake_pool.sent[0], fake_pool.sent[1]
    assert first.chain[0] == Special.SYSTEM
    assert second.chain[0] == Special.USER  # the new header has no instructions
    assert second.request.held_len == 0  # a changed header: the chain is sent whole
    assert second.request.cache_key != first.request.cache_key


async def test_a_worker_dying_mid_stream_fails_the_response_and_the_next_turn_works(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        r1 = terminal(await ws_turn(ws, {"input": "one", "store": True}))["response"]["id"]
        fake_pool.fail_mid_stream = 1
        failed = await ws_turn(ws, {"input": "two", "store": True, "previous_response_id": r1})
        assert failed[0]["type"] == "response.created"
        assert terminal(failed)["type"] == "response.failed"
        assert terminal(failed)["response"]["error"]["code"] == "server_error"
        assert terminal(failed)["response"]["status"] == "failed"
        # store:true: the referenced id is still in the session store, so the agent can retry the turn.
        retry = terminal(await ws_turn(ws, {"input": "two", "store": True, "previous_response_id": r1}))
        assert retry["type"] == "response.completed"
        fresh = terminal(await ws_turn(ws, {"input": "new chain", "store": False}))
        assert fresh["type"] == "response.completed"


async def test_the_connection_limit_sends_the_error_then_closes_1000(make_box: BoxFactory) -> None:
    box = await make_box(connection_max_seconds=0.3)
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        error = await ws.receive_json(timeout=10)
        assert error["type"] == "error"
        assert error["status"] == 400
        assert error["error"]["code"] == "websocket_connection_limit_reached"
        assert error["error"]["type"] == "invalid_request_error"
        closing = await ws.receive(timeout=10)
        assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert ws.close_code == 1000


async def test_connection_metrics(box: TestClient[Any, Any], registry: CollectorRegistry) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        await ws_turn(ws, {"input": "hello", "store": False})
        assert registry.get_sample_value("tether_box_websocket_connections") == 1
    state = box.app[STATE]
    await asyncio.gather(*(c.wait_closed() for c in list(state.connections)))
    assert registry.get_sample_value("tether_box_websocket_connections") == 0
    assert (
        registry.get_sample_value("tether_box_bytes_total", {"mode": "ws", "direction": "client_to_server"})
        > 0
    )
    assert (
        registry.get_sample_value("tether_box_bytes_total", {"mode": "ws", "direction": "server_to_client"})
        > 0
    )
    assert registry.get_sample_value("tether_box_responses_total", {"mode": "ws", "status": "completed"}) == 1
    assert registry.get_sample_value("tether_box_time_to_first_token_seconds_count", {"mode": "ws"}) == 1
    assert registry.get_sample_value("tether_box_worker_calls_total", {"result": "ok"}) == 1
