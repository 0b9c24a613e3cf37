"""The official openai SDK (async client) against a real local cluster, through the router."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tether.config import DEV_API_KEY
from tether.supervisor import LocalCluster

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "grep",
        "description": "Search the code.",
        "parameters": {"type": "object", "properties": {"pattern": {"type": "string"}}},
    }
]


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=cluster.base_url, api_key=DEV_API_KEY, timeout=30, max_retries=0)


async def _model(client: AsyncOpenAI) -> str:
    return (await client.models.list()).data[0].id


async def test_models_and_a_wrong_key(client: AsyncOpenAI, cluster: LocalCluster) -> None:
    assert await _model(client)
    bad = AsyncOpenAI(base_url=cluster.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad.models.list()


async def test_websocket_multi_turn_with_tool_outputs(client: AsyncOpenAI) -> None:
    model = await _model(client)
    metadata = {"tether.tool_calls": "3"}
    calls = 0
    headers = {"X-Session-Id": f"test-{uuid.uuid4().hex}"}
    async with client.responses.connect(extra_headers=headers) as conn:
        await conn.response.create(model=model, input="Find it.", tools=TOOLS, store=False, metadata=metadata)
        response = await _completed(conn)
        while response.output[-1].type == "function_call":
            calls += 1
            assert calls <= 3
            output = {"type": "function_call_output", "call_id": response.output[-1].call_id, "output": "x"}
            await conn.response.create(
                model=model,
                previous_response_id=response.id,
                input=[output],
                tools=TOOLS,
                store=False,
                metadata=metadata,
            )
            following = await _completed(conn)
            assert following.previous_response_id == response.id
            response = following
    assert calls == 3
    assert response.output_text


async def test_http_create_with_and_without_streaming(client: AsyncOpenAI) -> None:
    model = await _model(client)
    response = await client.responses.create(model=model, input="Hello?", store=False)
    assert response.status == "completed"
    assert response.output_text
    stream = await client.responses.create(model=model, input="Hello?", stream=True, store=False)
    types = [event.type async for event in stream]
    assert (types[0], types[-1]) == ("response.created", "response.completed")


async def _completed(conn: Any) -> Any:
    async for event in conn:
        if event.type == "response.completed":
            return event.response
        assert event.type not in ("error", "response.failed", "response.incomplete"), event
    raise AssertionError("the connection closed before response.completed")


async def test_two_agents_on_stream_id_lanes_of_one_websocket(client: AsyncOpenAI) -> None:
    """A planner and a coder share one pinned socket through the router (the SDK's lane helper), each
    running its own tool loop; every continuation is served from its own lane's chain."""
    from openai.lib.responses_websocket import AsyncResponsesWebSocketSession, ResponsesWebSocketLimits

    model = await _model(client)
    metadata = {"tether.tool_calls": "2"}
    limits = ResponsesWebSocketLimits(
        max_lanes=4, max_events_per_lane=4096, max_events=8192, max_bytes_per_lane=1 << 24, max_bytes=1 << 25
    )
    connect = client.responses.connect(extra_headers={"X-Session-Id": f"test-{uuid.uuid4().hex}"})
    async with connect as conn, AsyncResponsesWebSocketSession(conn, limits=limits) as session:

        async def agent(name: str) -> list[Any]:
            lane = session.lane(name)
            turns: list[Any] = []
            body: dict[str, Any] = {"input": f"{name}: find it."}
            while True:
                event = {"type": "response.create", "model": model, "tools": TOOLS, "store": False}
                await lane.send({**event, "metadata": metadata, **body})  # type: ignore[typeddict-item]
                turns.append(await asyncio.wait_for(lane.get_final_response(), 30))
                last = turns[-1].output[-1]
                if last.type != "function_call":
                    return turns
                output = {"type": "function_call_output", "call_id": last.call_id, "output": f"{name} result"}
                body = {"input": [output], "previous_response_id": turns[-1].id}

        planner, coder = await asyncio.gather(agent("planner"), agent("coder"))
    for turns in (planner, coder):
        assert [t.status for t in turns] == ["completed"] * 3  # two tool calls, then the answer
        assert turns[-1].output_text
        for previous, turn in itertools.pairwise(turns):
            assert turn.previous_response_id == previous.id
            assert turn.usage is not None
            assert turn.usage.input_tokens_details.cached_tokens > 0
    assert {t.id for t in planner}.isdisjoint(t.id for t in coder)
