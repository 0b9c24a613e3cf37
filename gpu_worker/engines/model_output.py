"""A real model's sampled ids as engine events: the part both real-model engines share (no I/O, no
torch, no vLLM).

The torch engine on a checkpoint (through gpu_worker/engines/model_plan.py, which adds its sampling
constraints for forced calls) and the vllm engine (gpu_worker/engines/vllm_engine.py) feed each sampled
id here and stream what comes out:

- **text**: the ids are detokenized by Tether's own `IncrementalDetokenizer` over the model's tokenizer
  (the one the worker describes, so the box and the worker read the same text), never by the engine's
  detokenizer; only complete UTF-8 goes out. A stop id (`ModelDescription.stop_token_ids`) ends the
  output and is never text;
- **tool calls**: when tools are offered and `tool_choice` is not "none", the text goes through the
  model's streaming tool-call parser (gpu_worker/core/toolcalls.py `parser_for`): `CallStart` with a call
  id made here (`call_` + 24 lower-case letters and digits, like the sim's), then `ArgsChunk`s as the
  arguments stream; text that is not a valid call of an offered tool stays text;
- **the finish reason**: `length` when the output was cut (the engine's token limit, or a stop: a
  steered response), else `tool_call` when it holds a complete call and no malformed one, else `stop`;
- `Finished` carries the exact sampled ids, the stop id included, so the chain holds what the model
  produced and nothing is re-rendered, and what the parser made of the output (`ToolCallCounts`:
  complete calls, malformed calls, call-like text left as text; None when no parser ran), which the
  worker counts in `tether_worker_tool_calls_total`.

A chunk's `tokens` counts the ids pushed since the previous chunk (ids that yielded no text yet, such as
the first half of a multi-byte character or a tool-call tag, are counted with the next chunk).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence

from gpu_worker.core.toolcalls import (
    CallArgs,
    CallBegin,
    ParsedEvent,
    TextOut,
    ToolCallParser,
    parser_for,
)
from gpu_worker.engines.base import (
    ArgsChunk,
    CallStart,
    EngineEvent,
    Finished,
    TextChunk,
    ToolCallCounts,
)
from gpu_worker.wire.model import ModelDescription
from gpu_worker.wire.tokenizer import IncrementalDetokenizer, Tokenizer

__all__ = ["FINISH_REASONS", "ModelOutput", "new_call_id"]

FINISH_REASONS = ("stop", "length")  # what an engine may report; "tool_call" is decided here
_CALL_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_call_id() -> str:
    """A server-made call id: `call_` and 24 random lower-case letters and digits."""
    return "call_" + "".join(secrets.choice(_CALL_ID_ALPHABET) for _ in range(24))


class ModelOutput:
    """One generation's output: push sampled ids as they come, then `finish` (see the module docstring)."""

    def __init__(
        self,
        description: ModelDescription,
        tokenizer: Tokenizer,
        *,
        tool_names: Iterable[str] = (),
        tool_choice: str = "auto",
        call_id: Callable[[], str] = new_call_id,
    ) -> None:
        names = tuple(tool_names)
        self.tokenizer = tokenizer
        self._stops = frozenset(description.stop_token_ids)
        self._detokenizer = IncrementalDetokenizer(tokenizer)
        self._parser: ToolCallParser | None = (
            parser_for(description.tool_call_format, names) if names and tool_choice != "none" else None
        )
        self._call_id = call_id
        self._ids: list[int] = []
        self._unreported = 0  # ids pushed since the last chunk
        self._held = 0  # characters the parser holds back (they may begin a call)
        self._finished = False
        self.stopped = False  # a stop id was pushed: the output is complete

    @property
    def ids(self) -> tuple[int, ...]:
        """Every id pushed so far (the stop id included)."""
        return tuple(self._ids)

    @property
    def stoppable(self) -> bool:
        """The output so far is plain text, all of it reported, and still open: a stop may end it here
        (no call has started, and the parser holds back nothing that may begin one)."""
        started = self._parser.stats.calls if self._parser is not None else 0
        return started == 0 and self._held == 0 and not self.stopped and not self._finished

    @property
    def counts(self) -> ToolCallCounts | None:
        """What the parser made of the output so far (None: no parser runs)."""
        if self._parser is None:
            return None
        stats = self._parser.stats
        return ToolCallCounts(
            calls=stats.calls - stats.malformed_calls,
            malformed=stats.malformed_calls,
            text=stats.rejected_blocks,
        )

    def push(self, ids: Sequence[int]) -> list[EngineEvent]:
        """Add newly sampled ids; the events their text completes. Ids after a stop id are refused."""
        if self._finished:
            raise ValueError("the output is finished")
        text = []
        for token in ids:
            if self.stopped:
                raise ValueError(f"id {token} after the stop id {self._ids[-1]}")
            self._ids.append(int(token))
            self._unreported += 1
            if token in self._stops:
                self.stopped = True
            else:
                text.append(self._detokenizer.push(int(token)))
        joined = "".join(text)
        if not joined:
            return []
        if self._parser is None:
            return self._events([TextOut(joined)])
        self._held += len(joined)
        return self._events(self._parser.feed(joined))

    def finish(self, reason: str) -> list[EngineEvent]:
        """The last events, ending with `Finished`. `reason` is the engine's: "stop" (a stop id, or the
        engine's own end of sequence) or "length" (its token limit, or a stop)."""
        if reason not in FINISH_REASONS:
            raise ValueError(f"finish reason must be one of {FINISH_REASONS}, got {reason!r}")
        if self._finished:
            raise ValueError("the output is finished")
        self._finished = True
        tail = self._detokenizer.flush()
        parsed: list[ParsedEvent] = []
        if self._parser is not None:
            parsed = [*self._parser.feed(tail), *self._parser.finish()] if tail else self._parser.finish()
        elif tail:
            parsed = [TextOut(tail)]
        events = self._events(parsed)
        counts = self.counts
        final = reason
        if reason == "stop" and counts is not None and counts.calls and not counts.malformed:
            final = "tool_call"
        events.append(Finished(finish_reason=final, output_ids=tuple(self._ids), tool_calls=counts))
        return events

    def _events(self, parsed: Sequence[ParsedEvent]) -> list[EngineEvent]:
        out: list[EngineEvent] = []
        for item in parsed:
            if isinstance(item, TextOut):
                self._held = max(0, self._held - len(item.text))
                if item.text:
                    out.append(TextChunk(text=item.text, tokens=self._take()))
            elif isinstance(item, CallBegin):
                out.append(CallStart(call_id=self._call_id(), name=item.name))
            elif isinstance(item, CallArgs):
                out.append(ArgsChunk(text=item.text, tokens=self._take()))
        return out

    def _take(self) -> int:
        count, self._unreported = self._unreported, 0
        return count
