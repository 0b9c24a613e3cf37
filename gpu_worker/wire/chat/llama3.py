"""Llama 3.x with JSON tool calls (tools in the system message).

    header           <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n
                     [Environment: ipython\\n]Cutting Knowledge Date: December 2023\\nToday Date: {date}\\n\\n
                     {instructions}[tools block]<|eot_id|>
    tools block      \\n\\nYou have access to the following functions. To call a function, please respond
                     with JSON for a function call. Respond in the format {"name": function name,
                     "parameters": dictionary of argument name and its value}. Do not use variables.\\n\\n
                     {tool json, indent 4}\\n\\n ... (one per tool)
    message          <|start_header_id|>{role}<|end_header_id|>\\n\\n{text}<|eot_id|>   developer -> system
    tool call        <|start_header_id|>assistant<|end_header_id|>\\n\\n{"name": N, "parameters": A}<|eot_id|>
                     (one call per assistant message, as Llama 3.1 calls tools)
    tool output      <|start_header_id|>ipython<|end_header_id|>\\n\\n{output}<|eot_id|>
    generation       <|start_header_id|>assistant<|end_header_id|>\\n\\n   the model ends with <|eot_id|>
                     (or <|eom_id|> after a call); `closing` adds <|eot_id|> only after a length stop.

Volatile parts frozen per chain: the "Today Date" line comes from the chat option `date_string` (default
"26 Jul 2024", the Llama 3.1 template's own default), never the wall clock, so a chain's header renders
the same on every turn and on every box.
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

__all__ = ["Llama3Renderer", "tools_block"]

BOT = "<|begin_of_text|>"
START = "<|start_header_id|>"
END = "<|end_header_id|>"
EOT = "<|eot_id|>"
EOM = "<|eom_id|>"

_TOOLS_INTRO = (
    "\n\nYou have access to the following functions. To call a function, please respond with JSON for a "
    'function call. Respond in the format {"name": function name, "parameters": dictionary of argument '
    "name and its value}. Do not use variables.\n\n"
)


def tool_json(tool: ChatTool) -> str:
    """One tool as the template's `tool | tojson(indent=4)` writes it."""
    return json.dumps(tool_object(tool), ensure_ascii=False, indent=4)


def tools_block(tools: Sequence[ChatTool]) -> str:
    """The system prompt's tools section."""
    return _TOOLS_INTRO + "".join(tool_json(t) + "\n\n" for t in tools)


def call_json(name: str, arguments: str) -> str:
    """A call as the template writes it: {"name": N, "parameters": <tojson of the parsed arguments>}."""
    return base_call_json(name, arguments, arguments_key="parameters")


class Llama3Renderer:
    """Llama 3.x + JSON tools on one tokenizer (see the module docstring)."""

    format = "llama3"

    def __init__(self, tokenizer: Tokenizer, options: Mapping[str, str] | None = None) -> None:
        self._tokenizer = tokenizer
        self._date = (options or {}).get("date_string", "26 Jul 2024")
        self._eot = self._builder().marker(EOT).ids()
        self._stops = [self._eot, self._builder().marker(EOM).ids()]

    def _builder(self) -> SegmentBuilder:
        return SegmentBuilder(self._tokenizer)

    def _block(self, b: SegmentBuilder, role: str, text: str) -> None:
        b.marker(START).text(role).marker(END).text("\n\n" + text).marker(EOT)

    def header(self, instructions: str | None, tools: Sequence[ChatTool]) -> list[int]:
        system = "Environment: ipython\n" if tools else ""
        system += f"Cutting Knowledge Date: December 2023\nToday Date: {self._date}\n\n"
        system += instructions or ""
        if tools:
            system += tools_block(tools)
        b = self._builder().marker(BOT)
        self._block(b, "system", system)
        return b.ids()

    def items(self, items: Sequence[ChatItem]) -> list[int]:
        b = self._builder()
        for item in items:
            if isinstance(item, ToolCall):
                self._block(b, "assistant", call_json(item.name, item.arguments))
            elif isinstance(item, ToolOutput):
                self._block(b, "ipython", item.output)
            else:
                assert isinstance(item, Message)
                self._block(b, "system" if item.role == "developer" else item.role, item.text)
        return b.ids()

    def generation_prompt(self) -> list[int]:
        b = self._builder().marker(START).text("assistant").marker(END).text("\n\n")
        return b.ids()

    def closing(self, chain: Sequence[int]) -> list[int]:
        if not chain:
            return []
        for stop in self._stops:
            if list(chain[-len(stop) :]) == stop:
                return []
        return list(self._eot)
