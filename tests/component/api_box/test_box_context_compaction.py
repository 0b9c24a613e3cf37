"""Compaction inside a response (`context_management`), against the box and a real in-process worker: a
full-context input over the threshold is compacted before it becomes a chain, the response's output opens
with the `compaction` item (over WebSocket with SDK 3.63's `response.compaction.compacting` event), and a
stateless client that appends that output to its whole history continues from the compacted window."""

from __future__ import annotations

from typing import Any

import orjson
from conftest import AUTH
from openai.types.responses.responses_server_event import ResponseCompactionWsCompacting

from api_box.io.state import STATE

TOOLS = [{"type": "function", "name": "read_file", "parameters": {"type": "object"}}]
AGENT = {"tether.tool_calls": "3", "tether.answer_tokens": "5"}
TERMINAL = {"response.completed", "response.failed", "response.incomplete", "error"}
HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Find the bug."},
    {"type": "function_call", "call_id": "c0", "name": "read_file", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "c0", "output": "old file contents " * 300},
    {"type": "function_call", "call_id": "c1", "name": "read_file", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "c1", "output": "the file with the bug"},
]
WINDOW = [HISTORY[0], *HISTORY[3:]]  # what compaction keeps: the message and the last round of calls
COMPACT = [{"type": "compaction", "compact_threshold": 200}]


def body(items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "tether-sim", "input": items, "tools": TOOLS, "metadata": AGENT, "store": False, **extra}


async def ws_events(client: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    async with client.ws_connect("/v1/responses", headers=AUTH) as ws:
        await ws.send_str(orjson.dumps({"type": "response.create", **request}).decode())
        events = [orjson.loads((await ws.receive(timeout=30)).data)]
        while events[-1]["type"] not in TERMINAL:
            events.append(orjson.loads((await ws.receive(timeout=30)).data))
    return events


async def http_response(client: Any, request: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/v1/responses", json=request, headers=AUTH)
    assert resp.status == 200, await resp.text()
    response: dict[str, Any] = await resp.json()
    return response


async def test_a_long_input_is_compacted_and_the_output_says_so(real_box: Any) -> None:
    client, _, _ = await real_box()
    events = await ws_events(client, body(HISTORY, context_management=COMPACT))
    kinds = [e["type"] for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.compaction.compacting",
        "response.output_item.done",
    ]
    compacting = ResponseCompactionWsCompacting.model_validate(events[3])  # the SDK's own type
    item = events[4]["item"]
    assert (compacting.item_id, compacting.output_index) == (item["id"], 0)
    assert item["type"] == "compaction"
    assert "bug" not in item["encrypted_content"]
    response = events[-1]["response"]
    assert response["status"] == "completed"
    assert response["output"][0] == item
    assert [i["type"] for i in response["output"][1:]] == ["function_call"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    # The model saw the compacted window: the same prompt as a request that sends only the window.
    plain = await http_response(client, body(WINDOW))
    assert response["usage"]["input_tokens"] == plain["usage"]["input_tokens"]
    # A stateless client appends the output to its whole history: what precedes the item is dropped.
    call = response["output"][1]
    answer = {"type": "function_call_output", "call_id": call["call_id"], "output": "fixed"}
    after = await http_response(client, body([*HISTORY, *response["output"], answer]))
    alone = await http_response(client, body([*WINDOW, call, answer]))
    assert after["status"] == "completed"
    assert after["usage"]["input_tokens"] == alone["usage"]["input_tokens"]
    metrics = client.app[STATE].metrics.registry
    assert metrics.get_sample_value("tether_box_compactions_total", {"result": "made"}) == 1
    assert metrics.get_sample_value("tether_box_compactions_total", {"result": "expanded"}) == 1


async def test_below_the_threshold_nothing_is_compacted_and_sse_has_no_compacting_event(
    real_box: Any,
) -> None:
    client, _, _ = await real_box()
    small = await http_response(client, body(HISTORY[:1], context_management=COMPACT))
    assert [i["type"] for i in small["output"]] == ["function_call"]
    resp = await client.post(
        "/v1/responses", json=body(HISTORY, context_management=COMPACT, stream=True), headers=AUTH
    )
    kinds = [
        line.removeprefix("event: ")
        for line in (await resp.text()).splitlines()
        if line.startswith("event: ")
    ]
    assert "response.compaction.compacting" not in kinds  # a WebSocket event in SDK 3.63
    assert kinds[2:4] == ["response.output_item.added", "response.output_item.done"]


async def test_a_bad_context_management_is_refused(real_box: Any) -> None:
    client, _, _ = await real_box()
    for bad, param in (
        ([{"type": "truncate"}], "context_management[0].type"),
        ([{"type": "compaction", "compact_threshold": 0}], "context_management[0].compact_threshold"),
        ({"type": "compaction"}, "context_management"),
    ):
        resp = await client.post("/v1/responses", json=body(HISTORY, context_management=bad), headers=AUTH)
        assert resp.status == 400
        assert (await resp.json())["error"]["param"] == param
