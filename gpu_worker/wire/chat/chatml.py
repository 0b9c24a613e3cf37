"""ChatML with Hermes-style tools: SmolLM2, Qwen 2/2.5, Hermes and the many models trained on it.

    header           <|im_start|>system\\n{system}{tools block}<|im_end|>\\n
                     system = instructions, else the model's default system text (chat option
                     `default_system`: the text its template inserts when a conversation has no system
                     message; SmolLM2's inserts one). Empty when there is neither and no tools.
    tools block      \\n\\n# Tools\\n\\nYou may call one or more functions ...
                     <tools>\\n{tool json}...\\n</tools>
                     ... (the Qwen 2.5 wording; one JSON object per tool, {"type": "function", "function":
                     {name, description, parameters}}, keys in that order, the schema as the client sent it)
    message          <|im_start|>{role}\\n{text}<|im_end|>\\n            developer renders as system
    assistant turn   <|im_start|>assistant[\\n{text}]
                     [\\n<tool_call>\\n{"name": N, "arguments": A}\\n</tool_call>]...<|im_end|>\\n
                     an assistant message and the calls after it are one block
    tool outputs     <|im_start|>user\\n<tool_response>\\n{output}\\n</tool_response>
                     [\\n<tool_response>...]<|im_end|>\\n    consecutive outputs share one block
    generation       <|im_start|>assistant\\n   the model then writes text and/or <tool_call> blocks and
                     ends with <|im_end|>; `closing` adds the "\\n" the template puts after it (and the
                     <|im_end|> too when the output stopped at its length limit)

Choices (documented in docs/models.md): a developer message is a system message; a run of tool outputs
is one user block only within one turn's input (outputs of two separate turns never follow each other
in an agent loop); arguments are re-serialized with `json.dumps(..., ensure_ascii=False)` as the
template's `tojson` does, or rendered as sent when they are not JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from gpu_worker.wire.chat.base import (
    ChatItem,
    ChatTool,
    Message,
    SegmentBuilder,
    ToolCall,
    ToolOutput,
    tool_object,
)
from gpu_worker.wire.chat.base import call_json as base_call_json
from gpu_worker.wire.tokenizer import Tokenizer

__all__ = ["ChatMLRenderer", "tool_json", "tools_block"]

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

_TOOLS_INTRO = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call>"
)


def tool_json(tool: ChatTool) -> str:
    """One tool as the template's `tool | tojson` writes it."""
    return json.dumps(tool_object(tool), ensure_ascii=False)


def tools_block(tools: Sequence[ChatTool]) -> str:
    """The system prompt's tools section."""
    return _TOOLS_INTRO + "".join("\n" + tool_json(t) for t in tools) + _TOOLS_OUTRO


def call_json(name: str, arguments: str) -> str:
    """A call as the template writes it: {"name": N, "arguments": <tojson of the parsed arguments>}."""
    return base_call_json(name, arguments, arguments_key="arguments")


class ChatMLRenderer:
    """ChatML + Hermes tools on one tokenizer (see the module docstring)."""

    format = "chatml"

    def __init__(self, tokenizer: Tokenizer, options: Mapping[str, str] | None = None) -> None:
        self._tokenizer = tokenizer
        self._default_system = (options or {}).get("default_system", "")
        self._im_end = self._builder().marker(IM_END).ids()
        self._newline = tokenizer.encode("\n")
        self._prompt = self._builder().marker(IM_START).text("assistant\n").ids()

    def _builder(self) -> SegmentBuilder:
        return SegmentBuilder(self._tokenizer)

    def header(self, instructions: str | None, tools: Sequence[ChatTool]) -> list[int]:
        system = instructions or self._default_system
        if not system and not tools:
            return []
        b = self._builder().marker(IM_START).text("system\n" + system)
        if tools:
            b.text(tools_block(tools))
        return b.marker(IM_END).text("\n").ids()

    def items(self, items: Sequence[ChatItem]) -> list[int]:
        b = self._builder()
        i = 0
        while i < len(items):
            item = items[i]
            if isinstance(item, ToolOutput):
                b.marker(IM_START).text("user")
                while i < len(items) and isinstance(items[i], ToolOutput):
                    output = items[i]
                    assert isinstance(output, ToolOutput)
                    b.text("\n").marker("<tool_response>").text("\n" + output.output + "\n")
                    b.marker("</tool_response>")
                    i += 1
                b.marker(IM_END).text("\n")
                continue
            if isinstance(item, ToolCall) or item.role == "assistant":
                b.marker(IM_START).text("assistant")
                if isinstance(item, Message):
                    if item.text:
                        b.text("\n" + item.text)
                    i += 1
                while i < len(items) and isinstance(items[i], ToolCall):
                    call = items[i]
                    assert isinstance(call, ToolCall)
                    b.text("\n").marker("<tool_call>").text(
                        "\n" + call_json(call.name, call.arguments) + "\n"
                    )
                    b.marker("</tool_call>")
                    i += 1
                b.marker(IM_END).text("\n")
                continue
            role = "system" if item.role == "developer" else item.role
            b.marker(IM_START).text(f"{role}\n{item.text}").marker(IM_END).text("\n")
            i += 1
        return b.ids()

    def generation_prompt(self) -> list[int]:
        return list(self._prompt)

    def closing(self, chain: Sequence[int]) -> list[int]:
        if not chain:
            return []
        end = len(self._im_end)
        if list(chain[-end:]) == self._im_end:
            return list(self._newline)
        closed = list(chain[-(end + len(self._newline)) :]) == self._im_end + self._newline
        return [] if closed else self._im_end + self._newline
