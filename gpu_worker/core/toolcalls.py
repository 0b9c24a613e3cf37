"""Streaming tool-call parsers: a model's output text in, text and function-call events out.

One parser per tool-call format (gpu_worker/wire/model.py TOOL_CALL_FORMATS); the engine feeds it the
detokenized text as it streams and turns the events into output items.

- `hermes` (ChatML models: Qwen, Hermes, SmolLM2): calls are `<tool_call>\\n{"name": N, "arguments": {...}}
  \\n</tool_call>` blocks anywhere in the text. The call starts (`CallBegin`) once its name is read, and
  its arguments stream (`CallArgs`) as the model writes them.
- `llama3_json`: the whole output is one JSON object `{"name": N, "parameters"|"arguments": {...}}`
  (optionally after `<|python_tag|>`); anything else is text.

Text that is not a valid call stays text: a `<tool_call>` block whose head is not `{"name": "<an offered
tool>", "arguments": ` is emitted as the text it was (`CallEnd.valid` is never involved), and counted
by the caller through `ParserStats`. A call whose arguments never close (the output hit its length limit)
ends with `CallEnd(valid=False)`; its arguments are what the model wrote. Whitespace between calls and
around them is dropped, so an output of calls only yields no text item.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "CallArgs",
    "CallBegin",
    "CallEnd",
    "HermesParser",
    "Llama3JsonParser",
    "ParsedEvent",
    "ParserStats",
    "TextOut",
    "ToolCallParser",
    "parser_for",
]


@dataclass(frozen=True, slots=True)
class TextOut:
    text: str


@dataclass(frozen=True, slots=True)
class CallBegin:
    name: str


@dataclass(frozen=True, slots=True)
class CallArgs:
    text: str


@dataclass(frozen=True, slots=True)
class CallEnd:
    valid: bool  # the arguments were one complete JSON object


ParsedEvent = TextOut | CallBegin | CallArgs | CallEnd


@dataclass(slots=True)
class ParserStats:
    """What a parser saw: calls, malformed calls, and call-like text left as text."""

    calls: int = 0
    malformed_calls: int = 0
    rejected_blocks: int = 0


class ToolCallParser:
    """The interface every format's parser has."""

    stats: ParserStats

    def feed(self, text: str) -> list[ParsedEvent]:
        raise NotImplementedError

    def finish(self) -> list[ParsedEvent]:
        raise NotImplementedError


class _JsonValueScanner:
    """Finds where one JSON value ends in streamed text (strings and escapes aware)."""

    __slots__ = ("depth", "done", "escape", "in_string", "started")

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.started = False
        self.done = False

    def feed(self, text: str) -> int:
        """Consume `text`; the number of characters that belong to the value (len(text) if not done)."""
        for i, ch in enumerate(text):
            if self.done:
                return i
            if not self.started:
                if ch.isspace():
                    continue
                self.started = True
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif ch == "\\":
                    self.escape = True
                elif ch == '"':
                    self.in_string = False
                    if self.depth == 0:
                        self.done = True
                continue
            if ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth <= 0:
                    self.done = True
            elif self.depth == 0 and ch in ",\n" and self.started:
                self.done = True  # a scalar value ended
                return i
        return len(text)


class _TextHold:
    """Text waiting to go out: whitespace is held until something that is not whitespace follows it."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = ""

    def add(self, text: str, out: list[ParsedEvent]) -> None:
        self.pending += text
        stripped = self.pending.rstrip()
        if stripped:
            out.append(TextOut(stripped))
            self.pending = self.pending[len(stripped) :]

    def drop_whitespace(self) -> None:
        self.pending = ""


_HERMES_OPEN = "<tool_call>"
_HERMES_CLOSE = "</tool_call>"
_HERMES_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_HEAD_MAX_CHARS = 512


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


class HermesParser(ToolCallParser):
    """`<tool_call>` blocks (see the module docstring)."""

    def __init__(self, tool_names: Iterable[str]) -> None:
        self._names = frozenset(tool_names)
        self._state = "text"  # text | head | args | tail
        self._buf = ""
        self._hold = _TextHold()
        self._scanner = _JsonValueScanner()
        self._after_call = False
        self.stats = ParserStats()

    def feed(self, text: str) -> list[ParsedEvent]:
        out: list[ParsedEvent] = []
        self._buf += text
        progressed = True
        while progressed:
            progressed = getattr(self, f"_{self._state}")(out, final=False)
        return out

    def finish(self) -> list[ParsedEvent]:
        out: list[ParsedEvent] = []
        progressed = True
        while progressed:
            progressed = getattr(self, f"_{self._state}")(out, final=True)
        if self._state == "args":
            self.stats.malformed_calls += 1
            out.append(CallEnd(valid=False))
        elif self._state == "tail":
            out.append(CallEnd(valid=True))
        elif self._state == "head":
            self._reject(out)
        self._state = "text"
        if self._hold.pending and not self._after_call:
            out.append(TextOut(self._hold.pending))
        self._hold.drop_whitespace()
        return out

    def _text(self, out: list[ParsedEvent], *, final: bool) -> bool:
        at = self._buf.find(_HERMES_OPEN)
        if at < 0:
            keep = 0 if final else _partial_suffix(self._buf, _HERMES_OPEN)
            emit, self._buf = self._buf[: len(self._buf) - keep], self._buf[len(self._buf) - keep :]
            if emit.strip():
                self._after_call = False
            self._hold.add(emit, out)
            return False
        before = self._buf[:at]
        if before.strip():
            self._after_call = False
        self._hold.add(before, out)  # whitespace before the block is dropped only if it is a call
        self._buf = self._buf[at + len(_HERMES_OPEN) :]
        self._state = "head"
        return True

    def _head(self, out: list[ParsedEvent], *, final: bool) -> bool:
        match = _HERMES_HEAD.match(self._buf)
        if match is None or not match.group(1):
            closed = _HERMES_CLOSE in self._buf
            if closed or final or len(self._buf) > _HEAD_MAX_CHARS or not _could_be_head(self._buf):
                self._reject(out)
                return True
            return False
        name = json.loads('"' + match.group(1) + '"')
        if name not in self._names:
            self._reject(out)
            return True
        self.stats.calls += 1
        self._hold.drop_whitespace()
        out.append(CallBegin(name))
        self._buf = self._buf[match.end() :]
        self._scanner = _JsonValueScanner()
        self._state = "args"
        return True

    def _reject(self, out: list[ParsedEvent]) -> None:
        """A `<tool_call>` that is not a call: its text goes out as text, up to its close tag."""
        self.stats.rejected_blocks += 1
        end = self._buf.find(_HERMES_CLOSE)
        cut = len(self._buf) if end < 0 else end + len(_HERMES_CLOSE)
        self._hold.add(_HERMES_OPEN + self._buf[:cut], out)
        self._after_call = False
        self._buf = self._buf[cut:]
        self._state = "text"

    def _args(self, out: list[ParsedEvent], *, final: bool) -> bool:
        if not self._scanner.started:
            self._buf = self._buf.lstrip()  # the space after "arguments": may arrive in a later piece
        if not self._buf:
            return False
        used = self._scanner.feed(self._buf)
        if used:
            out.append(CallArgs(self._buf[:used]))
        self._buf = self._buf[used:]
        if self._scanner.done:
            self._state = "tail"
            return True
        return False

    def _tail(self, out: list[ParsedEvent], *, final: bool) -> bool:
        end = self._buf.find(_HERMES_CLOSE)
        if end < 0:
            if final:
                out.append(CallEnd(valid=True))
                self._buf, self._state = "", "text"
            return False
        out.append(CallEnd(valid=True))
        self._buf = self._buf[end + len(_HERMES_CLOSE) :]
        self._state = "text"
        self._after_call = True
        self._hold.drop_whitespace()
        return True


def _could_be_head(text: str) -> bool:
    """Whether `text` may still grow into a call head: `{` then a key, whitespace aside."""
    stripped = text.lstrip()
    if not stripped:
        return True
    if stripped[0] != "{":
        return False
    rest = stripped[1:].lstrip()
    return not rest or rest[0] == '"'


class Llama3JsonParser(ToolCallParser):
    """An output that is one JSON call object (see the module docstring); calls are checked at the end."""

    _PYTHON_TAG = "<|python_tag|>"

    def __init__(self, tool_names: Iterable[str]) -> None:
        self._names = frozenset(tool_names)
        self._buf = ""
        self._decided: bool | None = None  # None until the first non-space character: is it a call?
        self.stats = ParserStats()

    def feed(self, text: str) -> list[ParsedEvent]:
        if self._decided is False:
            return [TextOut(text)] if text else []
        self._buf += text
        head = self._buf.lstrip()
        if head.startswith(self._PYTHON_TAG):
            head = head[len(self._PYTHON_TAG) :].lstrip()
        if not head or self._PYTHON_TAG.startswith(head):
            return []
        if self._decided is None:
            self._decided = head.startswith("{")
            if not self._decided:
                out, self._buf = self._buf, ""
                return [TextOut(out)]
        return []

    def finish(self) -> list[ParsedEvent]:
        if not self._decided:
            return [TextOut(self._buf)] if self._buf.strip() else []
        body = self._buf.strip()
        if body.startswith(self._PYTHON_TAG):
            body = body[len(self._PYTHON_TAG) :].strip()
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        args = value.get("parameters", value.get("arguments")) if isinstance(value, dict) else None
        name = value.get("name") if isinstance(value, dict) else None
        if not isinstance(name, str) or name not in self._names or not isinstance(args, dict):
            self.stats.rejected_blocks += 1
            return [TextOut(self._buf)]
        self.stats.calls += 1
        return [CallBegin(name), CallArgs(json.dumps(args, ensure_ascii=False)), CallEnd(valid=True)]


def parser_for(tool_call_format: str, tool_names: Iterable[str]) -> ToolCallParser:
    """The streaming parser of a tool-call format; ValueError for a format that has none."""
    if tool_call_format == "hermes":
        return HermesParser(tool_names)
    if tool_call_format == "llama3_json":
        return Llama3JsonParser(tool_names)
    raise ValueError(f"no tool-call parser for format {tool_call_format!r}")
