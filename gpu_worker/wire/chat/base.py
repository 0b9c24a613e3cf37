"""What every chat format renders, and a builder that tokenizes a rendering as the model's template does.

A chain is `header + segment + segment + ...`: the header (instructions, tools) once, then one segment per
turn (the turn's new input items, then the generation prompt), each followed by the model's own sampled
ids. Renderers are append-only: a segment never rewrites what came before it. Where the model's template
would render the previous output differently from what was sampled (reasoning stripped, a tool call
re-serialized), the chain keeps the sampled ids; only a fresh chain (HTTP full context, a fork) renders
those items again, and the worker's prefix cache reuses what matches.

Tokenization: a template renders to one string that the model's tokenizer splits at its added tokens and
then encodes piece by piece. `SegmentBuilder` does the same without ever parsing user text for special
tokens: structural markers are added as ids when the tokenizer has them as added tokens, otherwise as
text merged with the text around them, and each maximal run of text is encoded in one call, so a
rendering tokenizes exactly as the template string would (proved per format by tests/unit/gpu_worker/
test_chat_conformance.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gpu_worker.wire.tokenizer import Tokenizer

__all__ = [
    "ChatItem",
    "ChatTool",
    "Message",
    "Renderer",
    "SegmentBuilder",
    "ToolCall",
    "ToolOutput",
    "call_json",
    "tool_object",
]


@dataclass(frozen=True, slots=True)
class Message:
    """A message; role is user, assistant, system or developer."""

    role: str
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made; `arguments` is JSON text (rendered re-serialized where the format does)."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """The client's result for a call."""

    call_id: str
    output: str
    name: str = ""


ChatItem = Message | ToolCall | ToolOutput


@dataclass(frozen=True, slots=True)
class ChatTool:
    """A tool offered to the model: a function name and its JSON Schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


def tool_object(tool: ChatTool) -> dict[str, Any]:
    """A tool as chat templates receive it: {"type": "function", "function": {name, description,
    parameters}}."""
    function = {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)}
    return {"type": "function", "function": function}


def call_json(name: str, arguments: str, *, arguments_key: str) -> str:
    """A call as templates write it: {"name": N, "<arguments_key>": <tojson of the parsed arguments>}
    (arguments that are not JSON are written as sent)."""
    try:
        args = json.dumps(json.loads(arguments), ensure_ascii=False)
    except ValueError:
        args = arguments
    return '{"name": ' + json.dumps(name, ensure_ascii=False) + f', "{arguments_key}": ' + args + "}"


class Renderer(Protocol):
    """One chat format bound to one tokenizer (see the module docstring)."""

    format: str

    def header(self, instructions: str | None, tools: Sequence[ChatTool]) -> list[int]:
        """The chain's start: instructions and tools (may be empty)."""
        ...

    def items(self, items: Sequence[ChatItem]) -> list[int]:
        """A run of input items appended to a chain whose last message is closed."""
        ...

    def generation_prompt(self) -> list[int]:
        """What precedes the model's output (e.g. the assistant role header)."""
        ...

    def closing(self, chain: Sequence[int]) -> list[int]:
        """What closes an open model output at the end of `chain` before more items (empty if closed)."""
        ...


class SegmentBuilder:
    """Accumulates text and markers; encodes each maximal run of text in one call (see module docstring)."""

    __slots__ = ("_ids", "_pending", "_tokenizer")

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._pending: list[str] = []

    def text(self, text: str) -> SegmentBuilder:
        """Plain text (never parsed for special tokens)."""
        if text:
            self._pending.append(text)
        return self

    def marker(self, marker: str) -> SegmentBuilder:
        """A structural marker: its id when the tokenizer has it as an added token, else its text."""
        try:
            token_id = self._tokenizer.special_id(marker)
        except KeyError:
            return self.text(marker)
        self._flush()
        self._ids.append(token_id)
        return self

    def ids(self) -> list[int]:
        """The tokens so far."""
        self._flush()
        return self._ids

    def _flush(self) -> None:
        if self._pending:
            self._ids += self._tokenizer.encode("".join(self._pending))
            self._pending.clear()
