"""Parsing and validation of create bodies and response.create events."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from api_box.core import errors
from api_box.core.protocol import (
    CreateRequest,
    FunctionCallItem,
    FunctionCallOutputItem,
    Limits,
    MessageItem,
    item_json,
    parse_create,
)

LIMITS = Limits()


def ws(**fields: Any) -> bytes:
    return orjson.dumps({"type": "response.create", "model": "m", **fields})


def http(**fields: Any) -> bytes:
    return orjson.dumps({"model": "m", **fields})


def test_string_input_is_one_user_message() -> None:
    create = parse_create(ws(input="hello"), LIMITS, websocket=True)
    assert create.input == (MessageItem("user", "hello"),)
    assert create.store is True
    assert create.generate is True
    assert create.previous_response_id is None


def test_item_list_with_every_supported_item_type() -> None:
    items = [
        {"type": "message", "role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "c", "annotations": []}],
        },
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}", "id": "fc_1"},
        {"type": "function_call_output", "call_id": "call_1", "output": "done"},
        {
            "type": "function_call_output",
            "call_id": "call_1",
            "output": [{"type": "input_text", "text": "x"}],
        },
    ]
    create = parse_create(ws(input=items), LIMITS, websocket=True)
    assert create.input == (
        MessageItem("system", "be brief"),
        MessageItem("user", "ab"),
        MessageItem("assistant", "c"),
        FunctionCallItem("call_1", "f", "{}", "fc_1"),
        FunctionCallOutputItem("call_1", "done"),
        FunctionCallOutputItem("call_1", "x"),
    )


def test_all_echoed_fields_are_kept() -> None:
    body = ws(
        input="x",
        instructions="be nice",
        tools=[{"type": "function", "name": "get", "description": "d", "parameters": {"type": "object"}}],
        tool_choice={"type": "function", "name": "get"},
        store=False,
        previous_response_id="resp_1",
        metadata={"k": "v"},
        max_output_tokens=64,
        generate=False,
        temperature=0.5,
        top_p=0.9,
        parallel_tool_calls=False,
        prompt_cache_key="pk",
        user="u",
        safety_identifier="s",
        truncation="auto",
        reasoning={"effort": "low"},
        include=[],
    )
    create = parse_create(body, LIMITS, websocket=True)
    assert create.instructions == "be nice"
    assert create.tools[0].name == "get"
    assert create.tools[0].parameters == {"type": "object"}
    assert create.tool_choice == "get"
    assert create.tool_choice_json() == {"type": "function", "name": "get"}
    assert (create.store, create.previous_response_id, create.generate) == (False, "resp_1", False)
    assert create.metadata == {"k": "v"}
    assert create.max_output_tokens == 64
    assert (create.temperature, create.top_p, create.parallel_tool_calls) == (0.5, 0.9, False)
    assert (create.prompt_cache_key, create.user, create.safety_identifier) == ("pk", "u", "s")
    assert create.truncation == "auto"


def test_stream_is_accepted_and_ignored_on_websocket() -> None:
    create = parse_create(
        ws(input="x", stream=True, stream_options={"include_obfuscation": False}), LIMITS, websocket=True
    )
    assert isinstance(create, CreateRequest)


def test_http_body_needs_no_type() -> None:
    assert parse_create(http(input="x", stream=True), LIMITS, websocket=False).stream is True


def test_null_previous_response_id_starts_a_new_chain() -> None:
    assert (
        parse_create(ws(input="x", previous_response_id=None), LIMITS, websocket=True).previous_response_id
        is None
    )


@pytest.mark.parametrize(
    ("body", "error", "param"),
    [
        (ws(input="x", background=True), errors.UnsupportedParameter, "background"),
        (http(input="x", background=True), errors.UnsupportedParameter, "background"),
        (orjson.dumps({"type": "response.create", "input": "x"}), errors.MissingParameter, "model"),
        (b'{"input": "x", "model": "m"}', errors.MissingParameter, "type"),
        (ws(type="response.cancel"), errors.UnknownEventType, "type"),
        (ws(type="response.steer"), errors.UnknownEventType, "type"),
        (ws(model=3), errors.InvalidType, "model"),
        (ws(input=3), errors.InvalidType, "input"),
        (ws(input=[3]), errors.InvalidType, "input[0]"),
        (ws(input=[{"type": "web_search_call", "id": "ws_1"}]), errors.UnsupportedParameter, "input[0].type"),
        (ws(input=[{"content": "no type"}]), errors.MissingParameter, "input[0].type"),
        (ws(input=[{"role": "robot", "content": "x"}]), errors.InvalidValue, "input[0].role"),
        (ws(input=[{"role": "user"}]), errors.MissingParameter, "input[0].content"),
        (
            ws(input=[{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]),
            errors.UnsupportedParameter,
            "input[0].content[0].type",
        ),
        (
            ws(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]),
            errors.InvalidValue,
            "input[0].content[0].image_url",
        ),
        (
            ws(input=[{"role": "user", "content": [{"type": "input_image", "detail": "low"}]}]),
            errors.MissingParameter,
            "input[0].content[0].image_url",
        ),
        (
            ws(input=[{"type": "compaction"}]),
            errors.MissingParameter,
            "input[0].encrypted_content",
        ),
        (
            ws(input=[{"type": "function_call", "name": "f", "arguments": "{}"}]),
            errors.MissingParameter,
            "input[0].call_id",
        ),
        (
            ws(input=[{"type": "function_call_output", "call_id": "c"}]),
            errors.MissingParameter,
            "input[0].output",
        ),
        (ws(tools={}), errors.InvalidType, "tools"),
        (ws(tools=[{"name": "f"}]), errors.MissingParameter, "tools[0].type"),
        (ws(tools=[{"type": 7}]), errors.InvalidValue, "tools[0].type"),
        (ws(tools=[{"type": "namespace", "name": "ns"}]), errors.MissingParameter, "tools[0].tools"),
        (
            ws(tools=[{"type": "namespace", "name": "ns", "tools": [{"type": "web_search"}]}]),
            errors.InvalidValue,
            "tools[0].tools[0].type",
        ),
        (
            ws(
                tools=[
                    {"type": "namespace", "name": "n" * 40, "tools": [{"type": "function", "name": "f" * 30}]}
                ]
            ),
            errors.InvalidValue,
            "tools[0].tools[0].name",
        ),
        (
            ws(tools=[{"type": "custom", "name": "c", "format": {"type": "json"}}]),
            errors.InvalidValue,
            "tools[0].format.type",
        ),
        (
            ws(
                tools=[
                    {
                        "type": "custom",
                        "name": "c",
                        "format": {"type": "grammar", "syntax": "ebnf", "definition": "x"},
                    }
                ]
            ),
            errors.InvalidValue,
            "tools[0].format.syntax",
        ),
        (
            ws(tools=[{"type": "custom", "name": "c", "format": {"type": "grammar", "syntax": "lark"}}]),
            errors.MissingParameter,
            "tools[0].format.definition",
        ),
        (
            ws(
                tools=[
                    {"type": "namespace", "name": "m", "tools": [{"type": "function", "name": "a"}]},
                    {"type": "namespace", "name": "n", "tools": [{"type": "function", "name": "a"}]},
                ],
                tool_choice={"type": "function", "name": "a"},
            ),
            errors.InvalidValue,
            "tool_choice.name",
        ),
        (
            ws(tools=[{"type": "function", "name": "a"}], tool_choice={"type": "custom", "name": "a"}),
            errors.InvalidValue,
            "tool_choice.name",
        ),
        (
            ws(tool_choice={"type": "allowed_tools", "mode": "sometimes", "tools": []}),
            errors.InvalidValue,
            "tool_choice.mode",
        ),
        (ws(text={"format": {"type": "xml"}}), errors.InvalidValue, "text.format.type"),
        (
            ws(text={"format": {"type": "json_schema", "schema": {}}}),
            errors.MissingParameter,
            "text.format.name",
        ),
        (ws(text={"format": {"type": "json_schema", "name": "n"}}), errors.InvalidType, "text.format.schema"),
        (ws(text="plain"), errors.InvalidType, "text"),
        (ws(reasoning="high"), errors.InvalidType, "reasoning"),
        (ws(include="reasoning.encrypted_content"), errors.InvalidType, "include"),
        (ws(client_metadata=[]), errors.InvalidType, "client_metadata"),
        (ws(prompt={"id": "pmpt_1"}), errors.UnsupportedParameter, "prompt"),
        (ws(prompt_cache_options={"ttl": "1h"}), errors.InvalidValue, "prompt_cache_options.ttl"),
        (ws(prompt_cache_options={"mode": "always"}), errors.InvalidValue, "prompt_cache_options.mode"),
        (ws(top_logprobs=21), errors.InvalidValue, "top_logprobs"),
        (ws(max_tool_calls="3"), errors.InvalidType, "max_tool_calls"),
        (ws(tools=[{"type": "function", "name": "bad name"}]), errors.InvalidValue, "tools[0].name"),
        (ws(tools=[{"type": "function"}]), errors.MissingParameter, "tools[0].name"),
        (
            ws(tools=[{"type": "function", "name": "a"}, {"type": "function", "name": "a"}]),
            errors.InvalidValue,
            "tools",
        ),
        (ws(tool_choice="sometimes"), errors.InvalidValue, "tool_choice"),
        (ws(tool_choice="required"), errors.InvalidValue, "tool_choice"),
        (ws(tool_choice={"type": "function", "name": "missing"}), errors.InvalidValue, "tool_choice.name"),
        (ws(store="yes"), errors.InvalidType, "store"),
        (ws(generate=1), errors.InvalidType, "generate"),
        (ws(max_output_tokens=0), errors.InvalidValue, "max_output_tokens"),
        (ws(max_output_tokens=True), errors.InvalidType, "max_output_tokens"),
        (ws(temperature=3), errors.InvalidValue, "temperature"),
        (ws(metadata=[]), errors.InvalidType, "metadata"),
        (ws(metadata={str(i): "v" for i in range(17)}), errors.InvalidValue, "metadata"),
        (ws(metadata={"k": 1}), errors.InvalidType, "metadata.k"),
        (ws(conversation="conv_1"), errors.UnsupportedParameter, "conversation"),
        (ws(truncation="sometimes"), errors.InvalidValue, "truncation"),
    ],
)
def test_bad_fields_are_rejected_with_their_code_and_param(
    body: bytes, error: type[errors.RequestError], param: str
) -> None:
    websocket = not body.startswith(b'{"model"')  # http() bodies start with the model
    with pytest.raises(error) as caught:
        parse_create(body, LIMITS, websocket=websocket)
    assert caught.value.param == param
    assert caught.value.status in (400, 429)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", errors.InvalidJson),
        (b"{", errors.InvalidJson),
        (b"[]", errors.InvalidJson),
        (b'"a string"', errors.InvalidJson),
        (b"\xff\xfe", errors.InvalidJson),
        (b'{"model": "\xff"}', errors.InvalidJson),
        (b"[" * 2000 + b"]" * 2000, errors.JsonTooDeep),
        (b'{"a":' * 40 + b"1" + b"}" * 40, errors.JsonTooDeep),
        (b"NaN", errors.InvalidJson),
    ],
)
def test_malformed_or_too_deep_json(raw: bytes, error: type[errors.RequestError]) -> None:
    with pytest.raises(error):
        parse_create(raw, LIMITS, websocket=True)


def test_depth_limit_counts_every_container() -> None:
    limits = Limits(max_json_depth=4)
    parse_create(ws(input="x", metadata={"a": "b"}), limits, websocket=True)  # depth 2
    with pytest.raises(errors.JsonTooDeep):
        parse_create(ws(input="x", tools=[{"type": "function", "name": "f", "parameters": {"a": {"b": 1}}}]),
                     limits, websocket=True)  # fmt: skip


def test_item_and_tool_counts_are_bounded() -> None:
    limits = Limits(max_items=3, max_tools=1)
    parse_create(ws(input=[{"role": "user", "content": "x"}] * 3), limits, websocket=True)
    with pytest.raises(errors.TooManyItems):
        parse_create(ws(input=[{"role": "user", "content": "x"}] * 4), limits, websocket=True)
    with pytest.raises(errors.TooManyTools):
        parse_create(ws(tools=[{"type": "function", "name": "a"}, {"type": "function", "name": "b"}]), limits,
                     websocket=True)  # fmt: skip


def test_text_length_is_bounded() -> None:
    limits = Limits(max_text_chars=10)
    with pytest.raises(errors.StringTooLong):
        parse_create(ws(input="x" * 11), limits, websocket=True)
    parts = [{"type": "input_text", "text": "x" * 6}] * 2
    with pytest.raises(errors.StringTooLong):
        parse_create(ws(input=[{"role": "user", "content": parts}]), limits, websocket=True)


def test_a_rejected_continuation_carries_its_previous_response_id() -> None:
    with pytest.raises(errors.RequestError) as caught:
        parse_create(ws(previous_response_id="resp_9", input=3), LIMITS, websocket=True)
    assert caught.value.previous_response_id == "resp_9"


def test_item_json_shapes() -> None:
    assert item_json(MessageItem("user", "hi"), "msg_1") == {
        "id": "msg_1",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "hi"}],
    }
    assert item_json(MessageItem("assistant", "yo"), "msg_2")["content"][0]["type"] == "output_text"
    assert item_json(FunctionCallItem("c", "f", "{}"), "fc_1")["type"] == "function_call"
    assert item_json(FunctionCallOutputItem("c", "out"), "fco_1")["output"] == "out"


def test_error_codes_are_strings_and_documented() -> None:
    codes = errors.all_codes()
    assert "previous_response_not_found" in codes
    assert "websocket_connection_limit_reached" in codes
    assert all(isinstance(code, str) and code for code in codes)
    doc = errors.__doc__ or ""
    assert all(code in doc for code in codes), [c for c in codes if c not in doc]


@pytest.mark.parametrize("lane", ["a", "agent-7.sub_task", "x" * 256, "0"])
def test_a_valid_stream_id_names_the_lane(lane: str) -> None:
    assert parse_create(ws(input="x", stream_id=lane), LIMITS, websocket=True).stream_id == lane
    assert parse_create(ws(input="x", stream_id=None), LIMITS, websocket=True).stream_id is None


@pytest.mark.parametrize("lane", ["", "x" * 257, "has space", "slash/", "ünï", 7, ["a"], "a\n"])
def test_a_malformed_stream_id_is_invalid_stream_id_on_the_default_lane(lane: object) -> None:
    with pytest.raises(errors.InvalidStreamId) as caught:
        parse_create(ws(input="x", stream_id=lane), LIMITS, websocket=True)
    assert caught.value.code == "invalid_stream_id"
    assert caught.value.param == "stream_id"
    assert caught.value.status == 400
    assert caught.value.stream_id is None


def test_a_rejected_create_remembers_its_valid_lane() -> None:
    with pytest.raises(errors.MissingParameter) as caught:
        parse_create(orjson.dumps({"type": "response.create", "stream_id": "lane-1"}), LIMITS, websocket=True)
    assert caught.value.stream_id == "lane-1"


def test_stream_id_is_refused_over_http() -> None:
    with pytest.raises(errors.UnsupportedParameter) as caught:
        parse_create(http(input="x", stream_id="a"), LIMITS, websocket=False)
    assert caught.value.param == "stream_id"
    assert caught.value.stream_id is None
