"""The Engine protocol: what the worker's gRPC shell asks of a model engine.

The shell owns the cache *bookkeeping* (which chains exist, their tokens, LRU under a token budget; see
gpu_worker/core/cache.py) and tells the engine what it may reuse. The engine owns the *compute* and, for
engines with real tensors, the KV memory behind each chain. Contract:

- `generate(job)` is an async iterator of EngineEvents: first exactly one `Prefilled`, then text or
  function-call chunks, and last exactly one `Finished` carrying every generated token id. The generated
  ids are the chat-format rendering of the output item (gpu_worker/wire/chat.py), markers included.
- The engine may reuse the KV of the first `job.reuse_len` tokens of chain `job.reuse_from` (the same key
  for a continuation, another key for a prefix-cache hit); it must compute the rest of `job.prompt`.
- After `Finished`, the engine holds KV for `job.key` covering prompt + output (when it keeps KV at all).
- Cancellation (the consumer stops iterating / the task is cancelled) must free the batch slot and leave
  the engine's state for `job.key` either as before the call or dropped; the shell drops the chain then.
- `drop(key)` frees everything held for a chain; unknown keys are ignored.
- `job.stop` is set when the client asks to end the generation early (a steered response). An engine that
  honours it ends at its next token boundary while the output holds no tool call, with
  `Finished("length", the ids so far)`, exactly as if max_output_tokens had been reached there (and holds
  the KV as it would then). An output with a call, or an engine that does not look, runs to its end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from gpu_worker.wire.agent import AgentState, ToolSpec

__all__ = [
    "AgentState",
    "ArgsChunk",
    "CallStart",
    "Engine",
    "EngineEvent",
    "Finished",
    "GenerationJob",
    "Prefilled",
    "StopSignal",
    "TextChunk",
    "ToolCallCounts",
    "ToolSpec",
]


class StopSignal:
    """Set once when the generation should end early (see the module docstring); never cleared."""

    __slots__ = ("requested",)

    def __init__(self) -> None:
        self.requested = False

    def set(self) -> None:
        """Ask the engine to stop at its next token boundary."""
        self.requested = True


@dataclass(frozen=True, slots=True)
class GenerationJob:
    """One generation as the engine sees it."""

    request_id: str
    key: str  # the chain this job extends (a cache key, or an anonymous prefix-cache key)
    prompt: Sequence[int]  # the whole prompt chain
    reuse_from: str | None  # chain whose KV prefix may be reused (None: compute everything)
    reuse_len: int  # tokens of `reuse_from` that equal prompt[:reuse_len]
    max_output_tokens: int
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"
    agent: AgentState = field(default_factory=AgentState)
    metadata: Mapping[str, str] = field(default_factory=dict)
    seed: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    generate: bool = True
    stop: StopSignal = field(default_factory=StopSignal, compare=False, repr=False)

    @property
    def computed_len(self) -> int:
        """Prompt tokens the engine must prefill."""
        return len(self.prompt) - self.reuse_len


@dataclass(frozen=True, slots=True)
class Prefilled:
    """The prompt is in the KV cache; `queue_seconds` waited for a batch slot.

    `cached_tokens`: prompt tokens the engine itself served from its cache, for engines that keep their own
    prefix cache (vLLM); None means the engine reused exactly `job.reuse_len`, the shell's own count.
    """

    queue_seconds: float
    cached_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str
    tokens: int


@dataclass(frozen=True, slots=True)
class CallStart:
    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ArgsChunk:
    text: str
    tokens: int


@dataclass(frozen=True, slots=True)
class ToolCallCounts:
    """What a model's tool-call parser made of one output (gpu_worker/engines/model_output.py)."""

    calls: int = 0  # complete calls
    malformed: int = 0  # calls whose arguments never closed (the output ended inside them)
    text: int = 0  # call-like blocks left as text (not a call of an offered tool)


@dataclass(frozen=True, slots=True)
class Finished:
    finish_reason: str  # "stop" | "length" | "tool_call"
    output_ids: tuple[int, ...]
    # A report beside the output (not part of it, so not compared): None where no parser ran (no tools
    # offered, tool_choice "none", or an engine whose calls do not come from a model's text).
    tool_calls: ToolCallCounts | None = field(default=None, compare=False)


EngineEvent = Prefilled | TextChunk | CallStart | ArgsChunk | Finished


@runtime_checkable
class Engine(Protocol):
    """A model engine. Created outside the loop, started and stopped inside it."""

    name: str

    async def start(self) -> None:
        """Acquire resources (devices, background tasks). Called once, in the serving loop."""
        ...

    async def stop(self) -> None:
        """Release resources; in-flight generations are cancelled by the shell before this."""
        ...

    def generate(self, job: GenerationJob) -> AsyncIterator[EngineEvent]:
        """Run one generation; see the module docstring for the event order."""
        ...

    def drop(self, key: str) -> None:
        """Forget a chain's KV (evicted or dropped)."""
        ...
