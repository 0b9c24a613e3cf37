"""The official openai SDK (sync client) against a real local cluster, through the router."""

from __future__ import annotations

import uuid
from typing import Any

import openai
import pytest
from openai import OpenAI
from websockets.exceptions import InvalidStatus

from tether.config import DEV_API_KEY
from tether.supervisor import LocalCluster

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]


@pytest.fixture
def client(cluster: LocalCluster) -> OpenAI:
    return OpenAI(base_url=cluster.base_url, api_key=DEV_API_KEY, timeout=30, max_retries=0)


@pytest.fixture
def model(client: OpenAI) -> str:
    return client.models.list().data[0].id


def session_headers() -> dict[str, str]:
    return {"X-Session-Id": f"test-{uuid.uuid4().hex}"}


def test_models_are_listed_with_the_dev_key(client: OpenAI) -> None:
    models = client.models.list().data
    assert models
    assert all(m.id for m in models)


def test_a_wrong_key_gets_401(cluster: LocalCluster) -> None:
    bad = OpenAI(base_url=cluster.base_url, api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.models.list()
    assert caught.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        bad.responses.create(model="m", input="hi")
    with pytest.raises(InvalidStatus) as refused:  # the upgrade is refused
        bad.responses.connect(max_retries=0).enter()
    assert refused.value.response.status_code == 401


def test_websocket_multi_turn_with_tool_outputs(client: OpenAI, model: str) -> None:
    """Two tool calls then an answer, each turn sending only the new function_call_output."""
    metadata = {"tether.tool_calls": "2"}
    with client.responses.connect(extra_headers=session_headers()) as conn:
        conn.response.create(model=model, input="Read it.", tools=TOOLS, store=False, metadata=metadata)
        previous = _completed(conn)
        seen_calls = 0
        while previous.output[-1].type == "function_call":
            call = previous.output[-1]
            assert call.name == "read_file"
            seen_calls += 1
            conn.response.create(
                model=model,
                previous_response_id=previous.id,
                input=[{"type": "function_call_output", "call_id": call.call_id, "output": "timeout = 30\n"}],
                tools=TOOLS,
                store=False,
                metadata=metadata,
            )
            current = _completed(conn)
            assert current.previous_response_id == previous.id
            previous = current
            assert seen_calls <= 2
    assert seen_calls == 2
    assert previous.output[-1].type == "message"
    assert previous.output_text


def test_websocket_unknown_previous_response_is_an_error_and_the_socket_stays_open(
    client: OpenAI, model: str
) -> None:
    with client.responses.connect(extra_headers=session_headers()) as conn:
        conn.response.create(model=model, input="hi", previous_response_id="resp_unknown", store=False)
        error = next(event for event in conn if event.type == "error")
        assert error.error.code == "previous_response_not_found"
        conn.response.create(model=model, input="hi", store=False)
        assert _completed(conn).status == "completed"


def test_http_create_without_streaming(client: OpenAI, model: str) -> None:
    headers = session_headers()
    response = client.responses.create(model=model, input="Say hello.", store=False, extra_headers=headers)
    assert response.status == "completed"
    assert response.output_text


def test_http_create_streaming(client: OpenAI, model: str) -> None:
    stream = client.responses.create(model=model, input="Say hello.", stream=True, store=False)
    types = [event.type for event in stream]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert "response.output_text.delta" in types


def test_http_previous_response_id_with_store_true(client: OpenAI, model: str) -> None:
    headers = session_headers()  # the router pins both requests to the box that stored the first
    metadata = {"tether.tool_calls": "1"}
    first = client.responses.create(
        model=model, input="Read it.", tools=TOOLS, store=True, metadata=metadata, extra_headers=headers
    )
    call = first.output[-1]
    assert call.type == "function_call"
    second = client.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "ok"}],
        tools=TOOLS,
        store=True,
        metadata=metadata,
        extra_headers=headers,
    )
    assert second.previous_response_id == first.id
    assert second.output[-1].type == "message"
    assert client.responses.retrieve(first.id, extra_headers=headers).id == first.id


def _completed(conn: Any) -> Any:
    for event in conn:
        if event.type == "response.completed":
            return event.response
        assert event.type not in ("error", "response.failed", "response.incomplete"), event
    raise AssertionError("the connection closed before response.completed")
