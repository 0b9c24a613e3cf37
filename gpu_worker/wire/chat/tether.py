"""Tether's own chat format (the `sim` engine and dummy weights): how Responses items become o200k ids.

Every item renders on its own, and a chain is the concatenation of its parts, so rendering is
prefix-stable: the tokens of turn N are a prefix of the tokens of turn N+1. That is what lets the worker
keep a chain's KV cache across turns, and what lets a stateless full-context request hit the worker's
block-hash prefix cache.

    header        = [SYSTEM] instructions [END]   (when instructions are given)
                    [TOOLS] tools-json [END]       (when tools are given; canonical JSON)
    user message  = [USER] text [END]              (system/developer messages use [SYSTEM])
    assistant msg = [ASSISTANT] text [END]
    function call = [CALL] name [ARGS] arguments [END]
    tool output   = [TOOL_OUTPUT] output [END]

An engine generates exactly the rendering of the output item it produces (an assistant message or a
function call, markers included), so the box can append the worker's output ids to its copy of the chain
and a re-rendered output item (HTTP full-context mode) yields the same tokens again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from gpu_worker.wire.chat.base import ChatItem, ChatTool, Message, ToolCall, ToolOutput
from gpu_worker.wire.tokenizer import O200kTokenizer, Special, Tokenizer

_ROLE_MARKER = {
    "user": Special.USER,
    "assistant": Special.ASSISTANT,
    "system": Special.SYSTEM,
    "developer": Special.SYSTEM,
}


def render_instructions(instructions: str | None) -> list[int]:
    """System header for the request's instructions (empty when there are none)."""
    return _TETHER.header(instructions, ())


def canonical_tools_json(tools: Sequence[Mapping[str, Any]]) -> str:
    """Canonical JSON of function tools: name, description, parameters, in order, keys sorted."""
    canon = [
        {
            "name": t.get("name", ""),
            "description": t.get("description") or "",
            "parameters": t.get("parameters") or {},
        }
        for t in tools
    ]
    return json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def render_tools(tools: Sequence[Mapping[str, Any]]) -> list[int]:
    """Tools header (empty when no tools are offered)."""
    chat_tools = [
        ChatTool(t.get("name", ""), t.get("description") or "", t.get("parameters") or {}) for t in tools
    ]
    return _TETHER.header(None, chat_tools)


def render_message(role: str, text: str) -> list[int]:
    """A message item; `role` is user, assistant, system or developer."""
    return _TETHER.items([Message(role, text)])


def render_function_call(name: str, arguments: str) -> list[int]:
    """A function_call item (the call id is not rendered: outputs follow their calls in order)."""
    return _TETHER.items([ToolCall("", name, arguments)])


def render_function_call_output(output: str) -> list[int]:
    """A function_call_output item."""
    return _TETHER.items([ToolOutput("", output)])


class TetherRenderer:
    """Tether's own format behind the Renderer seam: for the `sim` engine and dummy weights (o200k ids).

    The engine generates the whole output item, markers included, so there is no generation prompt and
    an output is always closed.
    """

    format = "tether"

    def __init__(self, tokenizer: Tokenizer | None = None) -> None:
        self._tokenizer = tokenizer or O200kTokenizer()

    def _framed(self, marker: int, text: str) -> list[int]:
        return [marker, *self._tokenizer.encode(text), Special.END]

    def header(self, instructions: str | None, tools: Sequence[ChatTool]) -> list[int]:
        tokens = self._framed(Special.SYSTEM, instructions) if instructions else []
        if tools:
            tokens += self._framed(Special.TOOLS, canonical_tools_json([tool_dict(t) for t in tools]))
        return tokens

    def items(self, items: Sequence[ChatItem]) -> list[int]:
        tokens: list[int] = []
        for item in items:
            if isinstance(item, Message):
                marker = _ROLE_MARKER.get(item.role)
                if marker is None:
                    raise ValueError(f"unknown role {item.role!r}")
                tokens += self._framed(marker, item.text)
            elif isinstance(item, ToolCall):
                tokens += [Special.CALL, *self._tokenizer.encode(item.name)]
                tokens += self._framed(Special.ARGS, item.arguments)
            else:
                tokens += self._framed(Special.TOOL_OUTPUT, item.output)
        return tokens

    def generation_prompt(self) -> list[int]:
        return []

    def closing(self, chain: Sequence[int]) -> list[int]:
        return []


def tool_dict(tool: ChatTool) -> dict[str, Any]:
    """A tool in the shape `canonical_tools_json` takes."""
    return {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)}


# The item renderers above are this format's rendering of single items (the sim and the tests use them).
_TETHER = TetherRenderer()
