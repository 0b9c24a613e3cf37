"""HTTP mode: JSON and SSE creates, stored responses, input items, compaction, models, probes, limits."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp.test_utils import TestClient
from box_fakes import FakeWorkerPool
from conftest import AUTH, BoxFactory

from gpu_worker.wire import chat

TOOLS = [{"type": "function", "name": "read_file", "parameters": {"type": "object"}}]


async def create(box: TestClient[Any, Any], **body: Any) -> tuple[int, dict[str, Any]]:
    resp = await box.post("/v1/responses", json={"model": "m", **body}, headers=AUTH)
    return resp.status, await resp.json()


def parse_sse(text: str) -> tuple[list[dict[str, Any]], list[str], str]:
    events, names, last = [], [], ""
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        if lines[0].startswith("event: "):
            names.append(lines[0][len("event: ") :])
            events.append(orjson.loads(lines[1][len("data: ") :]))
        last = block
    return events, names, last


async def test_json_create_get_input_items_and_delete(box: TestClient[Any, Any]) -> None:
    resp = await box.post("/v1/responses", json={"model": "m", "input": "hello"}, headers=AUTH)
    assert resp.status == 200
    assert resp.headers["X-Tether-Box"] == "box-test"
    body = await resp.json()
    assert body["status"] == "completed"
    assert body["store"] is True
    assert body["output"][0]["content"][0]["text"] == "Here is the answer."
    got = await box.get(f"/v1/responses/{body['id']}", headers=AUTH)
    assert got.status == 200
    assert await got.json() == body
    items = await (await box.get(f"/v1/responses/{body['id']}/input_items", headers=AUTH)).json()
    assert items["object"] == "list"
    assert items["has_more"] is False
    assert items["data"][0]["content"] == [{"type": "input_text", "text": "hello"}]
    assert items["first_id"] == items["data"][0]["id"]
    deleted = await box.delete(f"/v1/responses/{body['id']}", headers=AUTH)
    assert await deleted.json() == {"id": body["id"], "object": "response.deleted", "deleted": True}
    gone = await box.get(f"/v1/responses/{body['id']}", headers=AUTH)
    assert gone.status == 404
    assert (await gone.json())["error"]["code"] == "not_found"
    assert (await box.delete(f"/v1/responses/{body['id']}", headers=AUTH)).status == 404


async def test_input_items_paging(box: TestClient[Any, Any]) -> None:
    inputs = [{"role": "user", "content": f"m{i}", "id": f"msg_{i}"} for i in range(5)]
    _, body = await create(box, input=inputs)
    url = f"/v1/responses/{body['id']}/input_items"
    desc = await (await box.get(url, params={"limit": "2"}, headers=AUTH)).json()
    assert [i["id"] for i in desc["data"]] == ["msg_4", "msg_3"]
    assert desc["has_more"] is True
    asc = await (await box.get(url, params={"order": "asc", "after": "msg_1"}, headers=AUTH)).json()
    assert [i["id"] for i in asc["data"]] == ["msg_2", "msg_3", "msg_4"]
    bad = await box.get(url, params={"limit": "0"}, headers=AUTH)
    assert bad.status == 400
    assert (await bad.json())["error"]["param"] == "limit"


async def test_sse_stream_names_events_and_ends_with_done(box: TestClient[Any, Any]) -> None:
    resp = await box.post("/v1/responses", json={"model": "m", "input": "hi", "stream": True}, headers=AUTH)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events, names, last = parse_sse(await resp.text())
    assert last == "data: [DONE]"
    assert names == [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert names[0] == "response.created"
    assert names[-1] == "response.completed"


async def test_http_continuation_with_store_true_sends_a_delta(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    _, first = await create(box, input="go", tools=TOOLS, metadata={"fake_calls": "1"})
    call = first["output"][0]
    assert call["type"] == "function_call"
    output = [{"type": "function_call_output", "call_id": call["call_id"], "output": "result"}]
    status, second = await create(box, input=output, tools=TOOLS, previous_response_id=first["id"])
    assert status == 200
    assert second["previous_response_id"] == first["id"]
    assert fake_pool.sent[1].tokens_sent == len(chat.render_function_call_output("result"))
    assert second["usage"]["input_tokens_details"]["cached_tokens"] > 0


async def test_full_context_store_false_is_stateless(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    status, body = await create(box, input="stateless", store=False)
    assert status == 200
    assert fake_pool.sent[0].request.cache_key is None  # the worker's block-hash prefix cache applies
    assert fake_pool.sent[0].request.held_len == 0
    assert (await box.get(f"/v1/responses/{body['id']}", headers=AUTH)).status == 404
    status, error = await create(box, input="more", previous_response_id=body["id"])
    assert status == 400
    assert error["error"] == {
        "type": "invalid_request_error",
        "code": "previous_response_not_found",
        "message": f"Previous response with id '{body['id']}' not found.",
        "param": "previous_response_id",
    }


async def test_request_errors_use_the_envelope(box: TestClient[Any, Any]) -> None:
    resp = await box.post("/v1/responses", data=b"{not json", headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_json"
    status, body = await create(box, input="x", background=True)
    assert status == 400
    assert body["error"]["code"] == "unsupported_parameter"
    status, body = await create(
        box, input=[{"type": "function_call_output", "call_id": "nope", "output": "x"}]
    )
    assert status == 400
    assert body["error"] == {
        "type": "invalid_request_error",
        "code": "unknown_call_id",
        "message": "No tool call found for function call output with call_id nope.",
        "param": "input",
    }
    status, body = await create(box)
    assert status == 400
    assert body["error"]["param"] == "input"


async def test_an_oversized_body_is_413(make_box: BoxFactory) -> None:
    box = await make_box(max_body_bytes=2048)
    resp = await box.post("/v1/responses", json={"model": "m", "input": "x" * 4096}, headers=AUTH)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"
    chunked = await box.post("/v1/responses", data=_chunks(b"x" * 8192), headers=AUTH)
    assert chunked.status == 413


async def _chunks(data: bytes) -> Any:
    for i in range(0, len(data), 1024):
        yield data[i : i + 1024]


async def test_a_worker_failure_is_500_or_response_failed(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    fake_pool.fail_mid_stream = 1
    status, body = await create(box, input="x")
    assert status == 500
    assert body["error"]["code"] == "server_error"
    assert body["error"]["type"] == "server_error"
    fake_pool.fail_mid_stream = 1
    resp = await box.post("/v1/responses", json={"model": "m", "input": "x", "stream": True}, headers=AUTH)
    events, _, last = parse_sse(await resp.text())
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"
    assert last == "data: [DONE]"


async def test_compaction(box: TestClient[Any, Any]) -> None:
    items = [
        {"role": "user", "content": "task"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "big" * 100},
        {"role": "assistant", "content": "done"},
    ]
    resp = await box.post("/v1/responses/compact", json={"model": "m", "input": items}, headers=AUTH)
    body = await resp.json()
    assert body["object"] == "response.compaction"
    assert [i["type"] for i in body["output"]] == ["compaction"]  # the kept messages, sealed
    assert body["usage"]["input_tokens"] > body["usage"]["output_tokens"] > 0
    missing = await box.post("/v1/responses/compact", json={"input": items}, headers=AUTH)
    assert missing.status == 400


async def test_models_probes_and_the_websocket_path_without_upgrade(box: TestClient[Any, Any]) -> None:
    models = await (await box.get("/v1/models", headers=AUTH)).json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == "tether-sim"
    assert (await box.get("/livez")).status == 200
    assert (await box.get("/readyz")).status == 200
    plain = await box.get("/v1/responses", headers=AUTH)
    assert plain.status == 426


async def test_a_body_that_never_arrives_is_408(make_box: BoxFactory) -> None:
    box = await make_box(body_timeout_seconds=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", box.port)
    head = (
        "POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f'Authorization: {AUTH["Authorization"]}\r\nContent-Length: 100\r\n\r\n{{"model"'
    )
    writer.write(head.encode())
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 10)
    assert status.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_an_sse_client_that_leaves_mid_stream_cancels_nothing_else(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool, registry: Any
) -> None:
    fake_pool.gate = asyncio.Event()
    resp = await box.post("/v1/responses", json={"model": "m", "input": "x", "stream": True}, headers=AUTH)
    assert (await resp.content.readline()).startswith(b"event: response.created")
    resp.close()  # the client goes away
    fake_pool.gate.set()
    status, body = await create(box, input="next")
    assert status == 200
    assert body["status"] == "completed"
