"""The Open Responses (openresponses.org) WebSocket scenarios, re-expressed as our own tests, run concurrently
each on its own socket like the suite's harness, against the box and a real in-process worker.

The harness connects to ws(base)/responses with Bearer auth, sends the next request only after a terminal
event (response.completed / failed / incomplete) or an error event, and gives each turn 30 s.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import ClientWebSocketResponse
from conftest import AUTH

from tests.open_responses import RESOURCE_FIELDS

TERMINAL = {"response.completed", "response.failed", "response.incomplete", "error"}
EVENT_FIELDS = {
    "response.created": {"response"},
    "response.in_progress": {"response"},
    "response.completed": {"response"},
    "response.failed": {"response"},
    "response.output_item.added": {"output_index", "item"},
    "response.output_item.done": {"output_index", "item"},
    "response.content_part.added": {"item_id", "output_index", "content_index", "part"},
    "response.content_part.done": {"item_id", "output_index", "content_index", "part"},
    "response.output_text.delta": {"item_id", "output_index", "content_index", "delta", "logprobs"},
    "response.output_text.done": {"item_id", "output_index", "content_index", "text", "logprobs"},
    "response.function_call_arguments.delta": {"item_id", "output_index", "delta"},
    "response.function_call_arguments.done": {"item_id", "output_index", "name", "arguments"},
}


def validate(event: dict[str, Any]) -> None:
    """What the suite's zod schemas check, for the event types we emit."""
    kind = event["type"]
    if kind == "error":
        assert isinstance(event["status"], int)
        assert isinstance(event["error"]["code"], str)
        assert isinstance(event["error"]["message"], str)
        return
    assert isinstance(event["sequence_number"], int)
    assert EVENT_FIELDS[kind] <= event.keys(), kind
    if "response" in event:
        response = event["response"]
        assert response.keys() >= RESOURCE_FIELDS
        if response["usage"] is not None:
            assert "cached_tokens" in response["usage"]["input_tokens_details"]
            assert "reasoning_tokens" in response["usage"]["output_tokens_details"]


async def turn(ws: ClientWebSocketResponse, body: dict[str, Any]) -> dict[str, Any]:
    await ws.send_str(orjson.dumps({"type": "response.create", "model": "tether-sim", **body}).decode())
    async with asyncio.timeout(30):
        while True:
            event = orjson.loads((await ws.receive()).data)
            validate(event)
            if event["type"] in TERMINAL:
                return event


def user(text: str) -> list[dict[str, Any]]:
    return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]


async def websocket_response(client: Any) -> None:
    async with client.ws_connect("/v1/responses", headers=AUTH) as ws:
        done = await turn(ws, {"input": user("Say hello"), "store": False, "tools": []})
        assert done["type"] == "response.completed"
        assert done["response"]["status"] == "completed"


async def sequential(client: Any) -> None:
    async with client.ws_connect("/v1/responses", headers=AUTH) as ws:
        for text in ("first", "second"):
            assert (await turn(ws, {"input": user(text), "store": False}))["type"] == "response.completed"


async def continuation(client: Any) -> None:
    async with client.ws_connect("/v1/responses", headers=AUTH) as ws:
        first = await turn(ws, {"input": user("Remember 7"), "store": False})
        second = await turn(
            ws, {"input": "What number?", "store": False, "previous_response_id": first["response"]["id"]}
        )
        assert second["type"] == "response.completed"
        assert second["response"]["previous_response_id"] == first["response"]["id"]


async def reconnect_store_false_recovery(client: Any) -> None:
    async with client.ws_connect("/v1/responses", headers=AUTH) as ws:
        first = await turn(ws, {"input": user("one"), "store": False})
    async with client.ws_connect("/v1/responses", headers=AUTH) as ws:
        lost = await turn(
            ws, {"input": user("two"), "store": False, "previous_response_id": first["response"]["id"]}
        )
        assert lost["type"] == "error"
        assert lost["error"]["code"] == "previous_response_not_found"
        fresh = await turn(ws, {"input": user("one") + user("two"), "store": False})
        assert fresh["type"] == "response.completed"


async def previous_response_not_found(client: Any) -> None:
    async with client.ws_connect("/v1/responses", headers=AUTH) as ws:
        missing = await turn(
            ws, {"input": user("x"), "store": False, "previous_response_id": "resp_does_not_exist"}
        )
        assert missing["error"]["code"] == "previous_response_not_found"
        assert missing["status"] == 400


async def failed_continuation_evicts_cache(client: Any) -> None:
    async with client.ws_connect("/v1/responses", headers=AUTH) as ws:
        first = await turn(ws, {"input": user("one"), "store": False})
        rid = first["response"]["id"]
        bad = [{"type": "function_call_output", "call_id": "call_openresponses_missing", "output": "x"}]
        failed = await turn(ws, {"input": bad, "store": False, "previous_response_id": rid})
        assert failed["type"] == "error" or failed["response"]["status"] == "failed"
        evicted = await turn(ws, {"input": user("three"), "store": False, "previous_response_id": rid})
        assert evicted["error"]["code"] == "previous_response_not_found"


async def compact_new_chain(client: Any) -> None:
    history = [*user("Plan the release"), {"role": "assistant", "content": "Step 1: tag it."}]
    resp = await client.post(
        "/v1/responses/compact", json={"model": "tether-sim", "input": history}, headers=AUTH
    )
    compacted = await resp.json()
    assert compacted["object"] == "response.compaction"
    async with client.ws_connect("/v1/responses", headers=AUTH) as ws:
        done = await turn(ws, {"input": compacted["output"] + user("Go on"), "tools": [], "store": False})
        assert done["type"] == "response.completed"


async def test_the_websocket_scenarios_pass_concurrently(real_box: Any) -> None:
    client, _, _ = await real_box()
    scenarios = [
        websocket_response,
        sequential,
        continuation,
        reconnect_store_false_recovery,
        previous_response_not_found,
        failed_continuation_evicts_cache,
        compact_new_chain,
    ]
    await asyncio.gather(*(scenario(client) for scenario in scenarios))


async def test_a_worker_dying_mid_stream_fails_the_turn_and_the_next_turn_works_elsewhere(
    real_box: Any,
) -> None:
    client, workers, pool = await real_box(workers=2, speed=1.0)
    slow = {"tether.answer_tokens": "2000"}  # seconds of decoding at the calibrated speed
    async with client.ws_connect("/v1/responses", headers=AUTH) as ws:
        first = await turn(
            ws, {"input": user("short"), "store": True, "metadata": {"tether.answer_tokens": "3"}}
        )
        rid = first["response"]["id"]
        long = {"store": True, "previous_response_id": rid, "input": user("long"), "metadata": slow}
        await ws.send_str(orjson.dumps({"type": "response.create", "model": "tether-sim", **long}).decode())
        while (event := orjson.loads((await ws.receive()).data))["type"] != "response.output_text.delta":
            pass
        owner = next(w for w in workers if w.service.active)
        await owner.stop(0)  # the worker dies mid-stream
        async with asyncio.timeout(30):
            while (event := orjson.loads((await ws.receive()).data))["type"] not in TERMINAL:
                pass
        assert event["type"] == "response.failed"
        assert event["response"]["error"]["code"] == "server_error"
        again = await turn(ws, {"input": user("retry"), "store": True, "previous_response_id": rid,
                                "metadata": {"tether.answer_tokens": "3"}})  # fmt: skip
        assert again["type"] == "response.completed"
    survivor = next(w for w in workers if w is not owner)
    assert survivor.metrics.registry.get_sample_value("tether_worker_generate_total", {"code": "OK"}) >= 1
    assert pool.call_counts["error"] == 1  # the mid-stream death
    # The retry reached the survivor, which did not hold the chain: the whole chain was resent once.
    assert pool.call_counts.get("resend", 0) + pool.call_counts.get("failover", 0) == 1
