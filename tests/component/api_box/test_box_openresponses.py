"""The Open Responses (openresponses.org) WebSocket scenarios, re-expressed as our own tests, run concurrently
each on its own socket like the suite's harness, against the box and a real in-process worker; and the
suite's compaction (`compaction` items) and image-input cases.

The harness connects to ws(base)/responses with Bearer auth, sends the next request only after a terminal
event (response.completed / failed / incomplete) or an error event, and gives each turn 30 s.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
from aiohttp import ClientWebSocketResponse
from conftest import AUTH, OTHER_AUTH, BoxFactory

from api_box.core.protocol import IMAGE_PLACEHOLDER
from api_box.io.state import STATE
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


async def compact(client: Any, items: list[dict[str, Any]], headers: dict[str, str] = AUTH) -> dict[str, Any]:
    resp = await client.post(
        "/v1/responses/compact", json={"model": "tether-sim", "input": items}, headers=headers
    )
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def compact_new_chain(client: Any) -> None:
    history = [*user("Plan the release"), {"role": "assistant", "content": "Step 1: tag it."}]
    compacted = await compact(client, history)
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


HISTORY = [
    {"role": "developer", "content": "Answer tersely."},
    *user("We agreed to launch on Tuesday and notify support first."),
    {"type": "function_call", "call_id": "call_1", "name": "calendar", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "call_1", "output": "Tuesday is free. " * 200},
    {"role": "assistant", "content": "Understood: Tuesday, support first."},
]
KEPT = [HISTORY[0], HISTORY[1], HISTORY[4]]  # what compaction keeps: no tool traffic


def box_metric(client: Any, name: str, **labels: str) -> float:
    return client.app[STATE].metrics.registry.get_sample_value(name, labels) or 0.0


async def test_compact_returns_one_opaque_compaction_item_that_expands_to_the_window(real_box: Any) -> None:
    client, _, _ = await real_box()
    compacted = await compact(client, HISTORY)
    (item,) = compacted["output"]
    assert item.keys() == {"id", "type", "encrypted_content"}
    assert item["type"] == "compaction"
    assert item["id"].startswith("cmp_")
    for word in ("Tuesday", "support", "tersely", "calendar"):
        assert word not in item["encrypted_content"]
    assert compacted["usage"]["output_tokens"] < compacted["usage"]["input_tokens"]
    tokens = []
    for given in ([item], KEPT):  # the item, or the messages it holds: the model sees the same prompt
        async with client.ws_connect("/v1/responses", headers=AUTH) as ws:
            done = await turn(ws, {"input": [*given, *user("Go on")], "tools": [], "store": False})
            assert done["type"] == "response.completed"
            tokens.append(done["response"]["usage"]["input_tokens"])
    assert tokens[0] == tokens[1]
    # A compacted window compacts again (its item is opened first), over HTTP as over WebSocket.
    again = await compact(client, [item, *user("And the blog post?")])
    assert [i["type"] for i in again["output"]] == ["compaction"]
    resp = await client.post(
        "/v1/responses", json={"model": "tether-sim", "input": again["output"]}, headers=AUTH
    )
    assert (await resp.json())["status"] == "completed"
    assert box_metric(client, "tether_box_compactions_total", result="made") == 2
    assert box_metric(client, "tether_box_compactions_total", result="expanded") == 3


async def test_a_compaction_item_opens_only_for_its_tenant_and_its_deployment(make_box: BoxFactory) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    first, second = await make_box(compaction_key=key), await make_box(compaction_key=key)
    (item,) = (await compact(first, HISTORY))["output"]
    body = {"model": "m", "input": [item, *user("Go on")], "store": False}
    resp = await second.post("/v1/responses", json=body, headers=AUTH)  # another box, the same key
    assert (await resp.json())["status"] == "completed"
    refused = [
        (first, OTHER_AUTH, item),  # another tenant
        (await make_box(), AUTH, item),  # another deployment's key
        (first, AUTH, {**item, "encrypted_content": item["encrypted_content"][:-8]}),  # altered
    ]
    for box, headers, sent in refused:
        resp = await box.post("/v1/responses", json={**body, "input": [sent]}, headers=headers)
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert (error["code"], error["param"]) == ("invalid_value", "input[0].encrypted_content")
    assert box_metric(first, "tether_box_compactions_total", result="rejected") == 2
    async with first.ws_connect("/v1/responses", headers=OTHER_AUTH) as ws:  # over WebSocket: an error event
        await ws.send_str(orjson.dumps({"type": "response.create", **body}).decode())
        event = orjson.loads((await ws.receive()).data)
        assert (event["type"], event["status"], event["error"]["code"]) == ("error", 400, "invalid_value")


IMAGE = (  # a 1x1 PNG
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


async def test_an_image_part_reaches_a_model_without_vision_as_a_placeholder(real_box: Any) -> None:
    client, _, _ = await real_box()
    question = {"type": "input_text", "text": "What do you see in this image? "}
    tokens = []
    for part in (
        {"type": "input_image", "image_url": IMAGE},
        {"type": "input_text", "text": IMAGE_PLACEHOLDER},
    ):
        message = {"type": "message", "role": "user", "content": [question, part]}
        resp = await client.post(
            "/v1/responses", json={"model": "tether-sim", "input": [message], "store": False}, headers=AUTH
        )
        response = await resp.json()
        assert response["status"] == "completed", response
        tokens.append(response["usage"]["input_tokens"])
    assert tokens[0] == tokens[1]
    assert box_metric(client, "tether_box_input_images_total", handling="placeholder") == 1
