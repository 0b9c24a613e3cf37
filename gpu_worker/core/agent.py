"""Agent policy: what an engine's "model" does next, so load tests see realistic agent runs.

Given the tools offered and the agent state of the chain, `decide` returns either a function call
(`CallTool`: one of the offered tools, JSON arguments that fill its schema) or a final answer (`Answer`).
The policy is shared by every engine (the sim renders it directly; the torch engine steers its sampling
with it). It is deterministic for (job.seed, job.prompt, job.agent), as a model sampled with a fixed seed
is a function of its prompt: a run replays token for token, whether its turns arrive as deltas under a
cache key (WebSocket mode) or as full keyless chains (the HTTP baseline), so the modes compare exactly.
Different conversations differ through their prompts (their user messages) or their seeds.

Rules, in order:
- tool_choice "none", or no tools offered: answer.
- tool_choice "required": call a tool (chosen by the seeded RNG).
- tool_choice <a tool name>: call that tool.
- tool_choice "auto": call a tool while `agent.tool_calls_since_user_message < tool_calls_per_message`,
  then answer.

Per-request metadata keys (strings; each overrides the worker's default `AgentSettings`):

    tether.tool_calls       int, 0..64       function calls per user message before the final answer
    tether.answer_tokens    int, 1..32768    length of the final answer text, in tokens
    tether.argument_bytes   int, 2..65536    target size of a call's JSON arguments, in bytes

A bad value raises `InvalidRequest` (gRPC INVALID_ARGUMENT). Unknown keys are ignored.
"""

from __future__ import annotations

import json
import random
import sys
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from hashlib import blake2b
from typing import Any

from gpu_worker.core.errors import InvalidRequest
from gpu_worker.engines.base import GenerationJob, ToolSpec

__all__ = [
    "METADATA_ANSWER_TOKENS",
    "METADATA_ARGUMENT_BYTES",
    "METADATA_TOOL_CALLS",
    "AgentSettings",
    "Answer",
    "CallTool",
    "answer_pieces",
    "answer_text",
    "decide",
    "make_arguments",
    "tool_schema",
]

METADATA_TOOL_CALLS = "tether.tool_calls"
METADATA_ANSWER_TOKENS = "tether.answer_tokens"
METADATA_ARGUMENT_BYTES = "tether.argument_bytes"

# key -> (field, minimum, maximum)
_METADATA_FIELDS: dict[str, tuple[str, int, int]] = {
    METADATA_TOOL_CALLS: ("tool_calls_per_message", 0, 64),
    METADATA_ANSWER_TOKENS: ("answer_tokens", 1, 32_768),
    METADATA_ARGUMENT_BYTES: ("argument_bytes", 2, 65_536),
}
_SCHEMA_DEPTH = 4


def _settings_from_metadata(base: AgentSettings, metadata: Mapping[str, str]) -> AgentSettings:
    overrides: dict[str, int] = {}
    for key, (field, low, high) in _METADATA_FIELDS.items():
        raw = metadata.get(key)
        if raw is None:
            continue
        try:
            value = int(raw.strip())
        except ValueError:
            raise InvalidRequest(f"metadata {key}={raw[:40]!r} is not an integer") from None
        if not low <= value <= high:
            raise InvalidRequest(f"metadata {key}={value} is outside {low}..{high}")
        overrides[field] = value
    return replace(base, **overrides) if overrides else base


class _FromMetadata:
    """`AgentSettings.from_metadata(md)` starts from the defaults; `settings.from_metadata(md)` from
    `settings` (the worker's configured defaults). Both return a new, validated AgentSettings."""

    def __get__(
        self, obj: AgentSettings | None, owner: type[AgentSettings]
    ) -> Callable[[Mapping[str, str]], AgentSettings]:
        return partial(_settings_from_metadata, obj if obj is not None else owner())


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Shape of the simulated agent runs; see the module docstring for the per-request keys."""

    tool_calls_per_message: int = 3
    answer_tokens: int = 60
    argument_bytes: int = 80

    from_metadata = _FromMetadata()

    def __post_init__(self) -> None:
        for key, (field, low, high) in _METADATA_FIELDS.items():
            value = getattr(self, field)
            if not low <= value <= high:
                raise ValueError(f"{field}={value} is outside {low}..{high} (metadata key {key})")


@dataclass(frozen=True, slots=True)
class CallTool:
    """Emit a function call: `[CALL] name [ARGS] arguments [END]`."""

    call_id: str
    name: str
    arguments: str  # valid JSON text


@dataclass(frozen=True, slots=True)
class Answer:
    """Emit a final assistant message of (at most) `max_tokens` text tokens: `[ASSISTANT] text [END]`."""

    max_tokens: int


def decide(job: GenerationJob, settings: AgentSettings) -> CallTool | Answer:
    """The next output item of `job` under `settings` (deterministic for seed, prompt and agent state)."""
    rng = _rng(job, "decide")
    tool = _pick_tool(job, settings, rng)
    if tool is None:
        return Answer(max_tokens=settings.answer_tokens)
    call_id = "call_" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=24))
    arguments = make_arguments(tool, settings.argument_bytes, rng)
    return CallTool(call_id=call_id, name=tool.name, arguments=arguments)


def _pick_tool(job: GenerationJob, settings: AgentSettings, rng: random.Random) -> ToolSpec | None:
    choice = job.tool_choice or "auto"
    if choice == "none" or not job.tools:
        if choice not in ("auto", "none"):
            raise InvalidRequest(f"tool_choice {choice!r} needs tools, and none were offered")
        return None
    if choice == "required":
        return rng.choice(job.tools)
    if choice == "auto":
        if job.agent.tool_calls_since_user_message < settings.tool_calls_per_message:
            return rng.choice(job.tools)
        return None
    for tool in job.tools:
        if tool.name == choice:
            return tool
    raise InvalidRequest(f"tool_choice names {choice!r}, which is not among the offered tools")


def _rng(job: GenerationJob, purpose: str) -> random.Random:
    # blake2b, not hash(): str hashing is randomized per process and must not leak into the replay.
    agent = job.agent
    material = blake2b(_packed(job.prompt), digest_size=16)
    material.update(
        f"\0{purpose}\0{job.seed}\0{agent.user_messages}\0"
        f"{agent.tool_calls_since_user_message}\0{int(agent.last_item_is_tool_output)}".encode()
    )
    return random.Random(int.from_bytes(material.digest()[:8], "big"))


def _packed(tokens: Sequence[int]) -> bytes:
    packed = tokens if isinstance(tokens, array) and tokens.typecode == "I" else array("I", tokens)
    if sys.byteorder == "big":  # the same replay on every machine
        packed = array("I", packed)
        packed.byteswap()
    return packed.tobytes()


# ------------------------------------------------------------------------------------------ arguments
# Each word is one o200k token with its leading space (tests/unit/gpu_worker/test_agent.py checks it).
_WORD_BANK = (
    "the of to and in is it that for on with as this was by be are from or at an have not can will "
    "file line test code value result error function data list path name type check run build change "
    "update read write search found return call open close start stop add remove use make need show "
    "next step first last new old more less each all any some other same"
)
_WORDS = tuple(_WORD_BANK.split(" "))
_STARTERS = ("The", "This", "It", "We", "Next", "Then", "First", "Now")


def tool_schema(tool: ToolSpec) -> dict[str, Any]:
    """The tool's parameters schema as a dict; `InvalidRequest` when it is not a JSON object."""
    try:
        schema = json.loads(tool.parameters_json or "{}")
    except ValueError:
        raise InvalidRequest(f"tool {tool.name!r}: parameters_json is not valid JSON") from None
    if not isinstance(schema, dict):
        raise InvalidRequest(f"tool {tool.name!r}: parameters_json must be a JSON object")
    return schema


def make_arguments(tool: ToolSpec, target_bytes: int, rng: random.Random) -> str:
    """JSON arguments filling the tool's schema properties, padded (in string fields) to about
    `target_bytes` bytes. Tools without string properties yield what their schema allows."""
    values, strings = _fill_object(tool_schema(tool), rng, depth=0)
    text = json.dumps(values, ensure_ascii=False)
    deficit = target_bytes - len(text.encode())
    # Pad free text (queries, messages) rather than paths and URLs, unless there is nothing else.
    slots = [slot for slot in strings if not _is_identifier(slot[1])] or strings
    if deficit > 0 and slots:
        share = deficit // len(slots) + 1
        for holder, field in slots:
            holder[field] = _pad(str(holder[field]), share, rng)
        text = json.dumps(values, ensure_ascii=False)
    return text


# (container, key) of each string value that may be padded
_StringSlot = tuple[dict[str, Any], str]


def _fill_object(
    schema: Mapping[str, Any], rng: random.Random, depth: int
) -> tuple[dict[str, Any], list[_StringSlot]]:
    props = schema.get("properties")
    values: dict[str, Any] = {}
    strings: list[_StringSlot] = []
    if not isinstance(props, Mapping):
        return values, strings
    for name, prop in props.items():
        prop = prop if isinstance(prop, Mapping) else {}
        kind = _schema_type(prop)
        if kind == "object" and depth < _SCHEMA_DEPTH:
            values[name], inner = _fill_object(prop, rng, depth + 1)
            strings.extend(inner)
        else:
            values[name] = _scalar(str(name), prop, kind, rng)
            if kind == "string" and "enum" not in prop and "const" not in prop:
                strings.append((values, str(name)))
    return values, strings


def _schema_type(prop: Mapping[str, Any]) -> str:
    kind = prop.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return str(kind)


def _scalar(name: str, prop: Mapping[str, Any], kind: str, rng: random.Random) -> Any:
    if "const" in prop:
        return prop["const"]
    enum = prop.get("enum")
    if isinstance(enum, list) and enum:
        return rng.choice(enum)
    if kind == "integer":
        low, high = _bounds(prop, 0, 100)
        return rng.randint(int(low), int(high))
    if kind == "number":
        low, high = _bounds(prop, 0.0, 100.0)
        return round(rng.uniform(low, high), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "array":
        items = prop.get("items")
        item: Mapping[str, Any] = items if isinstance(items, Mapping) else {}
        return [_scalar(name, item, _schema_type(item), rng)]
    if kind == "object":
        return {}
    return _plausible_string(name, rng)


def _bounds(prop: Mapping[str, Any], low: float, high: float) -> tuple[float, float]:
    lo = prop.get("minimum", low)
    hi = prop.get("maximum", max(high, lo) if isinstance(lo, int | float) else high)
    if not isinstance(lo, int | float) or not isinstance(hi, int | float) or hi < lo:
        return low, high
    return float(lo), float(hi)


def _is_identifier(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in ("path", "file", "url"))


def _plausible_string(name: str, rng: random.Random) -> str:
    lowered = name.lower()
    if "path" in lowered or "file" in lowered:
        return f"src/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}.py"
    if "url" in lowered:
        return f"https://example.com/{rng.choice(_WORDS)}"
    return rng.choice(_WORDS)


def _pad(text: str, extra_bytes: int, rng: random.Random) -> str:
    parts = [text]
    size = 0
    while size < extra_bytes:
        word = rng.choice(_WORDS)
        parts.append(word)
        size += len(word) + 1
    return " ".join(parts)


# --------------------------------------------------------------------------------------------- answers
def answer_pieces(job: GenerationJob, tokens: int) -> list[str]:
    """Deterministic plausible answer text, as `tokens` pieces of exactly one o200k token each (common
    English words with their leading space, sentence starters and full stops), so the text encodes to
    exactly `tokens` ids and re-encodes to the same ids."""
    rng = _rng(job, "answer")
    pieces: list[str] = []
    sentence = 0  # pieces in the current sentence; 0 = at a sentence start
    length = rng.randint(6, 14)
    while len(pieces) < tokens:
        if sentence == 0:
            starter = rng.choice(_STARTERS)
            pieces.append(starter if not pieces else " " + starter)
            sentence = 1
        elif sentence >= length or len(pieces) == tokens - 1:
            pieces.append(".")
            sentence, length = 0, rng.randint(6, 14)
        else:
            pieces.append(" " + rng.choice(_WORDS))
            sentence += 1
    return pieces


def answer_text(job: GenerationJob, tokens: int) -> str:
    """`answer_pieces` joined: answer text of exactly `tokens` tokens."""
    return "".join(answer_pieces(job, tokens))
