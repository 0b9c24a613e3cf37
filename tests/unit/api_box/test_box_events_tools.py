"""Events of calls to namespaced and custom tools, and the echo of what a request asked for.

Every event is validated against the openai SDK's own models (pydantic, strict about types and
discriminators), the shapes Codex and the SDK's stream helpers parse.
"""

from __future__ import annotations

import itertools
import typing
from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel

from api_box.core.events import ResponseEvents, Usage, response_template
from api_box.core.protocol import CreateRequest, Limits, parse_create

# The SDK's event model for each event type (its union is discriminated by "type").
EVENT_MODELS: dict[str, type[BaseModel]] = {
    typing.get_args(model.model_fields["type"].annotation)[0]: model
    for model in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}
SCHEMA = {"type": "object", "properties": {"message": {"type": "string"}}}
TOOLS = [
    {"type": "function", "name": "exec_command", "parameters": SCHEMA},
    {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Sub-agents.",
        "tools": [{"type": "function", "name": "spawn_agent", "parameters": SCHEMA}],
    },
    {
        "type": "custom",
        "name": "apply_patch",
        "format": {"type": "grammar", "syntax": "lark", "definition": "s"},
    },
    {"type": "web_search", "external_web_access": False},
]


def create(**fields: Any) -> CreateRequest:
    body = {"type": "response.create", "model": "m", "input": "hi", "tools": TOOLS, **fields}
    return parse_create(orjson.dumps(body), Limits(), websocket=True)


def make(request: CreateRequest) -> ResponseEvents:
    counter = itertools.count()
    template = response_template(request, response_id="resp_1", created_at=100)
    return ResponseEvents(template, lambda p: f"{p}_{next(counter)}", request.tools)


def validated(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for event in events:
        if "response" in event:  # usage is test_box_events' (SDK 3.63 wants cache_write_tokens, not sent)
            event = {**event, "response": {**event["response"], "usage": None}}
        EVENT_MODELS[event["type"]].model_validate(event)
    return events


def test_a_namespaced_call_is_a_function_call_with_its_namespace() -> None:
    r = make(create())
    events = validated(
        r.start()
        + r.call_start("call_1", "multi_agent_v1.spawn_agent")
        + r.call_arguments('{"message":')
        + r.call_arguments('"go"}')
        + r.finish(Usage(10, 0, 5), finish_reason="stop", completed_at=101)
    )
    assert [e["type"] for e in events[2:]] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[2]["item"] == {
        "id": "fc_0",
        "type": "function_call",
        "status": "in_progress",
        "call_id": "call_1",
        "name": "spawn_agent",
        "arguments": "",
        "namespace": "multi_agent_v1",
    }
    assert events[5]["name"] == "spawn_agent"
    assert events[5]["arguments"] == '{"message":"go"}'
    final = events[-1]["response"]["output"][0]
    assert (final["name"], final["namespace"], final["status"]) == (
        "spawn_agent",
        "multi_agent_v1",
        "completed",
    )
    assert [c.call_id for c in r.function_calls] == ["call_1"]


def test_a_custom_tool_call_streams_its_input() -> None:
    r = make(create())
    events = validated(
        r.start()
        + r.call_start("call_2", "apply_patch")
        + r.call_arguments("*** Begin")
        + r.call_arguments(" Patch")
        + r.finish(Usage(10, 0, 5), finish_reason="stop", completed_at=101)
    )
    assert [e["type"] for e in events[2:]] == [
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[5]["input"] == "*** Begin Patch"
    assert events[-2]["item"] == {
        "id": "ctc_0",
        "type": "custom_tool_call",
        "call_id": "call_2",
        "name": "apply_patch",
        "input": "*** Begin Patch",
    }
    assert [c.call_id for c in r.function_calls] == ["call_2"]


def test_a_call_of_a_tool_the_request_did_not_offer_is_a_plain_function_call() -> None:
    r = make(create())
    events = validated(r.start() + r.call_start("call_3", "unknown") + r.call_arguments("{}"))
    assert events[2]["item"]["type"] == "function_call"
    assert "namespace" not in events[2]["item"]


def test_the_response_echoes_tools_choice_reasoning_text_and_says_what_was_omitted() -> None:
    request = create(
        tool_choice={"type": "function", "name": "spawn_agent"},
        reasoning={"effort": "low", "summary": "auto"},
        text={"format": {"type": "json_object"}, "verbosity": "low"},
        max_tool_calls=4,
        top_logprobs=2,
    )
    resource = response_template(request, response_id="resp_1", created_at=100)
    Response.model_validate(resource | {"output": []})  # the SDK's own model accepts it
    assert resource["tools"] == request.tools_json()
    assert [t["type"] for t in resource["tools"]] == ["function", "namespace", "custom", "web_search"]
    assert resource["tool_choice"] == {"type": "function", "name": "spawn_agent"}
    assert resource["reasoning"] == {"effort": "low", "summary": "auto"}
    assert resource["text"] == {"format": {"type": "json_object"}, "verbosity": "low"}
    assert (resource["max_tool_calls"], resource["top_logprobs"]) == (4, 2)
    assert resource["warnings"] == [
        {
            "code": "tool_omitted",
            "message": "The web_search tool cannot run on this deployment; it was not offered to the model.",
            "param": "tools[3]",
        }
    ]


@pytest.mark.parametrize("tools", [None, [TOOLS[0]]])
def test_a_response_without_omissions_has_no_warnings_field(tools: list[dict[str, Any]] | None) -> None:
    resource = response_template(create(tools=tools), response_id="resp_1", created_at=100)
    assert "warnings" not in resource
    assert resource["reasoning"] == {"effort": None, "summary": None}
    assert resource["text"] == {"format": {"type": "text"}, "verbosity": "medium"}
