"""Parse and validate `POST /v1/responses` bodies and WebSocket `response.create` events into frozen types.

Everything a client sends passes through `parse_create` (or `decode_json` + `parse_create_object`). The
invariant, property-tested in tests/unit/api_box/test_box_protocol_properties.py: any input is either
accepted as a `CreateRequest` or rejected with a `RequestError` subclass from api_box/core/errors.py; no
other exception escapes.

Accepted input (see the team's protocol notes, shared/reference/protocol.md §1.2): `input` as a string or
a list of items —
`message` (role user/assistant/system/developer; content a string or input_text/output_text parts),
`function_call`, `function_call_output`; function `tools`; `tool_choice`; `instructions`; `store`;
`previous_response_id`; `metadata`; `max_output_tokens`; `generate` (warm-up when false); `temperature`,
`top_p`, `parallel_tool_calls`, `prompt_cache_key`, `user`, `safety_identifier` (echoed); `stream_id`, the
WebSocket lane (protocol.md §1.2: 1-256 characters of [A-Za-z0-9_.-], rejected over HTTP). `stream` selects
SSE over HTTP and is accepted and ignored over WebSocket; `background: true` is rejected. Other known
Responses fields (reasoning, text, include, truncation, ...) are accepted and ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

import orjson

from api_box.core.errors import (
    InvalidJson,
    InvalidStreamId,
    InvalidType,
    InvalidValue,
    JsonTooDeep,
    MissingParameter,
    RequestError,
    StringTooLong,
    TooManyItems,
    TooManyTools,
    UnknownEventType,
    UnsupportedParameter,
)

CREATE_EVENT: Final = "response.create"
ROLES: Final = frozenset({"user", "assistant", "system", "developer"})
TOOL_CHOICES: Final = frozenset({"auto", "none", "required"})
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STREAM_ID = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_TEXT_PARTS: Final = frozenset({"input_text", "output_text", "text"})


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one request may contain (bytes are bounded by the shells: frame and body size)."""

    max_json_depth: int = 32
    max_items: int = 4096
    max_tools: int = 128
    max_text_chars: int = 4_000_000
    max_id_chars: int = 256
    max_metadata_keys: int = 16
    max_metadata_key_chars: int = 64
    max_metadata_value_chars: int = 512
    max_output_tokens: int = 131_072


@dataclass(frozen=True, slots=True)
class MessageItem:
    """A message; `text` is the concatenation of its text parts."""

    role: str
    text: str
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class FunctionCallItem:
    """A function call the model made (re-sent by stateless clients)."""

    call_id: str
    name: str
    arguments: str
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class FunctionCallOutputItem:
    """The client's result for a function call."""

    call_id: str
    output: str
    item_id: str | None = None


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A function tool offered to the model."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    strict: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """The tool as it appears in a ResponseResource."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "strict": self.strict,
        }


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A validated create request (HTTP body or WebSocket response.create event)."""

    model: str
    input: tuple[InputItem, ...]
    instructions: str | None = None
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: str = "auto"  # auto | none | required | the name of a tool that must be called
    store: bool = True
    previous_response_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    max_output_tokens: int | None = None
    generate: bool = True
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    parallel_tool_calls: bool = True
    prompt_cache_key: str | None = None
    user: str | None = None
    safety_identifier: str | None = None
    truncation: str = "disabled"
    stream_id: str | None = None  # the WebSocket lane; None is the default lane

    def tool_choice_json(self) -> str | dict[str, str]:
        """tool_choice as it appears in a ResponseResource."""
        if self.tool_choice in TOOL_CHOICES:
            return self.tool_choice
        return {"type": "function", "name": self.tool_choice}


def parse_create(raw: bytes | str, limits: Limits, *, websocket: bool) -> CreateRequest:
    """Decode and validate one create body (HTTP) or `response.create` event (WebSocket).

    Raises a RequestError subclass (with `previous_response_id` set when it could be read) on bad input.
    """
    return parse_create_object(decode_json(raw, limits), limits, websocket=websocket)


def decode_json(raw: bytes | str, limits: Limits) -> dict[str, Any]:
    """Decode a JSON object, bounding its nesting depth. Raises InvalidJson or JsonTooDeep."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc) or "recursion" in str(exc).lower():
            raise JsonTooDeep(f"JSON nests deeper than {limits.max_json_depth} levels.") from None
        raise InvalidJson(f"We could not parse the JSON body of your request: {exc}.") from None
    if not isinstance(value, dict):
        raise InvalidJson("The request body must be a JSON object.")
    check_depth(value, limits.max_json_depth)
    return value


def check_depth(value: object, max_depth: int) -> None:
    """Raise JsonTooDeep when containers nest deeper than `max_depth` (iterative: no recursion limit)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise JsonTooDeep(f"JSON nests deeper than {max_depth} levels.")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, dict | list))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))


def parse_create_object(obj: Mapping[str, Any], limits: Limits, *, websocket: bool) -> CreateRequest:
    """Validate a decoded create body or event (see parse_create)."""
    previous = obj.get("previous_response_id")
    lane = obj.get("stream_id")
    try:
        return _parse(obj, limits, websocket=websocket)
    except RequestError as exc:
        if isinstance(previous, str):
            exc.previous_response_id = previous
        if websocket and _is_stream_id(lane):
            exc.stream_id = lane  # answered on its lane (an invalid id is answered on the default one)
        raise


def _parse(obj: Mapping[str, Any], limits: Limits, *, websocket: bool) -> CreateRequest:
    if websocket:
        event_type = obj.get("type")
        if event_type is None:
            raise MissingParameter("Missing required parameter: 'type'.", param="type")
        if event_type != CREATE_EVENT:
            raise UnknownEventType(
                f"Unsupported event type {_short(event_type)}; only '{CREATE_EVENT}' is accepted.",
                param="type",
            )
    if _opt_bool(obj, "background", default=False):
        raise UnsupportedParameter("background mode is not supported.", param="background")
    if obj.get("conversation") is not None:
        raise UnsupportedParameter(
            "conversation is not supported; use previous_response_id.", param="conversation"
        )
    tools = _tools(obj.get("tools"), limits)
    return CreateRequest(
        model=_model(obj, limits),
        input=_input(obj.get("input"), limits),
        instructions=_opt_str(obj, "instructions", limits.max_text_chars),
        tools=tools,
        tool_choice=_tool_choice(obj.get("tool_choice"), tools),
        store=_opt_bool(obj, "store", default=True),
        previous_response_id=_opt_str(obj, "previous_response_id", limits.max_id_chars) or None,
        metadata=_metadata(obj.get("metadata"), limits),
        max_output_tokens=_max_output_tokens(obj.get("max_output_tokens"), limits),
        generate=_opt_bool(obj, "generate", default=True),
        stream=_opt_bool(obj, "stream", default=False),
        temperature=_opt_number(obj, "temperature", 0.0, 2.0),
        top_p=_opt_number(obj, "top_p", 0.0, 1.0),
        parallel_tool_calls=_opt_bool(obj, "parallel_tool_calls", default=True),
        prompt_cache_key=_opt_str(obj, "prompt_cache_key", limits.max_id_chars),
        user=_opt_str(obj, "user", limits.max_id_chars),
        safety_identifier=_opt_str(obj, "safety_identifier", limits.max_id_chars),
        truncation=_truncation(obj.get("truncation")),
        stream_id=_stream_id(obj.get("stream_id"), websocket=websocket),
    )


def _is_stream_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _STREAM_ID.fullmatch(value) is not None


def _stream_id(value: object, *, websocket: bool) -> str | None:
    if value is None:
        return None
    if not websocket:
        raise UnsupportedParameter("stream_id is supported only in WebSocket mode.", param="stream_id")
    if not _is_stream_id(value):
        raise InvalidStreamId(
            "Invalid 'stream_id': expected 1 to 256 ASCII letters, digits, underscores, hyphens or periods.",
            param="stream_id",
        )
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."


def _model(obj: Mapping[str, Any], limits: Limits) -> str:
    model = obj.get("model")
    if model is None:
        raise MissingParameter("Missing required parameter: 'model'.", param="model")
    if not isinstance(model, str):
        raise InvalidType("Invalid type for 'model': expected a string.", param="model")
    if not model or len(model) > limits.max_id_chars:
        raise InvalidValue("Invalid value for 'model'.", param="model")
    return model


def _opt_str(obj: Mapping[str, Any], key: str, max_chars: int) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    return _str(value, key, max_chars)


def _str(value: object, param: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise InvalidType(f"Invalid type for '{param}': expected a string.", param=param)
    if len(value) > max_chars:
        raise StringTooLong(f"'{param}' is longer than {max_chars} characters.", param=param)
    return value


def _opt_bool(obj: Mapping[str, Any], key: str, *, default: bool) -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidType(f"Invalid type for '{key}': expected a boolean.", param=key)
    return value


def _opt_number(obj: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidType(f"Invalid type for '{key}': expected a number.", param=key)
    if not low <= value <= high:
        raise InvalidValue(f"'{key}' must be between {low} and {high}.", param=key)
    return float(value)


def _max_output_tokens(value: object, limits: Limits) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(
            "Invalid type for 'max_output_tokens': expected an integer.", param="max_output_tokens"
        )
    if not 1 <= value <= limits.max_output_tokens:
        raise InvalidValue(
            f"'max_output_tokens' must be between 1 and {limits.max_output_tokens}.",
            param="max_output_tokens",
        )
    return value


def _truncation(value: object) -> str:
    if value is None:
        return "disabled"
    if value not in ("disabled", "auto"):
        raise InvalidValue("'truncation' must be 'auto' or 'disabled'.", param="truncation")
    return str(value)


def _metadata(value: object, limits: Limits) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidType("Invalid type for 'metadata': expected an object.", param="metadata")
    if len(value) > limits.max_metadata_keys:
        raise InvalidValue(f"'metadata' may hold at most {limits.max_metadata_keys} keys.", param="metadata")
    for key, item in value.items():
        if len(key) > limits.max_metadata_key_chars:
            raise StringTooLong(
                f"metadata keys are at most {limits.max_metadata_key_chars} characters.", param="metadata"
            )
        _str(item, f"metadata.{key[:64]}", limits.max_metadata_value_chars)
    return dict(value)


def _tools(value: object, limits: Limits) -> tuple[FunctionTool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidType("Invalid type for 'tools': expected an array.", param="tools")
    if len(value) > limits.max_tools:
        raise TooManyTools(f"At most {limits.max_tools} tools are allowed.", param="tools")
    tools = tuple(_tool(raw, f"tools[{i}]", limits) for i, raw in enumerate(value))
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidValue("Tool names must be unique.", param="tools")
    return tools


def _tool(raw: object, param: str, limits: Limits) -> FunctionTool:
    if not isinstance(raw, dict):
        raise InvalidType(f"Invalid type for '{param}': expected an object.", param=param)
    kind = raw.get("type")
    if kind != "function":
        raise UnsupportedParameter(
            f"Only function tools are supported, got {_short(kind)}.", param=f"{param}.type"
        )
    name = raw.get("name")
    if name is None:
        raise MissingParameter(f"Missing required parameter: '{param}.name'.", param=f"{param}.name")
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        raise InvalidValue(f"'{param}.name' must match ^[a-zA-Z0-9_-]{{1,64}}$.", param=f"{param}.name")
    parameters = raw.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidType(
            f"Invalid type for '{param}.parameters': expected an object.", param=f"{param}.parameters"
        )
    strict = raw.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise InvalidType(f"Invalid type for '{param}.strict': expected a boolean.", param=f"{param}.strict")
    return FunctionTool(
        name=name,
        description=_opt_str(raw, "description", limits.max_text_chars),
        parameters=parameters,
        strict=strict,
    )


def _tool_choice(value: object, tools: Sequence[FunctionTool]) -> str:
    if value is None:
        return "auto"
    if isinstance(value, str):
        if value not in TOOL_CHOICES:
            raise InvalidValue(
                "'tool_choice' must be auto, none, required or a function.", param="tool_choice"
            )
        if value == "required" and not tools:
            raise InvalidValue("tool_choice 'required' needs at least one tool.", param="tool_choice")
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        name = value.get("name")
        if not isinstance(name, str) or name not in {t.name for t in tools}:
            raise InvalidValue(
                "tool_choice names a function that is not in 'tools'.", param="tool_choice.name"
            )
        return name
    if isinstance(value, dict) and value.get("type") in TOOL_CHOICES:
        return _tool_choice(value["type"], tools)
    raise InvalidValue("'tool_choice' must be auto, none, required or a function.", param="tool_choice")


def _input(value: object, limits: Limits) -> tuple[InputItem, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (MessageItem("user", _str(value, "input", limits.max_text_chars)),)
    if not isinstance(value, list):
        raise InvalidType("Invalid type for 'input': expected a string or an array of items.", param="input")
    if len(value) > limits.max_items:
        raise TooManyItems(f"'input' may hold at most {limits.max_items} items.", param="input")
    return tuple(_item(raw, f"input[{i}]", limits) for i, raw in enumerate(value))


def _item(raw: object, param: str, limits: Limits) -> InputItem:
    if not isinstance(raw, dict):
        raise InvalidType(f"Invalid type for '{param}': expected an object.", param=param)
    kind = raw.get("type", "message" if "role" in raw else None)
    item_id = _opt_str(raw, "id", limits.max_id_chars)
    if kind == "message":
        role = raw.get("role")
        if role not in ROLES:
            raise InvalidValue(
                f"'{param}.role' must be one of user, assistant, system, developer.", param=f"{param}.role"
            )
        return MessageItem(str(role), _content(raw.get("content"), f"{param}.content", limits), item_id)
    if kind == "function_call":
        return FunctionCallItem(
            call_id=_required_str(raw, "call_id", param, limits.max_id_chars),
            name=_required_str(raw, "name", param, limits.max_id_chars),
            arguments=_required_str(raw, "arguments", param, limits.max_text_chars),
            item_id=item_id,
        )
    if kind == "function_call_output":
        return FunctionCallOutputItem(
            call_id=_required_str(raw, "call_id", param, limits.max_id_chars),
            output=_content(raw.get("output"), f"{param}.output", limits),
            item_id=item_id,
        )
    if kind is None:
        raise MissingParameter(f"Missing required parameter: '{param}.type'.", param=f"{param}.type")
    raise UnsupportedParameter(f"Unsupported input item type {_short(kind)}.", param=f"{param}.type")


def _required_str(raw: Mapping[str, Any], key: str, param: str, max_chars: int) -> str:
    value = raw.get(key)
    if value is None:
        raise MissingParameter(f"Missing required parameter: '{param}.{key}'.", param=f"{param}.{key}")
    return _str(value, f"{param}.{key}", max_chars)


def _content(value: object, param: str, limits: Limits) -> str:
    """Message content or tool output: a string, or a list of text parts joined together."""
    if value is None:
        raise MissingParameter(f"Missing required parameter: '{param}'.", param=param)
    if isinstance(value, str):
        return _str(value, param, limits.max_text_chars)
    if not isinstance(value, list):
        raise InvalidType(f"Invalid type for '{param}': expected a string or an array of parts.", param=param)
    texts: list[str] = []
    for j, part in enumerate(value):
        part_param = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise InvalidType(f"Invalid type for '{part_param}': expected an object.", param=part_param)
        kind = part.get("type")
        if kind not in _TEXT_PARTS:
            raise UnsupportedParameter(
                f"Unsupported content part type {_short(kind)}; only text parts are supported.",
                param=f"{part_param}.type",
            )
        texts.append(_required_str(part, "text", part_param, limits.max_text_chars))
    text = "".join(texts)
    if len(text) > limits.max_text_chars:
        raise StringTooLong(f"'{param}' is longer than {limits.max_text_chars} characters.", param=param)
    return text


def item_json(item: InputItem, item_id: str) -> dict[str, Any]:
    """An input item as the API returns it (input_items, compaction output), with its id."""
    if isinstance(item, MessageItem):
        part = "output_text" if item.role == "assistant" else "input_text"
        content: dict[str, Any] = {"type": part, "text": item.text}
        if part == "output_text":
            content["annotations"] = []
        return {
            "id": item_id,
            "type": "message",
            "role": item.role,
            "status": "completed",
            "content": [content],
        }
    if isinstance(item, FunctionCallItem):
        return {
            "id": item_id,
            "type": "function_call",
            "status": "completed",
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
        }
    return {
        "id": item_id,
        "type": "function_call_output",
        "status": "completed",
        "call_id": item.call_id,
        "output": item.output,
    }
