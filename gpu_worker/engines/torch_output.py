"""Output plans: how the torch engine turns an agent decision into fed and sampled tokens (no torch here).

The agent policy (gpu_worker/core/agent.py) decides *what* item comes next; the model generates the
tokens inside it. A plan tells the engine, step by step, which tokens to force-feed (chat markers, tool
names, JSON structure) and when to sample one from the model's logits:

    answer  [ASSISTANT] s1 … sn [END]                 every s_i sampled (plain o200k ids)
    call    [CALL] name [ARGS] {"key": "s1 … sk", …} [END]
                                                      JSON structure forced; each string value is text
                                                      decoded from k sampled tokens (k = the policy's
                                                      value length in tokens), JSON-escaped

A stop (a steered response) ends an answer after the tokens sampled so far, cut as at a length limit;
a call runs to its end.

The item's final ids are its chat-format rendering (gpu_worker/wire/chat.py) of the generated text,
re-encoded, so a re-rendered item yields the same ids. Those can differ from the fed ids where BPE merges
across a piece boundary or a sampled byte sequence was not valid UTF-8; the engine keeps KV only for the
common prefix of the two (see `common_prefix`) and recomputes the rest lazily on the next turn.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from typing import Any

from gpu_worker.core.agent import Answer, CallTool
from gpu_worker.engines.base import ArgsChunk, CallStart, EngineEvent, Finished, TextChunk
from gpu_worker.wire.chat import render_function_call, render_message
from gpu_worker.wire.tokenizer import Special, decode_bytes, encode

# o200k_base defines ids 0..199997 as plain byte sequences; 199999 and 200018 are its own specials.
PLAIN_VOCAB = 199_998

# A JSON text split into literal pieces (str) and holes (int: tokens to sample for a string value).
Segments = list[str | int]


@dataclass(frozen=True, slots=True)
class Advance:
    """After a step: stream `events`, then feed `feed` (forced tokens); sample again unless `done`."""

    events: tuple[EngineEvent, ...] = ()
    feed: tuple[int, ...] = ()
    done: bool = False


def split_arguments(arguments: str) -> Segments:
    """Literal JSON pieces and string-value holes of `arguments` (valid JSON text; else one literal).

    Keys stay literal; each string value becomes `'"', hole, '"'` with hole = its length in tokens (>= 1).
    Joining the literals with JSON-escaped text in the holes always gives valid JSON.
    """
    try:
        value = json.loads(arguments)
    except ValueError:
        return [arguments]
    segments: Segments = []
    _emit(value, segments)
    return _merge_literals(segments)


def _emit(value: Any, out: Segments) -> None:
    if isinstance(value, str):
        out.extend(('"', max(1, len(encode(value))), '"'))
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            out.append((", " if i else "") + json.dumps(key, ensure_ascii=False) + ": ")
            _emit(item, out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(", ")
            _emit(item, out)
        out.append("]")
    else:
        out.append(json.dumps(value))


def _merge_literals(segments: Segments) -> Segments:
    merged: Segments = [""]
    for seg in segments:
        if isinstance(seg, str) and isinstance(merged[-1], str):
            merged[-1] += seg
        else:
            merged.append(seg)
    if isinstance(merged[-1], int):
        merged.append("")
    return merged


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    i = 0
    while a[i] == b[i]:
        i += 1
    return i


class _Utf8:
    """Incremental UTF-8 decoding of token bytes (a token may end inside a character)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        return str(self._decoder.decode(decode_bytes([token])))

    def flush(self) -> str:
        return str(self._decoder.decode(b"", final=True))


@dataclass(slots=True)
class AnswerPlan:
    """`[ASSISTANT]` + `tokens` sampled tokens + `[END]`, at most `limit` ids; cut (no `[END]`, finish
    reason `length`) when `truncated`, as the sim cuts an answer at max_output_tokens, or by a stop (a
    steered response) after the tokens sampled so far."""

    tokens: int
    limit: int
    truncated: bool = False
    _text: list[str] = field(default_factory=list)
    _sampled: int = 0
    _utf8: _Utf8 = field(default_factory=_Utf8)
    _stopped: bool = False

    def fed_bound(self) -> int:
        """Most tokens fed after the prompt."""
        return self.tokens + 2

    def start(self) -> Advance:
        return Advance(feed=(Special.ASSISTANT,), done=self.tokens == 0)

    def sampled(self, token: int) -> Advance:
        self._sampled += 1
        done = self._sampled == self.tokens
        text = self._utf8.feed(token) + (self._utf8.flush() if done else "")
        self._text.append(text)
        # A token that ends inside a character streams nothing; its text comes with the next one.
        events: tuple[EngineEvent, ...] = (TextChunk(text=text, tokens=1),) if text else ()
        return Advance(events=events, done=done)

    @property
    def stoppable(self) -> bool:
        """Whether a stop may end the answer now (it is still being sampled)."""
        return not self._stopped and self._sampled < self.tokens

    def stop(self) -> tuple[EngineEvent, ...]:
        """End the answer after the tokens sampled so far, cut as at a length limit; the text a token
        that ended inside a character held back."""
        self._stopped = self.truncated = True
        self.tokens = self._sampled
        text = self._utf8.flush()
        self._text.append(text)
        return (TextChunk(text=text, tokens=0),) if text else ()

    def finish(self) -> Finished:
        ids = render_message("assistant", "".join(self._text))
        if self.truncated:
            ids = ids[:-1]
        return _cut(ids, self.limit, "length" if self.truncated else "stop")


def _cut(ids: list[int], limit: int, reason: str) -> Finished:
    """Finished with at most `limit` ids (re-encoded text can be longer than what was sampled)."""
    if len(ids) > limit:
        return Finished(finish_reason="length", output_ids=tuple(ids[:limit]))
    return Finished(finish_reason=reason, output_ids=tuple(ids))


@dataclass(slots=True)
class CallPlan:
    """`[CALL] name [ARGS] arguments [END]` with the string values of `arguments` generated."""

    call: CallTool
    limit: int
    _segments: Segments = field(default_factory=list)
    _next: int = 1  # index of the segment being filled (a hole) or fed next
    _left: int = 0  # tokens still to sample in the current hole
    _text: list[str] = field(default_factory=list)
    _utf8: _Utf8 = field(default_factory=_Utf8)

    def __post_init__(self) -> None:
        self._segments = split_arguments(self.call.arguments)

    stoppable = False  # a stop never cuts a call

    def stop(self) -> tuple[EngineEvent, ...]:
        raise ValueError("a call is not cut by a stop")

    def fed_bound(self) -> int:
        """Most tokens fed after the prompt (exact: the pieces are encoded separately)."""
        literals = sum(len(encode(s)) for s in self._segments if isinstance(s, str))
        holes = sum(s for s in self._segments if isinstance(s, int))
        return 3 + len(encode(self.call.name)) + literals + holes

    def start(self) -> Advance:
        first = str(self._segments[0])
        self._text.append(first)
        head = (Special.CALL, *encode(self.call.name), Special.ARGS, *encode(first))
        events: list[EngineEvent] = [CallStart(call_id=self.call.call_id, name=self.call.name)]
        if first:
            events.append(ArgsChunk(text=first, tokens=0))
        if len(self._segments) == 1:
            return Advance(events=tuple(events), feed=(*head, Special.END), done=True)
        self._left = int(self._segments[1])
        return Advance(events=tuple(events), feed=head)

    def sampled(self, token: int) -> Advance:
        self._left -= 1
        text = self._utf8.feed(token)
        if self._left:
            return self._chunk(text, 1, ())
        text += self._utf8.flush()
        literal = str(self._segments[self._next + 1])
        self._next += 2
        done = self._next >= len(self._segments)
        if not done:
            self._left = int(self._segments[self._next])
        feed = (*encode(literal), Special.END) if done else tuple(encode(literal))
        advance = self._chunk(text, 1, feed, done)
        if literal:
            self._text.append(literal)
            advance = Advance(
                events=(*advance.events, ArgsChunk(text=literal, tokens=0)), feed=feed, done=done
            )
        return advance

    def _chunk(self, text: str, tokens: int, feed: tuple[int, ...], done: bool = False) -> Advance:
        escaped = json.dumps(text, ensure_ascii=False)[1:-1]
        self._text.append(escaped)
        events: tuple[EngineEvent, ...] = (ArgsChunk(text=escaped, tokens=tokens),) if escaped else ()
        return Advance(events=events, feed=feed, done=done)

    def arguments(self) -> str:
        """The arguments generated so far (complete JSON once done)."""
        return "".join(self._text)

    def finish(self) -> Finished:
        # Cut at `limit` like the sim (whose arguments then end mid-JSON); the stream was not cut.
        return _cut(render_function_call(self.call.name, self.arguments()), self.limit, "tool_call")


OutputPlan = AnswerPlan | CallPlan


def plan_for(decision: CallTool | Answer, max_output_tokens: int) -> OutputPlan:
    """The plan rendering `decision` in at most `max_output_tokens` ids (markers included)."""
    if isinstance(decision, CallTool):
        return CallPlan(decision, limit=max_output_tokens)
    tokens = min(decision.max_tokens, max(0, max_output_tokens - 1))
    truncated = decision.max_tokens + 2 > max_output_tokens
    return AnswerPlan(tokens=tokens, limit=max_output_tokens, truncated=truncated)
