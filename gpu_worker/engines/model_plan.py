"""What a real model writes: sampled ids, streamed as text and tool calls (no torch here).

With a real checkpoint the torch engine does not follow the agent policy: the model writes its output.
`ModelPlan` is the engine's output plan for it (the interface of gpu_worker/engines/torch_output.py):

- **free generation**: every id is sampled (`constraint()` is None); generation stops at one of the
  model's stop ids, which ends the output (the chain holds exactly the sampled ids, stop included), or
  after `limit` ids (finish reason `length`);
- **a forced call** (`tool_choice` "required" or a named function): the ids follow a call program
  (gpu_worker/engines/constrained.py): forced ids are fed without sampling, and each sampled id is drawn
  under a `Constraint` (the allowed ids) so that the output is one call whose arguments are valid JSON
  for the tool's schema, closed by the format's end-of-turn token.

Either way the ids are detokenized incrementally (only complete UTF-8 is emitted) and the text goes
through the format's streaming tool-call parser (gpu_worker/core/toolcalls.py): text becomes
`TextChunk`s, a call `CallStart` (with a call id made here) and `ArgsChunk`s. The finish reason is
`tool_call` when the output held a call, `stop` at a stop id, `length` at the limit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpu_worker.core.toolcalls import CallArgs, CallBegin, ParsedEvent, TextOut, ToolCallParser
from gpu_worker.engines.base import ArgsChunk, CallStart, EngineEvent, Finished, TextChunk
from gpu_worker.engines.constrained import Branch, Choice, Marker, Number, Program, Step, StringBody, Text
from gpu_worker.engines.torch_output import Advance
from gpu_worker.wire.chat.base import SegmentBuilder
from gpu_worker.wire.tokenizer import IncrementalDetokenizer, Tokenizer

__all__ = ["Constraint", "ModelPlan", "TokenTable", "new_call_id"]

# Characters constrained decoding needs as single tokens.
_CHARS = '"-0.,}]'


def new_call_id() -> str:
    """A server-made call id (`call_` + 24 hex digits)."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True, slots=True)
class Constraint:
    """The ids one sampling step may draw: the union of token classes (TokenTable) and single ids."""

    classes: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()


class TokenTable:
    """Token classes of one tokenizer, for constraints: computed once per model from each id's text.

    - `string`: ids whose text may stand inside a JSON string as it is (no quote, backslash, control
      character, incomplete UTF-8 or special token);
    - `digits`: ids whose text is ASCII digits; `digits_nonzero`: those not starting with 0.
    """

    def __init__(self, tokenizer: Tokenizer, size: int, specials: Collection[int]) -> None:
        self.size = size
        self.texts = [tokenizer.decode([i]) for i in range(size)]
        excluded = set(specials)
        string, digits, nonzero = [], [], []
        for i, text in enumerate(self.texts):
            if i in excluded or not text:
                continue
            if text.isascii() and text.isdigit():
                digits.append(i)
                if text[0] != "0":
                    nonzero.append(i)
            if "\ufffd" not in text and '"' not in text and "\\" not in text and min(text) >= " ":
                string.append(i)
        self.classes: dict[str, list[int]] = {"string": string, "digits": digits, "digits_nonzero": nonzero}
        self.chars: dict[str, int] = {}
        for char in _CHARS:
            ids = tokenizer.encode(char)
            if len(ids) == 1:
                self.chars[char] = ids[0]

    @property
    def can_constrain(self) -> bool:
        """Whether every character constrained decoding writes is one token of this vocabulary."""
        return len(self.chars) == len(_CHARS)


# ------------------------------------------------------------------------ sampling steps of a program
class _Sampling:
    """A step that samples: its constraint, and what a sampled id does (done?, value, forced ids)."""

    def constraint(self) -> Constraint:
        raise NotImplementedError

    def take(self, token: int) -> tuple[bool, Any, list[int]]:
        raise NotImplementedError


@dataclass(slots=True)
class _String(_Sampling):
    table: TokenTable
    cap: int
    count: int = 0

    def constraint(self) -> Constraint:
        return Constraint(("string",), (self.table.chars['"'],))

    def take(self, token: int) -> tuple[bool, Any, list[int]]:
        if token == self.table.chars['"']:
            return True, None, []
        self.count += 1
        if self.count >= self.cap:
            return True, None, [self.table.chars['"']]
        return False, None, []


@dataclass(slots=True)
class _Number(_Sampling):
    table: TokenTable
    step: Number
    state: str = "start"  # start | sign | int | zero | dot | frac
    count: int = 0

    def constraint(self) -> Constraint:
        chars = self.table.chars
        ends = tuple(chars[c] for c in self.step.follows)
        dot = () if self.step.integer else (chars["."],)
        full = self.count >= 12
        if self.state in ("start", "sign"):
            sign = (chars["-"],) if self.state == "start" else ()
            return Constraint(("digits_nonzero",), (*sign, chars["0"]))
        if self.state == "int":
            return Constraint((), ends + dot) if full else Constraint(("digits",), ends + dot)
        if self.state == "zero":
            return Constraint((), ends + dot)
        if self.state == "dot":
            return Constraint(("digits",))
        return Constraint((), ends) if full else Constraint(("digits",), ends)

    def take(self, token: int) -> tuple[bool, Any, list[int]]:
        text = self.table.texts[token]
        if text in self.step.follows and self.state in ("int", "zero", "frac"):
            return True, text, []
        self.count += 1
        if text == "-":
            self.state = "sign"
        elif text == ".":
            self.state = "dot"
        elif self.state in ("start", "sign"):
            self.state = "zero" if text == "0" else "int"
        elif self.state == "dot":
            self.state = "frac"
        return False, None, []


@dataclass(slots=True)
class _Choice(_Sampling):
    options: list[list[int]]
    path: list[int] = field(default_factory=list)

    def _next_ids(self) -> tuple[int, ...]:
        n = len(self.path)
        return tuple(dict.fromkeys(o[n] for o in self.options if len(o) > n and o[:n] == self.path))

    def constraint(self) -> Constraint:
        return Constraint((), self._next_ids())

    def take(self, token: int) -> tuple[bool, Any, list[int]]:
        self.path.append(token)
        if self._next_ids():
            return False, None, []
        return True, self.options.index(self.path), []


@dataclass(slots=True)
class _Branch(_Sampling):
    table: TokenTable
    chars: tuple[str, ...]

    def constraint(self) -> Constraint:
        return Constraint((), tuple(self.table.chars[c] for c in self.chars))

    def take(self, token: int) -> tuple[bool, Any, list[int]]:
        return True, self.table.texts[token], []


# ------------------------------------------------------------------------------------------ the plan
@dataclass(slots=True)
class ModelPlan:
    """The output of a real model: free, or a forced call when `program` is given (module docstring)."""

    tokenizer: Tokenizer
    stop_ids: frozenset[int]
    limit: int
    parser: ToolCallParser | None = None
    program: Program | None = None
    table: TokenTable | None = None
    end_id: int | None = None  # closes a forced call's output (one of stop_ids)
    call_ids: Callable[[], str] = new_call_id
    ids: list[int] = field(default_factory=list)
    _detok: IncrementalDetokenizer | None = None
    _step: _Sampling | None = None
    _uncounted: int = 0  # ids not yet attributed to an event
    _reason: str = ""

    def __post_init__(self) -> None:
        self._detok = IncrementalDetokenizer(self.tokenizer)
        if self.program is not None and (self.table is None or self.end_id is None):
            raise ValueError("a forced call needs the token table and the end id")

    def fed_bound(self) -> int:
        """Most ids fed after the prompt."""
        return self.limit

    def start(self) -> Advance:
        if self.program is None:
            return Advance()
        return self._forced(self._run(next(self.program)))

    def constraint(self) -> Constraint | None:
        """The ids the next sample may draw (None: any)."""
        return None if self._step is None else self._step.constraint()

    def sampled(self, token: int) -> Advance:
        if self._step is None:
            events, done = self._append([token])
            return Advance(events=events, done=done)
        finished, value, extra = self._step.take(token)
        forced = list(extra)
        if finished:
            self._step = None
            forced += self._run(self._send(value))
        events, done = self._append([token])
        if done:
            return Advance(events=events, done=True)
        advance = self._forced(forced)
        return Advance(events=events + advance.events, feed=advance.feed, done=advance.done)

    def finish(self) -> Finished:
        return Finished(finish_reason=self._reason or "length", output_ids=tuple(self.ids))

    # -------------------------------------------------------------------------------------- program
    def _send(self, value: Any) -> Step | None:
        assert self.program is not None
        try:
            return self.program.send(value)
        except StopIteration:
            return None

    def _run(self, step: Step | None) -> list[int]:
        """Forced ids up to the next sampling step (or to the end of the call, then the end id).

        Consecutive text steps are encoded together, as the model would have written them (`": "` then
        a quote merge into the tokens a natural text has)."""
        assert self.end_id is not None
        forced: list[int] = []
        text = ""
        while step is not None:
            if isinstance(step, Text):
                text += step.text
            elif isinstance(step, Marker):
                forced += SegmentBuilder(self.tokenizer).text(text).marker(step.marker).ids()
                text = ""
            else:
                self._step = self._sampling(step)
                return forced + self.tokenizer.encode(text)
            step = self._send(None)
        return [*forced, *self.tokenizer.encode(text), self.end_id]

    def _sampling(self, step: Step) -> _Sampling:
        assert self.table is not None
        if isinstance(step, StringBody):
            return _String(self.table, step.cap_tokens)
        if isinstance(step, Number):
            return _Number(self.table, step)
        if isinstance(step, Choice):
            return _Choice([self.tokenizer.encode(option) for option in step.options])
        assert isinstance(step, Branch)
        return _Branch(self.table, step.chars)

    def _forced(self, forced: list[int]) -> Advance:
        kept = forced[: max(0, self.limit - len(self.ids))]
        events, done = self._append(kept)
        return Advance(events=events, feed=tuple(kept), done=done or len(kept) < len(forced))

    # --------------------------------------------------------------------------------- text, events
    def _append(self, ids: Sequence[int]) -> tuple[tuple[EngineEvent, ...], bool]:
        """Add output ids; the events their text makes, and whether the output is complete."""
        assert self._detok is not None
        self.ids += ids
        self._uncounted += len(ids)
        text = "".join(self._detok.push(i) for i in ids if i not in self.stop_ids)
        stopped = bool(ids) and ids[-1] in self.stop_ids
        done = stopped or len(self.ids) >= self.limit
        parsed: list[ParsedEvent] = []
        if done:
            text += self._detok.flush()
        if self.parser is None:
            parsed = [TextOut(text)] if text else []
        else:
            parsed = self.parser.feed(text) if text else []
            if done:
                parsed += self.parser.finish()
        if done:
            calls = self.parser is not None and self.parser.stats.calls > 0
            self._reason = ("tool_call" if calls else "stop") if stopped else "length"
        return tuple(self._events(parsed)), done

    def _events(self, parsed: Iterable[ParsedEvent]) -> Iterable[EngineEvent]:
        for event in parsed:
            tokens, self._uncounted = self._uncounted, 0
            if isinstance(event, TextOut):
                if event.text:
                    yield TextChunk(text=event.text, tokens=tokens)
            elif isinstance(event, CallBegin):
                yield CallStart(call_id=self.call_ids(), name=event.name)
            elif isinstance(event, CallArgs):
                yield ArgsChunk(text=event.text, tokens=tokens)
