"""Parse and validate `POST /v1/responses` bodies and WebSocket `response.create` events into frozen types.

Everything a client sends passes through `parse_create` (or `decode_json` + `parse_create_object`). The
invariant, property-tested in tests/unit/api_box/test_box_protocol_properties.py: any input is either
accepted as a `CreateRequest` or rejected with a `RequestError` subclass from api_box/core/errors.py; no
other exception escapes.

Accepted input (every field and tool type, and whether it is honoured, echoed or ignored, is listed in
docs/protocol.md): `input` as a string or a list of items — `message` (role user/assistant/system/
developer; content a string or input_text/output_text/input_image parts, an image becoming IMAGE_PLACEHOLDER
until an engine declares vision), `function_call` (with its `namespace` when it called a namespaced
function), `function_call_output`, `custom_tool_call`, `custom_tool_call_output`, `reasoning` (accepted and
skipped: Tether's models do not read reasoning items back), and `compaction` (kept sealed as a
CompactionRef; the shell expands it with api_box/core/compaction.py).

Tools: `function` tools; `namespace` tools, whose function and custom tools are offered to the model as
`<namespace>.<name>` (`FunctionTool.model_name`); `custom` (freeform) tools with their `format` (text, or a
lark/regex grammar). Every other tool type (hosted tools such as web_search or file_search, and built-in
client tools whose call items Tether does not produce) follows `Limits.hosted_tools`: "omit" (the default)
leaves it out of what the model sees, echoes it in the response's `tools` and says so in `warnings`;
"reject" refuses the request with unsupported_parameter.

Other fields: `instructions`; `store`; `previous_response_id`; `metadata`; `max_output_tokens`; `generate`
(warm-up when false; `prompt_cache_options.prewarm` implies it); `temperature`, `top_p` (honoured);
`tool_choice`, `parallel_tool_calls`, `prompt_cache_key`, `user`, `safety_identifier`, `truncation`,
`reasoning`, `text` (format text/json_object/json_schema, verbosity), `max_tool_calls`, `top_logprobs`
(echoed); `include`, `service_tier` (kept); `prompt_cache_options` (retention on the worker,
docs/retention.md; echoed as applied); `stream_id`, the WebSocket lane
(1-256 characters of [A-Za-z0-9_.-], rejected over HTTP). `stream` selects SSE over HTTP and is accepted
and ignored over WebSocket; `background: true`, `conversation` and `prompt` are rejected.
`context_management` compaction entries set `compact_threshold` (api_box/io/turns.py compacts a full-context
input over it). Other fields (client_metadata, stream_options, prompt_cache_retention, ...) are
accepted and ignored.
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
HOSTED_TOOL_POLICIES: Final = ("omit", "reject")
TEXT_FORMATS: Final = frozenset({"text", "json_object", "json_schema"})
# Keys of a hosted tool that are never echoed back or stored (credentials for an MCP server).
_SECRET_TOOL_KEYS: Final = frozenset({"authorization", "headers"})
_MAX_MODEL_NAME = 64  # what the worker accepts as a tool name (namespace + "." + name included)
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STREAM_ID = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_TEXT_PARTS: Final = frozenset({"input_text", "output_text", "text"})
# What an input_image part becomes for a model without vision (counted: tether_box_input_images_total).
IMAGE_PLACEHOLDER: Final = "[image omitted: this model does not accept images]"
_IMAGE_DETAILS: Final = frozenset({"auto", "low", "high", "original"})


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
    hosted_tools: str = "omit"  # tools the deployment cannot run: omit (not offered, say so) | reject

    def __post_init__(self) -> None:
        if self.hosted_tools not in HOSTED_TOOL_POLICIES:
            raise ValueError(f"hosted_tools must be one of {', '.join(HOSTED_TOOL_POLICIES)}")


@dataclass(frozen=True, slots=True)
class MessageItem:
    """A message; `text` is the concatenation of its text parts."""

    role: str
    text: str
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class FunctionCallItem:
    """A tool call the model made (re-sent by stateless clients): a function call, the call of a
    namespaced function (`namespace` set), or with kind="custom" a custom tool call whose `arguments` is
    its freeform input."""

    call_id: str
    name: str
    arguments: str
    item_id: str | None = None
    namespace: str | None = None
    kind: str = "function"  # function | custom

    @property
    def model_name(self) -> str:
        """The tool's name as the model sees it (see FunctionTool.model_name)."""
        return _model_name(self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class FunctionCallOutputItem:
    """The client's result for a function call (kind="custom": for a custom tool call)."""

    call_id: str
    output: str
    item_id: str | None = None
    kind: str = "function"  # function | custom


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem


@dataclass(frozen=True, slots=True)
class CompactionRef:
    """A `compaction` input item, still sealed: the shell opens it (api_box/core/compaction.py) and puts
    the items it holds in its place, before `input[index]` (`param` names it in errors)."""

    index: int
    encrypted_content: str
    param: str


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A tool offered to the model: a function (JSON arguments), or with kind="custom" a freeform tool
    whose input is text (`format`: {"type": "text"}, or a grammar {"type": "grammar", "syntax": "lark" |
    "regex", "definition": ...}). `namespace` is set for the tools of a `namespace` tool."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    strict: bool | None = None
    namespace: str | None = None
    kind: str = "function"  # function | custom
    format: Mapping[str, Any] | None = None  # custom tools only; None is unconstrained text

    @property
    def model_name(self) -> str:
        """The name the model sees and calls: `<namespace>.<name>` for a namespaced tool, else `name`."""
        return _model_name(self.namespace, self.name)

    def to_json(self) -> dict[str, Any]:
        """The tool as it appears in a ResponseResource (a namespaced one inside its namespace)."""
        if self.kind == "custom":
            return {
                "type": "custom",
                "name": self.name,
                "description": self.description,
                "format": dict(self.format) if self.format is not None else {"type": "text"},
            }
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "strict": self.strict,
        }


def _model_name(namespace: str | None, name: str) -> str:
    return f"{namespace}.{name}" if namespace else name


@dataclass(frozen=True, slots=True)
class RequestWarning:
    """Something the request asked for that Tether did not do (e.g. a hosted tool it cannot run).

    Responses list them in their `warnings` field (present only when there are some; docs/protocol.md)."""

    code: str
    message: str
    param: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The warning as it appears in a ResponseResource's `warnings`."""
        return {"code": self.code, "message": self.message, "param": self.param}


# prompt_cache_options.ttl -> seconds the worker keeps the chain ahead of unretained ones.
CACHE_TTL_SECONDS: Final = {"30m": 1_800, "12h": 43_200}


@dataclass(frozen=True, slots=True)
class PromptCacheOptions:
    """`prompt_cache_options` (SDK 3.63): retention of the chain on its worker (docs/retention.md);
    `prewarm` implies generate: false."""

    mode: str | None = None  # implicit | explicit
    ttl: str | None = None  # 30m | 12h
    prewarm: bool = False
    comparison_response_id: str | None = None

    @property
    def retain_seconds(self) -> int:
        """How long the worker keeps the chain ahead of unretained chains: the ttl (30m when not given).
        0 in explicit mode: it writes no implicit breakpoint, and Tether reads no content-block ones."""
        if self.mode == "explicit":
            return 0
        return CACHE_TTL_SECONDS[self.ttl or "30m"]

    def applied_json(self) -> dict[str, Any]:
        """The response's `prompt_cache_options`: what was applied, defaults filled in."""
        return {
            "mode": self.mode or "implicit",
            "ttl": self.ttl or "30m",
            "comparison_response_id": self.comparison_response_id,
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
    # The response's `tools` as parsed (namespaces and omitted hosted tools included); None: `tools`.
    tools_echo: tuple[Mapping[str, Any], ...] | None = None
    # The response's `tool_choice` when it is not what `tool_choice` says (allowed_tools, a hosted tool).
    tool_choice_echo: Mapping[str, Any] | None = None
    warnings: tuple[RequestWarning, ...] = ()
    reasoning: Mapping[str, Any] | None = None  # {"effort", "summary"}, echoed
    text_format: Mapping[str, Any] | None = None  # text.format, echoed (not enforced)
    verbosity: str | None = None  # text.verbosity, echoed
    include: tuple[str, ...] = ()
    service_tier: str | None = None
    max_tool_calls: int | None = None
    top_logprobs: int = 0
    prompt_cache_options: PromptCacheOptions | None = None
    compactions: tuple[CompactionRef, ...] = ()  # sealed compaction items, expanded by the shell
    # context_management [{"type": "compaction", "compact_threshold": N}]: compact a full-context input
    # over N prompt tokens (0: over the model's default threshold); None: never.
    compact_threshold: int | None = None
    images_replaced: int = 0  # input_image parts replaced by IMAGE_PLACEHOLDER

    def tool_choice_json(self) -> str | dict[str, Any]:
        """tool_choice as it appears in a ResponseResource."""
        if self.tool_choice_echo is not None:
            return dict(self.tool_choice_echo)
        if self.tool_choice in TOOL_CHOICES:
            return self.tool_choice
        tool = next((t for t in self.tools if t.model_name == self.tool_choice), None)
        if tool is None:
            return {"type": "function", "name": self.tool_choice}
        return {"type": tool.kind, "name": tool.name}

    def tools_json(self) -> list[dict[str, Any]]:
        """tools as they appear in a ResponseResource: as sent, namespaces and omitted tools included."""
        if self.tools_echo is not None:
            return [dict(tool) for tool in self.tools_echo]
        return [tool.to_json() for tool in self.tools]


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
                f"Unsupported event type {_short(event_type)}; '{CREATE_EVENT}' and 'response.steer' are "
                "accepted.",
                param="type",
            )
    if _opt_bool(obj, "background", default=False):
        raise UnsupportedParameter("background mode is not supported.", param="background")
    if obj.get("conversation") is not None:
        raise UnsupportedParameter(
            "conversation is not supported; use previous_response_id.", param="conversation"
        )
    if obj.get("prompt") is not None:
        raise UnsupportedParameter(
            "Prompt templates are not supported; send instructions and input instead.", param="prompt"
        )
    _opt_object(obj, "client_metadata")  # accepted and ignored (Codex sends it)
    tools = _tools(obj.get("tools"), limits)
    choice = _tool_choice(obj.get("tool_choice"), tools, limits)
    text_format, verbosity = _text(obj.get("text"), limits)
    cache_options = _prompt_cache_options(obj.get("prompt_cache_options"), limits)
    prewarm = cache_options is not None and cache_options.prewarm
    given = _input(obj.get("input"), limits)
    return CreateRequest(
        model=_model(obj, limits),
        input=given.items,
        instructions=_opt_str(obj, "instructions", limits.max_text_chars),
        tools=tools.offered,
        tool_choice=choice.name,
        store=_opt_bool(obj, "store", default=True),
        previous_response_id=_opt_str(obj, "previous_response_id", limits.max_id_chars) or None,
        metadata=_metadata(obj.get("metadata"), limits),
        max_output_tokens=_max_output_tokens(obj.get("max_output_tokens"), limits),
        generate=_opt_bool(obj, "generate", default=True) and not prewarm,
        stream=_opt_bool(obj, "stream", default=False),
        temperature=_opt_number(obj, "temperature", 0.0, 2.0),
        top_p=_opt_number(obj, "top_p", 0.0, 1.0),
        parallel_tool_calls=_opt_bool(obj, "parallel_tool_calls", default=True),
        prompt_cache_key=_opt_str(obj, "prompt_cache_key", limits.max_id_chars),
        user=_opt_str(obj, "user", limits.max_id_chars),
        safety_identifier=_opt_str(obj, "safety_identifier", limits.max_id_chars),
        truncation=_truncation(obj.get("truncation")),
        stream_id=_stream_id(obj.get("stream_id"), websocket=websocket),
        tools_echo=tools.echo,
        tool_choice_echo=choice.echo,
        warnings=tools.warnings + choice.warnings,
        reasoning=_reasoning(obj.get("reasoning"), limits),
        text_format=text_format,
        verbosity=verbosity,
        include=_include(obj.get("include"), limits),
        service_tier=_opt_str(obj, "service_tier", limits.max_id_chars),
        max_tool_calls=_opt_int(obj, "max_tool_calls", 0, 1_000_000),
        top_logprobs=_opt_int(obj, "top_logprobs", 0, 20) or 0,
        prompt_cache_options=cache_options,
        compactions=given.compactions,
        compact_threshold=_context_management(obj.get("context_management")),
        images_replaced=given.images,
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


def _opt_int(obj: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"Invalid type for '{key}': expected an integer.", param=key)
    if not low <= value <= high:
        raise InvalidValue(f"'{key}' must be between {low} and {high}.", param=key)
    return value


def _opt_object(obj: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, dict):
        raise InvalidType(f"Invalid type for '{key}': expected an object.", param=key)
    return value


def _reasoning(value: object, limits: Limits) -> dict[str, Any] | None:
    """`reasoning` as echoed: its effort and summary (generate_summary is the older name)."""
    reasoning = _opt_object({"reasoning": value}, "reasoning")
    if reasoning is None:
        return None
    summary = reasoning.get("summary", reasoning.get("generate_summary"))
    return {
        "effort": _opt_str(reasoning, "effort", limits.max_id_chars),
        "summary": _str(summary, "reasoning.summary", limits.max_id_chars) if summary is not None else None,
    }


def _text(value: object, limits: Limits) -> tuple[dict[str, Any] | None, str | None]:
    """`text.format` (text, json_object or json_schema with its name and schema) and `text.verbosity`."""
    text = _opt_object({"text": value}, "text")
    if text is None:
        return None, None
    verbosity = _opt_str(text, "verbosity", limits.max_id_chars)
    fmt = _opt_object(text, "format")
    if fmt is None:
        return None, verbosity
    kind = fmt.get("type")
    if kind not in TEXT_FORMATS:
        raise InvalidValue(
            "'text.format.type' must be text, json_object or json_schema.", param="text.format.type"
        )
    if kind == "json_schema":
        _required_str(fmt, "name", "text.format", limits.max_id_chars)
        if not isinstance(fmt.get("schema"), dict):
            raise InvalidType(
                "Invalid type for 'text.format.schema': expected an object.", param="text.format.schema"
            )
    return dict(fmt), verbosity


def _include(value: object, limits: Limits) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidType("Invalid type for 'include': expected an array of strings.", param="include")
    if len(value) > limits.max_metadata_keys * 4:
        raise InvalidValue("'include' names too many fields.", param="include")
    return tuple(_str(v, f"include[{i}]", limits.max_id_chars) for i, v in enumerate(value))


def _prompt_cache_options(value: object, limits: Limits) -> PromptCacheOptions | None:
    options = _opt_object({"prompt_cache_options": value}, "prompt_cache_options")
    if options is None:
        return None
    mode, ttl = options.get("mode"), options.get("ttl")
    if mode not in (None, "implicit", "explicit"):
        raise InvalidValue(
            "'prompt_cache_options.mode' must be implicit or explicit.", param="prompt_cache_options.mode"
        )
    if ttl not in (None, *CACHE_TTL_SECONDS):
        raise InvalidValue("'prompt_cache_options.ttl' must be 30m or 12h.", param="prompt_cache_options.ttl")
    # Errors name the nested field (prompt_cache_options.prewarm), as mode and ttl do.
    nested = {f"prompt_cache_options.{k}": v for k, v in options.items() if isinstance(k, str)}
    return PromptCacheOptions(
        mode=mode,
        ttl=ttl,
        prewarm=_opt_bool(nested, "prompt_cache_options.prewarm", default=False),
        comparison_response_id=_opt_str(
            nested, "prompt_cache_options.comparison_response_id", limits.max_id_chars
        ),
    )


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


@dataclass(frozen=True, slots=True)
class _Tools:
    offered: tuple[FunctionTool, ...]  # what the model sees (namespaces flattened)
    echo: tuple[Mapping[str, Any], ...]  # the response's `tools`
    warnings: tuple[RequestWarning, ...]
    omitted: tuple[str, ...]  # types of the hosted tools left out


def _tools(value: object, limits: Limits) -> _Tools:
    if value is None:
        return _Tools((), (), (), ())
    if not isinstance(value, list):
        raise InvalidType("Invalid type for 'tools': expected an array.", param="tools")
    if len(value) > limits.max_tools:
        raise TooManyTools(f"At most {limits.max_tools} tools are allowed.", param="tools")
    offered: list[FunctionTool] = []
    echo: list[Mapping[str, Any]] = []
    warnings: list[RequestWarning] = []
    omitted: list[str] = []
    for i, raw in enumerate(value):
        param = f"tools[{i}]"
        kind = _tool_type(raw, param)
        if kind in ("function", "custom"):
            tool = _tool(raw, param, limits, namespace=None)
            offered.append(tool)
            echo.append(tool.to_json())
        elif kind == "namespace":
            nested = _namespace(raw, param, limits)
            offered += nested
            echo.append(
                {
                    "type": "namespace",
                    "name": raw["name"],
                    "description": raw.get("description"),
                    "tools": [tool.to_json() for tool in nested],
                }
            )
        else:
            warnings.append(_hosted(kind, limits, param, "tool"))
            omitted.append(kind)
            echo.append({k: v for k, v in raw.items() if k not in _SECRET_TOOL_KEYS})
    if len(offered) > limits.max_tools:
        raise TooManyTools(
            f"At most {limits.max_tools} tools are allowed (namespaces count theirs).", param="tools"
        )
    names = [t.model_name for t in offered]
    if len(set(names)) != len(names):
        raise InvalidValue("Tool names must be unique.", param="tools")
    return _Tools(tuple(offered), tuple(echo), tuple(warnings), tuple(omitted))


def _tool_type(raw: object, param: str) -> str:
    if not isinstance(raw, dict):
        raise InvalidType(f"Invalid type for '{param}': expected an object.", param=param)
    kind = raw.get("type")
    if kind is None:
        raise MissingParameter(f"Missing required parameter: '{param}.type'.", param=f"{param}.type")
    if not isinstance(kind, str) or not kind or len(kind) > 64:
        raise InvalidValue(f"Invalid value for '{param}.type'.", param=f"{param}.type")
    return kind


def _hosted(kind: str, limits: Limits, param: str, what: str) -> RequestWarning:
    """The warning for a hosted tool (or a tool_choice naming one) under the omit policy; raises under
    the reject policy."""
    if limits.hosted_tools == "reject":
        raise UnsupportedParameter(
            f"The {_short(kind)} tool cannot run on this deployment; only function, custom and namespace "
            "tools are supported.",
            param=f"{param}.type",
        )
    if what == "tool":
        message = f"The {kind} tool cannot run on this deployment; it was not offered to the model."
    else:
        message = f"tool_choice names the {kind} tool, which this deployment cannot run; 'auto' was used."
    return RequestWarning(f"{what}_omitted", message, param)


def _namespace(raw: Mapping[str, Any], param: str, limits: Limits) -> list[FunctionTool]:
    namespace = _tool_name(raw, param)
    _opt_str(raw, "description", limits.max_text_chars)
    tools = raw.get("tools")
    if tools is None:
        raise MissingParameter(f"Missing required parameter: '{param}.tools'.", param=f"{param}.tools")
    if not isinstance(tools, list):
        raise InvalidType(f"Invalid type for '{param}.tools': expected an array.", param=f"{param}.tools")
    nested: list[FunctionTool] = []
    for j, inner in enumerate(tools):
        inner_param = f"{param}.tools[{j}]"
        if _tool_type(inner, inner_param) not in ("function", "custom"):
            raise InvalidValue(
                f"A namespace holds function and custom tools only ('{inner_param}.type').",
                param=f"{inner_param}.type",
            )
        nested.append(_tool(inner, inner_param, limits, namespace=namespace))
    return nested


def _tool_name(raw: Mapping[str, Any], param: str) -> str:
    name = raw.get("name")
    if name is None:
        raise MissingParameter(f"Missing required parameter: '{param}.name'.", param=f"{param}.name")
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        raise InvalidValue(f"'{param}.name' must match ^[a-zA-Z0-9_-]{{1,64}}$.", param=f"{param}.name")
    return name


def _tool(raw: Mapping[str, Any], param: str, limits: Limits, *, namespace: str | None) -> FunctionTool:
    name = _tool_name(raw, param)
    if len(_model_name(namespace, name)) > _MAX_MODEL_NAME:
        raise InvalidValue(
            f"'{param}.name' with its namespace ('{namespace}.{name}') is longer than {_MAX_MODEL_NAME} "
            "characters.",
            param=f"{param}.name",
        )
    description = _opt_str(raw, "description", limits.max_text_chars)
    if raw["type"] == "custom":
        return FunctionTool(
            name=name,
            description=description,
            namespace=namespace,
            kind="custom",
            format=_custom_format(raw.get("format"), f"{param}.format", limits),
        )
    parameters = raw.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidType(
            f"Invalid type for '{param}.parameters': expected an object.", param=f"{param}.parameters"
        )
    strict = raw.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise InvalidType(f"Invalid type for '{param}.strict': expected a boolean.", param=f"{param}.strict")
    return FunctionTool(
        name=name, description=description, parameters=parameters, strict=strict, namespace=namespace
    )


def _custom_format(value: object, param: str, limits: Limits) -> dict[str, Any] | None:
    """A custom tool's input format: None or {"type": "text"} (free text), or a lark/regex grammar."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidType(f"Invalid type for '{param}': expected an object.", param=param)
    kind = value.get("type")
    if kind == "text":
        return {"type": "text"}
    if kind != "grammar":
        raise InvalidValue(f"'{param}.type' must be 'text' or 'grammar'.", param=f"{param}.type")
    syntax = value.get("syntax")
    if syntax not in ("lark", "regex"):
        raise InvalidValue(f"'{param}.syntax' must be 'lark' or 'regex'.", param=f"{param}.syntax")
    definition = _required_str(value, "definition", param, limits.max_text_chars)
    return {"type": "grammar", "syntax": syntax, "definition": definition}


@dataclass(frozen=True, slots=True)
class _Choice:
    name: str  # auto | none | required | the model_name of the tool that must be called
    echo: Mapping[str, Any] | None = None  # what the response says, when `name` does not say it
    warnings: tuple[RequestWarning, ...] = ()


def _tool_choice(value: object, tools: _Tools, limits: Limits) -> _Choice:
    offered = tools.offered
    if value is None:
        return _Choice("auto")
    if isinstance(value, str):
        if value not in TOOL_CHOICES:
            raise InvalidValue(
                "'tool_choice' must be auto, none, required or a function.", param="tool_choice"
            )
        if value == "required" and not offered:
            if tools.omitted:  # only hosted tools were sent, and none is offered: the model may answer
                warning = RequestWarning(
                    "tool_choice_omitted",
                    "tool_choice 'required' names only tools this deployment cannot run; 'auto' was used.",
                    "tool_choice",
                )
                return _Choice("auto", None, (warning,))
            raise InvalidValue("tool_choice 'required' needs at least one tool.", param="tool_choice")
        return _Choice(value)
    if not isinstance(value, dict):
        raise InvalidValue("'tool_choice' must be auto, none, required or a function.", param="tool_choice")
    kind = value.get("type")
    if kind in ("function", "custom"):
        return _Choice(_named_tool(value, str(kind), offered).model_name)
    if kind in TOOL_CHOICES:
        return _tool_choice(kind, tools, limits)
    if kind == "allowed_tools":
        mode = value.get("mode")
        if mode not in ("auto", "required"):
            raise InvalidValue("'tool_choice.mode' must be auto or required.", param="tool_choice.mode")
        choice = _tool_choice(mode, tools, limits)
        return _Choice(choice.name, value, choice.warnings)
    if isinstance(kind, str) and kind:
        return _Choice("auto", value, (_hosted(kind, limits, "tool_choice", "tool_choice"),))
    raise InvalidValue("'tool_choice' must be auto, none, required or a function.", param="tool_choice")


def _named_tool(value: Mapping[str, Any], kind: str, offered: Sequence[FunctionTool]) -> FunctionTool:
    """The offered tool a {"type": "function" | "custom", "name": ...} tool_choice names: by the name the
    model sees (`namespace.name`), by name and `namespace`, or by a name only one tool has."""
    name, namespace = value.get("name"), value.get("namespace")
    candidates = [t for t in offered if t.kind == kind]
    if namespace is not None:
        matches = [t for t in candidates if t.namespace == namespace and t.name == name]
    else:
        matches = [t for t in candidates if t.model_name == name] or [t for t in candidates if t.name == name]
    if len(matches) != 1:
        raise InvalidValue(
            f"tool_choice names a {kind} tool that is not in 'tools' (or names it ambiguously).",
            param="tool_choice.name",
        )
    return matches[0]


def _context_management(value: object) -> int | None:
    """The compaction threshold of context_management (0: the model's default), None without one."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidType(
            "Invalid type for 'context_management': expected an array.", param="context_management"
        )
    threshold: int | None = None
    for i, entry in enumerate(value):
        param = f"context_management[{i}]"
        if not isinstance(entry, dict):
            raise InvalidType(f"Invalid type for '{param}': expected an object.", param=param)
        if entry.get("type") != "compaction":
            raise InvalidValue(f"'{param}.type' must be 'compaction'.", param=f"{param}.type")
        given = entry.get("compact_threshold")
        if given is not None and (isinstance(given, bool) or not isinstance(given, int) or given < 1):
            raise InvalidValue(
                f"'{param}.compact_threshold' must be a positive integer.", param=f"{param}.compact_threshold"
            )
        threshold = given or 0
    return threshold


@dataclass(frozen=True, slots=True)
class _Input:
    items: tuple[InputItem, ...] = ()
    compactions: tuple[CompactionRef, ...] = ()
    images: int = 0


def _input(value: object, limits: Limits) -> _Input:
    if value is None:
        return _Input()
    if isinstance(value, str):
        return _Input((MessageItem("user", _str(value, "input", limits.max_text_chars)),))
    if not isinstance(value, list):
        raise InvalidType("Invalid type for 'input': expected a string or an array of items.", param="input")
    if len(value) > limits.max_items:
        raise TooManyItems(f"'input' may hold at most {limits.max_items} items.", param="input")
    items: list[InputItem] = []
    compactions: list[CompactionRef] = []
    for i, raw in enumerate(value):
        param = f"input[{i}]"
        if isinstance(raw, dict) and raw.get("type") == "compaction":
            content = _required_str(raw, "encrypted_content", param, limits.max_text_chars)
            compactions.append(CompactionRef(len(items), content, param))
            continue
        item = _item(raw, param, limits)
        if item is not None:
            items.append(item)
    return _Input(tuple(items), tuple(compactions), sum(_image_parts(raw) for raw in value))


def _image_parts(raw: object) -> int:
    """input_image parts of one input item (message content or tool output), already validated."""
    if not isinstance(raw, dict):
        return 0
    parts = raw.get("content") if raw.get("type", "message") == "message" else raw.get("output")
    if not isinstance(parts, list):
        return 0
    return sum(1 for part in parts if isinstance(part, dict) and part.get("type") == "input_image")


def _item(raw: object, param: str, limits: Limits) -> InputItem | None:
    """One input item; None for an item that is accepted and skipped (reasoning)."""
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
    if kind in ("function_call", "custom_tool_call"):
        custom = kind == "custom_tool_call"
        return FunctionCallItem(
            call_id=_required_str(raw, "call_id", param, limits.max_id_chars),
            name=_required_str(raw, "name", param, limits.max_id_chars),
            arguments=_required_str(raw, "input" if custom else "arguments", param, limits.max_text_chars),
            item_id=item_id,
            namespace=_opt_str(raw, "namespace", limits.max_id_chars) or None,
            kind="custom" if custom else "function",
        )
    if kind in ("function_call_output", "custom_tool_call_output"):
        return FunctionCallOutputItem(
            call_id=_required_str(raw, "call_id", param, limits.max_id_chars),
            output=_content(raw.get("output"), f"{param}.output", limits),
            item_id=item_id,
            kind="custom" if kind == "custom_tool_call_output" else "function",
        )
    if kind == "reasoning":
        return None  # Codex sends its reasoning items back; Tether's models do not read them
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
        if kind == "input_image":
            texts.append(_image(part, part_param, limits))
            continue
        if kind not in _TEXT_PARTS:
            raise UnsupportedParameter(
                f"Unsupported content part type {_short(kind)}; only text and image parts are supported.",
                param=f"{part_param}.type",
            )
        texts.append(_required_str(part, "text", part_param, limits.max_text_chars))
    text = "".join(texts)
    if len(text) > limits.max_text_chars:
        raise StringTooLong(f"'{param}' is longer than {limits.max_text_chars} characters.", param=param)
    return text


def message_content(value: object, param: str, limits: Limits) -> str:
    """A message's content as a create accepts it (a string, or text and image parts joined), for other
    events that carry messages (response.steer: api_box/core/steer.py)."""
    return _content(value, param, limits)


def _image(part: Mapping[str, Any], param: str, limits: Limits) -> str:
    """An input_image part (an image_url, http(s) or data: URL, or a file_id), validated; what the model
    reads in its place. No engine declares vision yet, so it is the placeholder (docs/protocol.md)."""
    url = _opt_str(part, "image_url", limits.max_text_chars)
    file_id = _opt_str(part, "file_id", limits.max_id_chars)
    if url is None and file_id is None:
        raise MissingParameter(
            f"Missing required parameter: '{param}.image_url' (or '{param}.file_id').",
            param=f"{param}.image_url",
        )
    if url is not None and not url.startswith(("https://", "http://", "data:image/")):
        raise InvalidValue(
            f"'{param}.image_url' must be an http(s) URL or a data:image/ URL.", param=f"{param}.image_url"
        )
    detail = part.get("detail")
    if detail is not None and detail not in _IMAGE_DETAILS:
        raise InvalidValue(
            f"'{param}.detail' must be one of {', '.join(sorted(_IMAGE_DETAILS))}.", param=f"{param}.detail"
        )
    return IMAGE_PLACEHOLDER


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
        return call_item_json(item, item_id, "completed")
    return {
        "id": item_id,
        "type": "custom_tool_call_output" if item.kind == "custom" else "function_call_output",
        "status": "completed",
        "call_id": item.call_id,
        "output": item.output,
    }


def call_item_json(item: FunctionCallItem, item_id: str, status: str) -> dict[str, Any]:
    """A tool call item as the API returns it: `function_call` (with `namespace` for a namespaced
    function) or `custom_tool_call` (its input in `input`; the SDK's item has no status)."""
    if item.kind == "custom":
        out: dict[str, Any] = {
            "id": item_id,
            "type": "custom_tool_call",
            "call_id": item.call_id,
            "name": item.name,
            "input": item.arguments,
        }
    else:
        out = {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
        }
    if item.namespace is not None:
        out["namespace"] = item.namespace
    return out
