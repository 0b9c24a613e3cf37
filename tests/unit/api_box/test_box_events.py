"""Response events: order, sequence numbers, a complete ResponseResource in every lifecycle event."""

from __future__ import annotations

import itertools
from typing import Any

from openai.types.responses import ResponseUsage

from api_box.core.errors import WorkerFailed
from api_box.core.events import ResponseEvents, Usage, response_template
from api_box.core.protocol import CreateRequest, FunctionTool, MessageItem
from tests.open_responses import RESOURCE_FIELDS

REQUIRED = RESOURCE_FIELDS
LIFECYCLE = {
    "response.created",
    "response.in_progress",
    "response.completed",
    "response.failed",
    "response.incomplete",
}


def make(**fields: Any) -> ResponseEvents:
    create = CreateRequest(model="m", input=(MessageItem("user", "hi"),), **fields)
    counter = itertools.count()
    return ResponseEvents(
        response_template(create, response_id="resp_1", created_at=100), lambda p: f"{p}_{next(counter)}"
    )


def check_stream(events: list[dict[str, Any]]) -> None:
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        if event["type"] in LIFECYCLE:
            assert event["response"].keys() >= REQUIRED


def test_text_answer_sequence() -> None:
    r = make()
    events = (
        r.start()
        + r.text("Hel")
        + r.text("lo")
        + r.finish(Usage(10, 4, 3), finish_reason="stop", completed_at=101)
    )
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    check_stream(events)
    assert events[0]["response"]["usage"] is None
    assert events[0]["response"]["status"] == "in_progress"
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert final["completed_at"] == 101
    assert final["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 6},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 13,
    }
    ResponseUsage.model_validate(final["usage"])  # SDK 3.63 requires cache_write_tokens
    assert final["output"] == [
        {
            "id": "msg_0",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}],
        }
    ]
    assert events[6]["text"] == "Hello"
    assert events[4]["logprobs"] == []


def test_function_call_sequence() -> None:
    r = make(tools=(FunctionTool("get"),))
    events = r.start() + r.call_start("call_9", "get") + r.call_arguments('{"a"') + r.call_arguments(":1}")
    events += r.finish(Usage(5, 0, 6), finish_reason="tool_call", completed_at=101)
    assert [e["type"] for e in events[2:]] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    check_stream(events)
    assert events[2]["item"]["arguments"] == ""
    assert events[2]["item"]["status"] == "in_progress"
    assert events[5]["arguments"] == '{"a":1}'
    assert events[5]["name"] == "get"
    call = events[-1]["response"]["output"][0]
    assert call == {
        "id": "fc_0",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_9",
        "name": "get",
        "arguments": '{"a":1}',
    }
    assert [c.call_id for c in r.function_calls] == ["call_9"]
    assert events[-1]["response"]["tools"][0]["name"] == "get"


def test_text_then_two_calls_get_their_own_output_indexes() -> None:
    r = make()
    events = r.start() + r.text("thinking") + r.call_start("c1", "a") + r.call_arguments("{}")
    events += (
        r.call_start("c2", "b")
        + r.call_arguments("{}")
        + r.finish(Usage(), finish_reason="tool_call", completed_at=1)
    )
    check_stream(events)
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["output_index"] for e in added] == [0, 1, 2]
    assert [o["type"] for o in events[-1]["response"]["output"]] == [
        "message",
        "function_call",
        "function_call",
    ]


def test_max_output_tokens_ends_incomplete() -> None:
    r = make(max_output_tokens=2)
    events = r.start() + r.text("ab") + r.finish(Usage(1, 0, 2), finish_reason="length", completed_at=1)
    check_stream(events)
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["response"]["output"][0]["status"] == "incomplete"


def test_failure_ends_with_response_failed_server_error() -> None:
    r = make()
    events = r.start() + r.text("par") + r.fail(WorkerFailed("worker died"))
    check_stream(events)
    final = events[-1]
    assert final["type"] == "response.failed"
    assert final["response"]["status"] == "failed"
    assert final["response"]["error"] == {"code": "server_error", "message": "worker died"}
    assert final["response"]["output"][0]["status"] == "incomplete"


def test_warm_up_is_created_then_completed_with_no_output_and_zero_usage() -> None:
    r = make(generate=False)
    events = r.start(in_progress=False) + r.warmed(completed_at=5)
    check_stream(events)
    assert [e["type"] for e in events] == ["response.created", "response.completed"]
    assert events[-1]["response"]["output"] == []
    assert events[-1]["response"]["usage"]["total_tokens"] == 0


def test_template_echoes_the_request() -> None:
    create = CreateRequest(
        model="m", input=(), instructions="i", store=False, previous_response_id="resp_0", metadata={"a": "b"}
    )
    t = response_template(create, response_id="resp_1", created_at=7)
    assert (t["instructions"], t["store"], t["previous_response_id"], t["metadata"]) == (
        "i",
        False,
        "resp_0",
        {"a": "b"},
    )
    assert t["temperature"] == 1.0
    assert t["top_p"] == 1.0
    assert t["tool_choice"] == "auto"


def test_template_echoes_the_default_temperature_only_when_the_request_sends_none() -> None:
    create = CreateRequest(model="m", input=())
    assert (
        response_template(create, response_id="r", created_at=0, default_temperature=0.0)["temperature"] == 0
    )
    sent = CreateRequest(model="m", input=(), temperature=0.7)
    echoed = response_template(sent, response_id="r", created_at=0, default_temperature=0.0)
    assert echoed["temperature"] == 0.7
