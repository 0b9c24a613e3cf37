"""Server events of one response: a complete ResponseResource in every lifecycle event, numbered from 0.

`ResponseEvents` turns what the worker produces (text deltas, function-call starts and argument deltas, the
end of generation) into the Responses streaming events, in the order OpenAI's streaming API emits them:

    response.created → response.in_progress
      → response.output_item.added → response.content_part.added → response.output_text.delta ×N
        → response.output_text.done → response.content_part.done → response.output_item.done
      → response.output_item.added (function_call) → response.function_call_arguments.delta ×N
        → response.function_call_arguments.done → response.output_item.done
      → response.output_item.added (custom_tool_call) → response.custom_tool_call_input.delta ×N
        → response.custom_tool_call_input.done → response.output_item.done
    → response.completed | response.incomplete (max_output_tokens, or steered) | response.failed

The same event objects go out as WebSocket text frames and as SSE `data:` lines. `sequence_number` starts at
0 for every response, as in SSE (OpenAI does not document whether a WebSocket carries it across
responses). A warm-up (`generate: false`) is `response.created` then `response.completed` with no output
and zero usage (OpenAI documents no event sequence for it; this is what other implementations send).

The worker names a call by the tool's `model_name`; the item carries the tool's own name, its `namespace`
for a namespaced function (as the API returns it), and is a `custom_tool_call` with `input` for a custom
tool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from api_box.core.errors import BoxError
from api_box.core.protocol import CreateRequest, FunctionCallItem, FunctionTool, call_item_json

Event = dict[str, Any]
NewId = Callable[[str], str]  # prefix ("msg", "fc") -> a fresh id such as "msg_3f2a..."

_DEFAULT_TEMPERATURE = 1.0
_DEFAULT_TOP_P = 1.0


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one response."""

    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        """The usage object with both `*_tokens_details` objects (Open Responses requires them)."""
        return {
            "input_tokens": self.input_tokens,
            # The prompt tokens this turn prefilled, which the worker keeps as the chain's cache.
            "input_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "cache_write_tokens": max(0, self.input_tokens - self.cached_tokens),
            },
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


def response_template(
    request: CreateRequest,
    *,
    response_id: str,
    created_at: int,
    default_temperature: float = _DEFAULT_TEMPERATURE,
) -> dict[str, Any]:
    """The ResponseResource of a new response (status in_progress, no output, no usage); a request without
    `temperature` echoes the one it is sampled at, `default_temperature` (the box's setting)."""
    template: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": None,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": request.max_tool_calls,
        "model": request.model,
        "output": [],
        "parallel_tool_calls": request.parallel_tool_calls,
        "previous_response_id": request.previous_response_id,
        "prompt_cache_key": request.prompt_cache_key,
        "reasoning": dict(request.reasoning or {"effort": None, "summary": None}),
        "safety_identifier": request.safety_identifier,
        "service_tier": "default",
        "store": request.store,
        "temperature": default_temperature if request.temperature is None else request.temperature,
        "text": {
            "format": dict(request.text_format or {"type": "text"}),
            "verbosity": request.verbosity or "medium",
        },
        "tool_choice": request.tool_choice_json(),
        "tools": request.tools_json(),
        "top_logprobs": request.top_logprobs,
        "top_p": _DEFAULT_TOP_P if request.top_p is None else request.top_p,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "truncation": request.truncation,
        "usage": None,
        "user": request.user,
        "metadata": dict(request.metadata),
    }
    if request.warnings:  # what the request asked for that Tether did not do (docs/protocol.md)
        template["warnings"] = [warning.to_json() for warning in request.warnings]
    if request.prompt_cache_options is not None:  # docs/retention.md
        template["prompt_cache_options"] = request.prompt_cache_options.applied_json()
    return template


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """A function call the model produced in this response."""

    item_id: str
    call_id: str
    name: str
    arguments: str


class _OpenItem:
    """The output item being streamed (a message, or a tool call: `call` with empty arguments)."""

    __slots__ = ("call", "index", "item_id", "kind", "parts")

    def __init__(self, kind: str, item_id: str, index: int, call: FunctionCallItem | None = None) -> None:
        self.kind = kind  # message | function_call | custom_tool_call
        self.item_id = item_id
        self.index = index
        self.call = call
        self.parts: list[str] = []


class ResponseEvents:
    """Builds the events of one response in order; the shell serializes and sends them."""

    def __init__(self, template: dict[str, Any], new_id: NewId, tools: Sequence[FunctionTool] = ()) -> None:
        self._template = template
        self._new_id = new_id
        self._tools = {tool.model_name: tool for tool in tools}
        self._seq = 0
        self._output: list[dict[str, Any]] = []
        self._open: _OpenItem | None = None
        self.function_calls: list[FunctionCall] = []
        self.has_message = False
        self.resource: dict[str, Any] = template

    @property
    def response_id(self) -> str:
        """The id of this response."""
        return str(self._template["id"])

    def start(self, *, in_progress: bool = True) -> list[Event]:
        """response.created (and response.in_progress unless this is a warm-up)."""
        events = [self._lifecycle("response.created", "in_progress")]
        if in_progress:
            events.append(self._lifecycle("response.in_progress", "in_progress"))
        return events

    def compaction(self, encrypted_content: str, *, compacting_event: bool) -> list[Event]:
        """The box compacted the input before generating (api_box/core/compaction.py): a `compaction`
        output item, added then done, with `response.compaction.compacting` between them when the
        transport has that event (WebSocket, SDK 3.63)."""
        index = len(self._output)
        item_id = self._new_id("cmp")
        item = {"id": item_id, "type": "compaction", "encrypted_content": encrypted_content}
        self._output.append(item)
        events = [self._event("response.output_item.added", output_index=index, item=item)]
        if compacting_event:
            events.append(self._event("response.compaction.compacting", item_id=item_id, output_index=index))
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    def text(self, delta: str) -> list[Event]:
        """An output text delta; opens an assistant message item when none is open."""
        events: list[Event] = []
        item = self._open
        if item is None or item.kind != "message":
            events += self._close_open("completed")
            item = self._open_message(events)
        item.parts.append(delta)
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=item.item_id,
                output_index=item.index,
                content_index=0,
                delta=delta,
                logprobs=[],
            )
        )
        return events

    def call_start(self, call_id: str, name: str) -> list[Event]:
        """The model starts a call of the tool it sees as `name`: a new function_call (or custom_tool_call)
        output item."""
        events = self._close_open("completed")
        tool = self._tools.get(name)
        call = FunctionCallItem(call_id, name, "")  # a tool the request did not offer: a plain function call
        if tool is not None:
            call = FunctionCallItem(call_id, tool.name, "", namespace=tool.namespace, kind=tool.kind)
        custom = call.kind == "custom"
        kind, prefix = ("custom_tool_call", "ctc") if custom else ("function_call", "fc")
        item = _OpenItem(kind, self._new_id(prefix), len(self._output), call)
        self._open = item
        self._output.append(self._call_item(item, "in_progress"))
        events.append(
            self._event("response.output_item.added", output_index=item.index, item=self._output[-1])
        )
        return events

    def call_arguments(self, delta: str) -> list[Event]:
        """A delta of the open call's arguments, or of a custom tool call's input (ignored when no call is
        open)."""
        item = self._open
        if item is None or item.call is None:
            return []
        item.parts.append(delta)
        kind = "custom_tool_call_input" if item.kind == "custom_tool_call" else "function_call_arguments"
        return [
            self._event(f"response.{kind}.delta", item_id=item.item_id, output_index=item.index, delta=delta)
        ]

    def finish(self, usage: Usage, *, finish_reason: str, completed_at: int) -> list[Event]:
        """Close open items and end with response.completed (or response.incomplete at max_output_tokens,
        or when a response.steer stopped it: the worker's finish reason "stopped")."""
        incomplete = finish_reason in ("length", "stopped")
        events = self._close_open("incomplete" if incomplete else "completed")
        status = "incomplete" if incomplete else "completed"
        reason = "steered" if finish_reason == "stopped" else "max_output_tokens"
        details = {"reason": reason} if incomplete else None
        events.append(
            self._lifecycle(
                f"response.{status}",
                status,
                usage=usage.to_json(),
                completed_at=completed_at,
                incomplete_details=details,
            )
        )
        return events

    def warmed(self, *, completed_at: int) -> list[Event]:
        """End a warm-up (generate: false): response.completed, no output, zero usage."""
        return [
            self._lifecycle(
                "response.completed", "completed", usage=Usage().to_json(), completed_at=completed_at
            )
        ]

    def fail(self, error: BoxError) -> list[Event]:
        """End with response.failed; the open item (if any) is kept in the output as incomplete."""
        if self._open is not None:
            self._output[self._open.index] = self._final_item(self._open, "incomplete")
            self._open = None
        failure = {"code": error.code, "message": error.message}
        return [self._lifecycle("response.failed", "failed", error=failure)]

    def take_sequence_number(self) -> int:
        """The next sequence number, for an event the shell sends in this response's stream (a steer's)."""
        number = self._seq
        self._seq += 1
        return number

    # -- internals ---------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> Event:
        event: Event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _lifecycle(self, kind: str, status: str, **changes: Any) -> Event:
        self.resource = {**self._template, "status": status, "output": list(self._output), **changes}
        return self._event(kind, response=self.resource)

    def _open_message(self, events: list[Event]) -> _OpenItem:
        item = _OpenItem("message", self._new_id("msg"), len(self._output))
        self._open = item
        self.has_message = True
        added = {
            "id": item.item_id,
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self._output.append(added)
        events.append(self._event("response.output_item.added", output_index=item.index, item=added))
        events.append(
            self._event(
                "response.content_part.added",
                item_id=item.item_id,
                output_index=item.index,
                content_index=0,
                part=_text_part(""),
            )
        )
        return item

    def _close_open(self, status: str) -> list[Event]:
        item = self._open
        if item is None:
            return []
        self._open = None
        final = self._final_item(item, status)
        self._output[item.index] = final
        text = "".join(item.parts)
        if item.kind == "message":
            ids = {"item_id": item.item_id, "output_index": item.index, "content_index": 0}
            events = [
                self._event("response.output_text.done", **ids, text=text, logprobs=[]),
                self._event("response.content_part.done", **ids, part=_text_part(text)),
            ]
        else:
            assert item.call is not None
            self.function_calls.append(FunctionCall(item.item_id, item.call.call_id, item.call.name, text))
            ids = {"item_id": item.item_id, "output_index": item.index}
            if item.kind == "custom_tool_call":
                events = [self._event("response.custom_tool_call_input.done", **ids, input=text)]
            else:
                name = item.call.name
                events = [
                    self._event("response.function_call_arguments.done", **ids, name=name, arguments=text)
                ]
        events.append(self._event("response.output_item.done", output_index=item.index, item=final))
        return events

    def _final_item(self, item: _OpenItem, status: str) -> dict[str, Any]:
        if item.kind == "message":
            return {
                "id": item.item_id,
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": [_text_part("".join(item.parts))],
            }
        return self._call_item(item, status)

    @staticmethod
    def _call_item(item: _OpenItem, status: str) -> dict[str, Any]:
        assert item.call is not None
        return call_item_json(replace(item.call, arguments="".join(item.parts)), item.item_id, status)


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
