"""The agent workload shared by the Locust users and `tether bench`. Pure: no I/O, no clock, no Locust.

An agent run is: instructions + tool definitions + a user message (optionally preceded by a history of
about `history_tokens` tokens), then `tool_calls` function calls whose outputs are `output_bytes` each,
then a final answer. The texts come from a `TextSource`: the benchmark and Locust pass
`loadtest.corpus.Corpus` (real text from the Python standard library, deterministic per seed and
`content_key`); the default `SYNTHETIC` generates lines, which compress far better than real output.
Every request carries `prompt_cache_key` (the run id), as the SDK-based agents send it, so a stateless
request can meet its conversation's worker under the box's affinity routing.

The sim engine's agent policy makes the calls: the request carries `metadata["tether.tool_calls"]`
(gpu_worker/core/agent.py), so the model calls a tool while fewer than that many calls followed the last
user message, then answers. A model that writes its own output (the torch engine on a real checkpoint) is
asked instead: `AgentShape(forced_calls=True)` sends tool_choice "required" until `T` calls followed the
user message, then "none".

`AgentRun` is the client side of one run in one of the three modes:

    ws            WebSocket, store:false, previous_response_id + only the new items (deltas)
    http_full     HTTP POST, store:false, the whole history every turn (the stateless baseline)
    http_chained  HTTP POST, store:true, previous_response_id + only the new items

    run = AgentRun("ws", AgentShape(tool_calls=20, output_bytes=4096), run_id="a1-r0", texts=corpus)
    while not run.finished:
        body = run.next_body()          # the response.create body of the next turn (a dict)
        ... send it, read the events up to the terminal one ...
        run.record(response)            # the terminal event's `response` object

After the final answer `continue_session()` starts a new task in the same conversation (a new user
message, the history kept), which is how a long-lived agent keeps its history while it works.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import orjson

# The same coding agent as the demo: one definition of its instructions, tools and first message.
from tether.core.agent_run import INSTRUCTIONS, TOOLS, USER_MESSAGE, user_message

Mode = Literal["ws", "http_full", "http_chained"]
MODES: Final[tuple[Mode, ...]] = ("ws", "http_full", "http_chained")
MODE_LABELS: Final[dict[Mode, str]] = {
    "ws": "WebSocket (store:false, deltas)",
    "http_full": "HTTP full context (stateless)",
    "http_chained": "HTTP chained (previous_response_id, store:true)",
}
METADATA_TOOL_CALLS: Final = "tether.tool_calls"  # gpu_worker/core/agent.py
MAX_TOOL_CALLS: Final = 64  # the agent policy's bound on tether.tool_calls
MAX_OUTPUT_BYTES: Final = 1 << 20
MAX_HISTORY_TOKENS: Final = 200_000
DEFAULT_MODEL: Final = "tether-sim"
DEV_API_KEY: Final = "tether-dev-key"  # what `tether up` accepts by default
FIRST_OUTPUT_EVENTS: Final = frozenset(
    {"response.output_text.delta", "response.function_call_arguments.delta"}
)
TERMINAL_EVENTS: Final = frozenset({"response.completed", "response.failed", "response.incomplete"})

FORCED_MAX_OUTPUT_TOKENS: Final = 16  # a real model's final answer, cut short
NEXT_TASK_MESSAGE: Final = "Thanks. Now check the other callers of parse_timeout the same way."

# Each entry is one o200k token including its leading space, so N words make N tokens (pre-tokenization
# splits before every space-led word); tests/unit/loadtest checks this against the real tokenizer.
_WORD_BANK: Final = (
    "the of to and in is it that for on with as this was by be are from or at an have not can will "
    "file line test code value result error function data list path name type check run build "
    "change update read write search found return call open close start stop add remove use make"
)
_HISTORY_WORDS: Final = tuple(" " + word for word in _WORD_BANK.split(" "))


class WorkloadError(ValueError):
    """A workload parameter is out of range, or a response does not fit the run."""


@dataclass(frozen=True, slots=True)
class AgentShape:
    """What one agent run looks like (see the module docstring)."""

    tool_calls: int = 20
    output_bytes: int = 4096
    history_tokens: int = 0
    model: str = DEFAULT_MODEL
    # A model that writes its own output (the torch engine on a real checkpoint) is asked for its calls:
    # tool_choice "required" until T calls followed the user message, then "none"; greedy and short.
    forced_calls: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.tool_calls <= MAX_TOOL_CALLS:
            raise WorkloadError(f"tool_calls={self.tool_calls} is outside 0..{MAX_TOOL_CALLS}")
        if not 1 <= self.output_bytes <= MAX_OUTPUT_BYTES:
            raise WorkloadError(f"output_bytes={self.output_bytes} is outside 1..{MAX_OUTPUT_BYTES}")
        if not 0 <= self.history_tokens <= MAX_HISTORY_TOKENS:
            raise WorkloadError(f"history_tokens={self.history_tokens} is outside 0..{MAX_HISTORY_TOKENS}")
        if not self.model:
            raise WorkloadError("model must not be empty")

    @property
    def turns(self) -> int:
        """Responses in one run: one per tool call plus the final answer."""
        return self.tool_calls + 1


def api_key(given: str | None, environ: Mapping[str, str]) -> str:
    """The bearer key a load-test user sends: `--api-key` (or TETHER_LOAD_API_KEY) when given, else
    OPENAI_API_KEY as every OpenAI client reads it, else the key of a local `tether up`."""
    return given or environ.get("OPENAI_API_KEY") or DEV_API_KEY


def check_mode(mode: str) -> Mode:
    """`mode` as a Mode; WorkloadError when it is not one."""
    for known in MODES:
        if mode == known:
            return known
    raise WorkloadError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")


def dumps(body: Mapping[str, Any]) -> bytes:
    """The JSON bytes a client sends for `body` (compact, UTF-8, as the openai SDK's HTTP client
    serializes it): what both sides count as payload."""
    return orjson.dumps(body)


class TextSource(Protocol):
    """Where an agent run's tool outputs and long first message come from: `loadtest/corpus.py` (real text
    from the Python standard library, what the benchmark and Locust use) or `SYNTHETIC`."""

    def tool_output(self, name: str, key: str, size: int) -> str:
        """What tool `name` returns for call `key` (deterministic): exactly `size` UTF-8 bytes."""
        ...

    def history(self, key: str, tokens: int) -> str:
        """About `tokens` o200k tokens of text for a long first message (deterministic per `key`)."""
        ...


class SyntheticText:
    """Generated lines and one-token filler words: cheap and exact in tokens, but far more compressible
    than real tool output (use loadtest/corpus.py where compression or tokenization matters)."""

    def tool_output(self, name: str, key: str, size: int) -> str:
        """`tool_output(key, name, size)`."""
        return tool_output(key, name, size)

    def history(self, key: str, tokens: int) -> str:
        """`history_text(tokens, key)`."""
        return history_text(tokens, key)


SYNTHETIC: Final = SyntheticText()


def tool_output(call_id: str, name: str, size: int) -> str:
    """A deterministic, plausible tool output of exactly `size` ASCII bytes (generated lines)."""
    seed = hashlib.blake2b(f"{name}\0{call_id}".encode(), digest_size=8).hexdigest()
    lines: list[str] = []
    total = 0
    number = 0
    while total < size:
        number += 1
        line = _output_line(name, number, seed)
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)[:size]


def _output_line(name: str, number: int, seed: str) -> str:
    if name == "grep":
        return (
            f"src/app/module_{number % 9}.py:{number * 13}: timeout = parse_timeout(raw_{seed[number % 16]})"
        )
    if name == "run_tests":
        return f"tests/test_config.py::test_case_{number}_{seed[number % 16]} PASSED [{min(99, number)}%]"
    return f"    value_{number} = settings.get('timeout_{seed[number % 16]}', {number * 7})  # line {number}"


def history_text(tokens: int, salt: str) -> str:
    """About `tokens` o200k tokens of filler text, unique to `salt` from its first token (so that no two
    runs share a prefix block in the worker's cache)."""
    if tokens <= 0:
        return ""
    digest = hashlib.blake2b(salt.encode(), digest_size=8).digest()
    picks = [_HISTORY_WORDS[b % len(_HISTORY_WORDS)] for b in digest]
    head = f"Session {salt}:" + "".join(picks)
    body_tokens = max(tokens - len(picks) - 8, 0)  # the head is about 8 + len(picks) tokens
    words = _HISTORY_WORDS
    return head + "".join(words[(i * 7 + i // len(words)) % len(words)] for i in range(body_tokens))


@dataclass(frozen=True, slots=True)
class TurnResult:
    """What the client learned from one terminal response."""

    response_id: str
    status: str
    calls: tuple[dict[str, str], ...]  # function_call items: call_id, name, arguments
    answer: str | None  # the final answer text, when the model answered
    input_tokens: int
    cached_tokens: int
    output_tokens: int


def parse_response(response: Mapping[str, Any]) -> TurnResult:
    """Read a terminal ResponseResource (the `response` of response.completed, or an HTTP JSON body)."""
    output = response.get("output") or []
    calls: list[dict[str, str]] = []
    texts: list[str] = []
    for item in output:
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "function_call":
            calls.append(
                {
                    "call_id": str(item.get("call_id", "")),
                    "name": str(item.get("name", "")),
                    "arguments": str(item.get("arguments", "")),
                }
            )
        elif item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, Mapping):
                    texts.append(str(part.get("text", "")))
    usage = response.get("usage") or {}
    details = usage.get("input_tokens_details") or {}
    return TurnResult(
        response_id=str(response.get("id", "")),
        status=str(response.get("status", "")),
        calls=tuple(calls),
        answer="".join(texts) if not calls else None,
        input_tokens=int(usage.get("input_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
    )


@dataclass
class AgentRun:
    """The client side of one agent run in one mode; see the module docstring."""

    mode: Mode
    shape: AgentShape
    run_id: str
    texts: TextSource = SYNTHETIC
    # Picks the texts (tool outputs, history); the run id by default. Equal keys give equal texts, so the
    # benchmark's arms send the same text while their run ids (and so their cached prefixes) differ.
    content_key: str = ""
    turn: int = 0  # turns recorded so far
    tool_calls: int = 0
    finished: bool = False
    previous_id: str | None = None
    _pending: list[dict[str, Any]] = field(default_factory=list)
    _history: list[dict[str, Any]] = field(default_factory=list)
    _task_calls: int = 0  # calls since the last user message

    def __post_init__(self) -> None:
        self.mode = check_mode(self.mode)
        # Every run opens with its own id, as real tasks differ: no two runs share a cached prefix, so a
        # stateless client cannot borrow another run's cache in the worker.
        self.content_key = self.content_key or self.run_id
        text = f"[task {self.run_id}] {USER_MESSAGE}"
        if self.shape.history_tokens:
            history = self.texts.history(self.content_key, self.shape.history_tokens)
            text = f"Session {self.run_id}:\n{history}\n\n{USER_MESSAGE}"
        self._pending = [user_message(text)]

    @property
    def metadata(self) -> dict[str, str]:
        """The per-request metadata that sets the sim agent's tool calls per user message."""
        return {METADATA_TOOL_CALLS: str(self.shape.tool_calls)}

    def next_body(self) -> dict[str, Any]:
        """The body of the next turn (for WebSocket mode, with "type": "response.create")."""
        if self.finished:
            raise WorkloadError(f"run {self.run_id} is finished")
        body: dict[str, Any] = {"model": self.shape.model, "instructions": INSTRUCTIONS, "tools": list(TOOLS)}
        if self.mode == "http_full":
            body.update(input=[*self._history, *self._pending], store=False, stream=True)
        else:
            body.update(input=list(self._pending), store=self.mode == "http_chained")
            if self.previous_id is not None:
                body["previous_response_id"] = self.previous_id
            if self.mode == "ws":
                body = {"type": "response.create", **body}
            else:
                body["stream"] = True
        body["prompt_cache_key"] = self.run_id
        body["metadata"] = self.metadata
        if self.shape.forced_calls:
            body["temperature"] = 0
            if self._task_calls < self.shape.tool_calls:
                body["tool_choice"] = "required"  # a call ends on its own, limited by the box's default
            else:
                body.update(tool_choice="none", max_output_tokens=FORCED_MAX_OUTPUT_TOKENS)
        return body

    def record(self, response: Mapping[str, Any]) -> TurnResult:
        """Take the terminal response of the turn just sent; queue the tool outputs it asks for."""
        result = parse_response(response)
        # A forced run's answer is cut at FORCED_MAX_OUTPUT_TOKENS: "incomplete" ends it like "completed".
        cut = self.shape.forced_calls and result.status == "incomplete" and not result.calls
        if result.status != "completed" and not cut:
            raise WorkloadError(
                f"turn {self.turn + 1} of {self.run_id} ended {result.status or 'without status'}"
            )
        self.turn += 1
        self._history.extend(self._pending)
        self._pending = []
        self.previous_id = result.response_id
        if result.calls:
            self._task_calls += len(result.calls)
            for call in result.calls:
                self._history.append({"type": "function_call", **call})
                key = f"{self.content_key}/c{self.tool_calls}"
                output = self.texts.tool_output(call["name"], key, self.shape.output_bytes)
                self.tool_calls += 1
                self._pending.append(
                    {"type": "function_call_output", "call_id": call["call_id"], "output": output}
                )
        else:
            self._history.append({"type": "message", "role": "assistant", "content": result.answer or ""})
            self.finished = True
        if self.turn > self.shape.turns + 1 and not self.finished:
            raise WorkloadError(f"run {self.run_id} did not answer within {self.shape.turns + 1} turns")
        return result

    def continue_session(self) -> None:
        """After the final answer: a new task in the same conversation (history kept, counters reset)."""
        if not self.finished:
            raise WorkloadError("continue_session() needs a finished run")
        self.finished = False
        self.turn = 0
        self._task_calls = 0
        self._pending = [user_message(NEXT_TASK_MESSAGE)]

    def history_items(self) -> Sequence[dict[str, Any]]:
        """The conversation so far, as a stateless client holds it."""
        return tuple(self._history)


class TurnError(Exception):
    """A turn did not complete: an error event or status, a failed response, a lost socket, a timeout."""


@dataclass(slots=True)
class TurnEvents:
    """One turn's server events as the client reads them: time to first output and the terminal response.

    Both transports feed it: WebSocket clients with each frame's parsed event, SSE clients with the event
    type and its raw data (parsed here only for the few events that need it, not for every delta)."""

    started: float  # perf_counter() when the request was sent
    ttft: float | None = None
    terminal: dict[str, Any] | None = None

    def see(self, kind: str, now: float, data: bytes = b"", event: Mapping[str, Any] | None = None) -> bool:
        """Account one event; True when it ends the turn. An `error` event raises TurnError."""
        if self.ttft is None and kind in FIRST_OUTPUT_EVENTS:
            self.ttft = now - self.started
        if kind == "error":
            body = event if event is not None else orjson.loads(data)
            error = body.get("error") or body
            raise TurnError(f"error event {error.get('code')}: {str(error.get('message'))[:200]}")
        if kind in TERMINAL_EVENTS:
            self.terminal = dict((event if event is not None else orjson.loads(data))["response"])
            return True
        return False

    def response(self) -> dict[str, Any]:
        """The terminal response; TurnError when the stream ended before one."""
        if self.terminal is None:
            raise TurnError("the event stream ended without a terminal event")
        return self.terminal


class SseParser:
    """Splits an SSE byte stream into (event type, data bytes); `[DONE]` is dropped. Parsing the data
    JSON is left to the caller, so that it can skip the deltas it does not need."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        """The events completed by `chunk`."""
        self._buffer += chunk
        events: list[tuple[str, bytes]] = []
        while (end := self._buffer.find(b"\n\n")) >= 0:
            block, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            kind, data = "", b""
            for line in block.split(b"\n"):
                if line.startswith(b"event: "):
                    kind = line[7:].decode()
                elif line.startswith(b"data: "):
                    data = line[6:]
            if data != b"[DONE]":
                events.append((kind, data))
        return events
