"""What a real model writes: its sampled ids, and the constraints of a forced call (no torch here).

With a real checkpoint the torch engine does not follow the agent policy: the model writes its output.
`ModelPlan` is the engine's output plan for it (the interface of gpu_worker/engines/torch_output.py):

- **free generation**: every id is sampled (`constraint()` is None); generation stops at one of the
  model's stop ids, which ends the output (the chain holds exactly the sampled ids, stop included), or
  after `limit` ids (finish reason `length`), or early at a stop (`stop()`, a steered response) while the
  output is plain text;
- **a forced call** (`tool_choice` "required" or a named function): the ids follow a call program
  (gpu_worker/engines/constrained.py): forced ids are fed without sampling, and each sampled id is drawn
  under a `Constraint` (the allowed ids) so that the output is one call whose arguments are valid JSON
  for the tool's schema, closed by the format's end-of-turn token.

Either way the ids go to the output the vllm engine uses too (gpu_worker/engines/model_output.py
`ModelOutput`): incremental detokenization, the format's streaming tool-call parser, call ids, the
finish reason and the parser's counts.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpu_worker.engines.base import EngineEvent, Finished
from gpu_worker.engines.constrained import Branch, Choice, Marker, Number, Program, Step, StringBody, Text
from gpu_worker.engines.model_output import ModelOutput
from gpu_worker.engines.torch_output import Advance
from gpu_worker.wire.chat.base import SegmentBuilder
from gpu_worker.wire.tokenizer import Tokenizer

__all__ = ["Constraint", "ModelPlan", "TokenTable"]

# Characters constrained decoding needs as single tokens.
_CHARS = '"-0.,}]'


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

    output: ModelOutput
    limit: int
    program: Program | None = None
    table: TokenTable | None = None
    end_id: int | None = None  # closes a forced call's output (one of the stop ids)
    _step: _Sampling | None = None
    _finished: Finished | None = None

    def __post_init__(self) -> None:
        if self.program is not None and (self.table is None or self.end_id is None):
            raise ValueError("a forced call needs the token table and the end id")

    @property
    def tokenizer(self) -> Tokenizer:
        return self.output.tokenizer

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

    @property
    def stoppable(self) -> bool:
        """Whether a stop may end the output now: free text, nothing held back, not finished."""
        return self.program is None and self._finished is None and self.output.stoppable

    def stop(self) -> tuple[EngineEvent, ...]:
        """End the output here, as at a length limit (a steered response); the last events (not
        Finished: `finish` gives it)."""
        return self._close("length")

    def finish(self) -> Finished:
        if self._finished is None:  # the engine ended the output (never the case while it samples)
            self._close("length")
        assert self._finished is not None
        return self._finished

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
        kept = forced[: max(0, self.limit - len(self.output.ids))]
        events, done = self._append(kept)
        return Advance(events=events, feed=tuple(kept), done=done or len(kept) < len(forced))

    # --------------------------------------------------------------------------------------- output
    def _append(self, ids: Sequence[int]) -> tuple[tuple[EngineEvent, ...], bool]:
        """Add output ids; the events they make, and whether the output is complete (a stop id, or
        the limit)."""
        events = self.output.push(ids)
        if self.output.stopped:
            return (*events, *self._close("stop")), True
        if len(self.output.ids) >= self.limit:
            return (*events, *self._close("length")), True
        return tuple(events), False

    def _close(self, reason: str) -> tuple[EngineEvent, ...]:
        *events, finished = self.output.finish(reason)
        assert isinstance(finished, Finished)
        self._finished = finished
        return tuple(events)
