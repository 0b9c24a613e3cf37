"""The official openai SDK (sync and async) against the box and a real in-process worker."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from conftest import KEY

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file from the repository",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        "strict": False,
    }
]
AGENT = {"tether.tool_calls": "2", "tether.answer_tokens": "12"}


@pytest.fixture
async def base_url(real_box: Any) -> str:
    client, _, _ = await real_box()
    return str(client.make_url("/v1"))


async def test_async_http_create_stream_and_previous_response_id(base_url: str) -> None:
    client = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)
    first = await client.responses.create(
        model="tether-sim", input="Find fizz_buzz()", tools=TOOLS, metadata=AGENT
    )
    assert first.status == "completed"
    call = first.output[0]
    assert call.type == "function_call"
    second = await client.responses.create(
        model="tether-sim",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "def fizz_buzz(): ..."}],
        tools=TOOLS,
        metadata=AGENT,
    )
    assert second.previous_response_id == first.id
    assert second.usage is not None
    assert second.usage.input_tokens_details.cached_tokens > 0
    stream = await client.responses.create(model="tether-sim", input="Say hi", stream=True, store=False)
    kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    got = await client.responses.retrieve(first.id)
    assert got.id == first.id
    items = await client.responses.input_items.list(first.id)
    assert items.data[0].type == "message"
    await client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as bad:
        await client.responses.create(model="tether-sim", input="x", previous_response_id="resp_unknown")
    assert bad.value.code == "previous_response_not_found"
    await client.close()


async def test_async_stream_helper_gets_the_final_response(base_url: str) -> None:
    client = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)
    async with client.responses.stream(model="tether-sim", input="Hello", store=False) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text
    await client.close()


async def test_async_websocket_agent_loop(base_url: str) -> None:
    client = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)
    async with client.responses.connect() as conn:
        previous: str | None = None
        next_input: Any = [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Go"}]}
        ]
        turns = 0
        while True:
            await conn.response.create(
                model="tether-sim",
                input=next_input,
                tools=TOOLS,
                store=False,
                previous_response_id=previous,
                metadata=AGENT,
            )
            async for event in conn:
                if event.type in ("response.completed", "response.failed", "error"):
                    break
            assert event.type == "response.completed"
            turns += 1
            previous = event.response.id
            calls = [item for item in event.response.output if item.type == "function_call"]
            if not calls:
                break
            next_input = [
                {"type": "function_call_output", "call_id": c.call_id, "output": "ok"} for c in calls
            ]
        assert turns == 3  # two tool calls, then the answer
        await conn.response.create(
            model="tether-sim", input="x", previous_response_id="resp_gone", store=False
        )
        error = await conn.recv()
        assert error.type == "error"
        assert error.status == 400
        assert error.error.code == "previous_response_not_found"
    await client.close()


async def test_async_websocket_warm_up_with_generate_false(base_url: str) -> None:
    client = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)
    async with client.responses.connect() as conn:
        await conn.response.create(model="tether-sim", input="Context", store=False, generate=False)
        kinds = []
        async for event in conn:
            kinds.append(event.type)
            if event.type == "response.completed":
                break
        assert kinds == ["response.created", "response.completed"]
        await conn.response.create(
            model="tether-sim", input="Now", store=False, previous_response_id=event.response.id
        )
        async for event in conn:
            if event.type in ("response.completed", "error"):
                break
        assert event.type == "response.completed"
    await client.close()


def _sync_session(base_url: str) -> list[str]:
    client = openai.OpenAI(api_key=KEY, base_url=base_url, max_retries=0)
    seen = []
    first = client.responses.create(model="tether-sim", input="Hi", store=True)
    seen.append(first.status)
    second = client.responses.create(model="tether-sim", input="More", previous_response_id=first.id)
    seen.append(second.status)
    with client.responses.create(model="tether-sim", input="Stream", stream=True, store=False) as stream:
        seen.append([event.type for event in stream][-1])
    with client.responses.connect() as conn:
        conn.response.create(model="tether-sim", input="WS hello", store=False)
        for event in conn:
            if event.type in ("response.completed", "error"):
                seen.append(event.type)
                break
        conn.response.create(
            model="tether-sim", input="again", store=False, previous_response_id=event.response.id
        )
        for event in conn:
            if event.type in ("response.completed", "error"):
                seen.append(event.type)
                break
    client.close()
    return seen


async def test_sync_client_http_stream_and_websocket(base_url: str) -> None:
    seen = await asyncio.to_thread(_sync_session, base_url)
    assert seen == [
        "completed",
        "completed",
        "response.completed",
        "response.completed",
        "response.completed",
    ]
