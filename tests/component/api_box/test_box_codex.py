"""What the Codex CLI sends and expects, in-process with a fake worker pool: namespace, custom and hosted
tools, its upgrade headers, and a 426 at the upgrade when the box cannot take a WebSocket."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from box_fakes import FakeWorkerPool, Reply, ws_turn
from conftest import AUTH, BoxFactory
from prometheus_client import CollectorRegistry

from api_box.io.state import STATE
from gpu_worker.client import GenerationRequest

SCHEMA = {"type": "object", "properties": {"message": {"type": "string"}}}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "exec_command",
        "description": "Run.",
        "strict": False,
        "parameters": SCHEMA,
    },
    {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Sub-agents.",
        "tools": [
            {"type": "function", "name": "spawn_agent", "parameters": SCHEMA},
            {"type": "function", "name": "wait_agent", "parameters": SCHEMA},
        ],
    },
    {
        "type": "custom",
        "name": "apply_patch",
        "format": {"type": "grammar", "syntax": "lark", "definition": "s"},
    },
    {"type": "web_search", "external_web_access": False},
]
# The upgrade headers of Codex 0.171 (session ids shortened).
CODEX_HEADERS = {
    **AUTH,
    "openai-beta": "responses_websockets=2026-02-06",
    "session-id": "0198-session",
    "thread-id": "0198-session",
    "originator": "codex_exec",
}
CODEX_FIELDS: dict[str, Any] = {
    "tools": TOOLS,
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "reasoning": {"summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "0198-session",
    "client_metadata": {"thread_id": "0198-session"},
}


def call_script(req: GenerationRequest) -> Reply:
    """Call the tool named by metadata `call` once after each user message, else answer."""
    name = req.metadata.get("call")
    if name and req.agent.tool_calls_since_user_message == 0:
        return Reply(text=None, calls=[(f"call_{req.request_id[-6:]}", name, '{"message": "go"}')])
    return Reply()


@pytest.fixture
def fake_pool() -> FakeWorkerPool:
    return FakeWorkerPool(call_script)


def developer(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": text}]}


async def test_a_codex_session_calls_a_namespaced_function_and_continues_with_deltas(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    async with box.ws_connect("/v1/responses", headers=CODEX_HEADERS) as ws:
        warm = (await ws_turn(ws, {"input": [developer("rules")], "generate": False, **CODEX_FIELDS}))[-1]
        assert warm["type"] == "response.completed"
        user = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Spawn a helper."}],
        }
        turn = {
            **CODEX_FIELDS,
            "input": [user],
            "previous_response_id": warm["response"]["id"],
            "metadata": {"call": "multi_agent_v1.spawn_agent"},
        }
        events = await ws_turn(ws, turn)
        first = events[-1]["response"]
        assert events[-1]["type"] == "response.completed"
        (call,) = first["output"]
        assert (call["type"], call["name"], call["namespace"]) == (
            "function_call",
            "spawn_agent",
            "multi_agent_v1",
        )
        assert {e["type"] for e in events if "function_call" in e["type"]} == {
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
        }
        assert [t["type"] for t in first["tools"]] == ["function", "namespace", "custom", "web_search"]
        assert [w["code"] for w in first["warnings"]] == ["tool_omitted"]
        assert first["reasoning"] == {"effort": None, "summary": "auto"}
        # Codex sends the call back as it came (with its namespace) only when it replays history; on a
        # continuation it sends the output alone.
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": "spawned"}
        last = (await ws_turn(ws, {**CODEX_FIELDS, "input": [output], "previous_response_id": first["id"]}))[
            -1
        ]
    assert last["type"] == "response.completed"
    assert last["response"]["output"][0]["type"] == "message"
    seen = fake_pool.sent[1].request
    assert [t.name for t in seen.tools] == [
        "exec_command",
        "multi_agent_v1.spawn_agent",
        "multi_agent_v1.wait_agent",
        "apply_patch",
    ]
    assert not fake_pool.sent[1].resent
    assert not fake_pool.sent[2].resent
    assert fake_pool.sent[2].request.cache_key == fake_pool.sent[0].request.cache_key  # one chain, deltas


async def test_a_custom_tool_call_round_trips_over_http_with_the_whole_history(
    box: TestClient[Any, Any],
) -> None:
    body = {
        "model": "m",
        "input": "Patch it.",
        "tools": TOOLS,
        "store": False,
        "metadata": {"call": "apply_patch"},
    }
    first = await (await box.post("/v1/responses", json=body, headers=AUTH)).json()
    (call,) = first["output"]
    assert call == {
        "id": call["id"],
        "type": "custom_tool_call",
        "call_id": call["call_id"],
        "name": "apply_patch",
        "input": '{"message": "go"}',
    }
    assert call["id"].startswith("ctc_")
    history = [
        {"role": "user", "content": "Patch it."},
        call,
        {"type": "custom_tool_call_output", "call_id": call["call_id"], "output": "Done!"},
    ]
    response = await box.post("/v1/responses", json={**body, "input": history}, headers=AUTH)
    assert response.status == 200, await response.text()
    assert (await response.json())["output"][0]["type"] == "message"


async def test_under_the_reject_policy_a_hosted_tool_is_an_error_event_and_the_socket_stays_open(
    make_box: BoxFactory,
) -> None:
    box = await make_box(hosted_tools="reject")
    async with box.ws_connect("/v1/responses", headers=CODEX_HEADERS) as ws:
        (error,) = await ws_turn(ws, {"input": "hi", **CODEX_FIELDS})
        assert (error["status"], error["error"]["code"], error["error"]["param"]) == (
            400,
            "unsupported_parameter",
            "tools[3].type",
        )
        assert (await ws_turn(ws, {"input": "hi", "tools": TOOLS[:3]}))[-1]["type"] == "response.completed"


async def test_a_draining_box_answers_the_upgrade_426_and_still_serves_http(
    box: TestClient[Any, Any],
) -> None:
    box.server.app[STATE].draining = True
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await box.ws_connect("/v1/responses", headers=CODEX_HEADERS)
    assert caught.value.status == 426
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    key = {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    plain = await box.get("/v1/responses", headers={**CODEX_HEADERS, **upgrade, **key})
    assert plain.status == 426
    assert (await plain.json())["error"]["code"] == "websocket_unavailable"
    response = await box.post(
        "/v1/responses", json={"model": "m", "input": "hi", "store": False}, headers=AUTH
    )
    assert response.status == 200


async def test_past_the_connection_limit_the_upgrade_is_426_until_a_socket_closes(
    make_box: BoxFactory, registry: CollectorRegistry
) -> None:
    box = await make_box(ws_max_connections=1)
    async with box.ws_connect("/v1/responses", headers=CODEX_HEADERS) as ws:
        assert (await ws_turn(ws, {"input": "hi", "store": False}))[-1]["type"] == "response.completed"
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await box.ws_connect("/v1/responses", headers=CODEX_HEADERS)
        assert caught.value.status == 426
    labels = {"code": "websocket_unavailable"}
    assert registry.get_sample_value("tether_box_errors_total", labels) == 1
    async with box.ws_connect("/v1/responses", headers=CODEX_HEADERS) as ws:
        assert (await ws_turn(ws, {"input": "hi", "store": False}))[-1]["type"] == "response.completed"


async def test_a_stateless_request_is_routed_by_its_prompt_cache_key(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    for key in ("session-a", None):
        body = {"model": "m", "input": "hi", "store": False, "prompt_cache_key": key}
        assert (await box.post("/v1/responses", json=body, headers=AUTH)).status == 200
    keyed, plain = (sent.request for sent in fake_pool.sent)
    assert (keyed.cache_key, keyed.routing_key) == (None, "session-a")
    assert (plain.cache_key, plain.routing_key) == (None, None)  # the pool hashes the chain's first block


async def test_a_request_without_temperature_is_sampled_at_the_box_default(
    make_box: BoxFactory, fake_pool: FakeWorkerPool
) -> None:
    # Codex never sends a temperature; TETHER_BOX_DEFAULT_TEMPERATURE=0 makes a small model answer greedily.
    box = await make_box(default_temperature=0.0)
    async with box.ws_connect("/v1/responses", headers=CODEX_HEADERS) as ws:
        plain = (await ws_turn(ws, {"input": "hi", **CODEX_FIELDS}))[-1]["response"]
        sent = (await ws_turn(ws, {"input": "hi", **CODEX_FIELDS, "temperature": 0.7}))[-1]["response"]
    assert (plain["temperature"], sent["temperature"]) == (0.0, 0.7)
    assert [s.request.temperature for s in fake_pool.sent] == [0.0, 0.7]
    http = await (await box.post("/v1/responses", json={"model": "m", "input": "hi"}, headers=AUTH)).json()
    assert http["temperature"] == 0.0
    assert fake_pool.sent[-1].request.temperature == 0.0
