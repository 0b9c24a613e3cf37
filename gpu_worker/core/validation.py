"""Request validation: every check a Generate request must pass before the worker spends anything on it.
Pure; raises InvalidRequest (gRPC INVALID_ARGUMENT) with a message that names the offending field."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from gpu_worker.core.agent import tool_schema
from gpu_worker.core.cache import ANON_PREFIX
from gpu_worker.core.errors import InvalidRequest, PreconditionFailed
from gpu_worker.engines.base import AgentState, ToolSpec
from gpu_worker.wire.chain import DIGEST_SIZE
from gpu_worker.wire.model import ModelDescription
from gpu_worker.wire.tokenizer import SPECIAL_BASE

__all__ = ["Limits", "WorkRequest", "validate"]

_O200K_VOCAB = 200_019  # ids in [_O200K_VOCAB, SPECIAL_BASE) are unassigned
_TOOL_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_CHOICES = ("auto", "none", "required")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on a single request (defaults: a 128k-context model)."""

    max_prompt_tokens: int = 131_072
    max_output_tokens: int = 32_768
    default_max_output_tokens: int = 1024
    max_tools: int = 128
    max_tool_schema_bytes: int = 64 * 1024
    max_metadata_entries: int = 32
    max_metadata_bytes: int = 4096
    max_id_bytes: int = 256  # request_id and cache_key
    max_retain_seconds: int = 43_200  # retain_seconds (12 h: the longest prompt_cache_options.ttl)

    def __post_init__(self) -> None:
        if min(self.max_prompt_tokens, self.max_output_tokens, self.default_max_output_tokens) < 1:
            raise ValueError("token limits must be >= 1")
        if self.max_retain_seconds < 0:
            raise ValueError("max_retain_seconds must be >= 0")
        if self.default_max_output_tokens > self.max_output_tokens:
            raise ValueError("default_max_output_tokens exceeds max_output_tokens")


@dataclass(frozen=True, slots=True)
class WorkRequest:
    """A Generate request as the worker's core sees it (the shell converts the protobuf message)."""

    request_id: str
    cache_key: str  # "" = keyless (full-context mode)
    base_len: int
    base_digest: bytes
    tokens: Sequence[int]  # new tokens (base_len > 0) or the whole chain (base_len == 0)
    max_output_tokens: int = 0  # 0 = the worker's default
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"
    metadata: Mapping[str, str] = field(default_factory=dict)
    model: str = ""
    agent: AgentState = field(default_factory=AgentState)
    seed: int = 0
    temperature: float = 0.0
    generate: bool = True
    tokenizer_fingerprint: str = ""  # "" = not checked
    top_p: float = 0.0  # 0 = 1.0 (off)
    retain_seconds: int = 0  # keep the committed chain ahead of unretained ones this long (0: LRU)

    @property
    def prompt_len(self) -> int:
        """Length of the whole prompt chain."""
        return self.base_len + len(self.tokens)


def validate(req: WorkRequest, limits: Limits, model: ModelDescription) -> WorkRequest:
    """The request with defaults filled in (max_output_tokens, tool_choice, top_p), or InvalidRequest;
    PreconditionFailed(tokenizer_mismatch) when it was rendered for another tokenizer than `model`'s."""
    if req.tokenizer_fingerprint and req.tokenizer_fingerprint != model.fingerprint:
        raise PreconditionFailed(
            "tokenizer_mismatch",
            f"the request was tokenized for tokenizer {req.tokenizer_fingerprint[:12]}; this worker serves "
            f"{model.name} with tokenizer {model.fingerprint[:12]}",
        )
    _check_ids(req, limits)
    _check_tokens(req, limits, model)
    max_output = req.max_output_tokens or limits.default_max_output_tokens
    if max_output > limits.max_output_tokens:
        raise InvalidRequest(f"max_output_tokens={max_output} exceeds the limit {limits.max_output_tokens}")
    if not math.isfinite(req.temperature) or not 0.0 <= req.temperature <= 2.0:
        raise InvalidRequest(f"temperature={req.temperature} is outside 0..2")
    if not math.isfinite(req.top_p) or not 0.0 <= req.top_p <= 1.0:
        raise InvalidRequest(f"top_p={req.top_p} is outside 0..1")
    _check_tools(req.tools, limits)
    choice = _check_tool_choice(req.tool_choice or "auto", req.tools)
    _check_metadata(req.metadata, limits)
    if req.retain_seconds > limits.max_retain_seconds:
        raise InvalidRequest(
            f"retain_seconds={req.retain_seconds} exceeds the limit {limits.max_retain_seconds}"
        )
    return replace(req, max_output_tokens=max_output, tool_choice=choice, top_p=req.top_p or 1.0)


def _check_ids(req: WorkRequest, limits: Limits) -> None:
    if len(req.request_id.encode()) > limits.max_id_bytes:
        raise InvalidRequest(f"request_id is longer than {limits.max_id_bytes} bytes")
    if len(req.cache_key.encode()) > limits.max_id_bytes:
        raise InvalidRequest(f"cache_key is longer than {limits.max_id_bytes} bytes")
    if req.cache_key.startswith(ANON_PREFIX):
        raise InvalidRequest(f"cache_key must not start with {ANON_PREFIX!r} (reserved for anonymous chains)")
    if req.base_len > 0 and not req.cache_key:
        raise InvalidRequest("base_len > 0 needs a cache_key")
    if req.base_len > 0 and len(req.base_digest) != DIGEST_SIZE:
        raise InvalidRequest(f"base_digest must be {DIGEST_SIZE} bytes when base_len > 0")


def _check_tokens(req: WorkRequest, limits: Limits, model: ModelDescription) -> None:
    if not req.tokens:
        raise InvalidRequest("tokens is empty" + (" (a delta must add tokens)" if req.base_len else ""))
    most = min(limits.max_prompt_tokens, model.context_length)
    if req.prompt_len > most:
        raise InvalidRequest(f"the prompt has {req.prompt_len} tokens; the limit is {most}")
    highest = max(req.tokens)
    if highest >= model.vocab_size:
        raise InvalidRequest(f"token id {highest} is outside the vocabulary (< {model.vocab_size})")
    if model.tokenizer_kind == "o200k" and highest >= _O200K_VOCAB:
        bad = next((t for t in req.tokens if _O200K_VOCAB <= t < SPECIAL_BASE), None)
        if bad is not None:
            raise InvalidRequest(f"token id {bad} is not assigned in the vocabulary")


def _check_tools(tools: Sequence[ToolSpec], limits: Limits) -> None:
    if len(tools) > limits.max_tools:
        raise InvalidRequest(f"{len(tools)} tools offered; the limit is {limits.max_tools}")
    seen: set[str] = set()
    for tool in tools:
        if not _TOOL_NAME.fullmatch(tool.name):
            raise InvalidRequest(f"tool name {tool.name[:80]!r} must match [A-Za-z0-9_.-]{{1,64}}")
        if tool.name in seen:
            raise InvalidRequest(f"tool {tool.name!r} is offered twice")
        seen.add(tool.name)
        if len(tool.parameters_json.encode()) > limits.max_tool_schema_bytes:
            raise InvalidRequest(f"tool {tool.name!r}: schema exceeds {limits.max_tool_schema_bytes} bytes")
        tool_schema(tool)


def _check_tool_choice(choice: str, tools: Sequence[ToolSpec]) -> str:
    if choice in _CHOICES:
        if choice == "required" and not tools:
            raise InvalidRequest('tool_choice "required" needs at least one tool')
        return choice
    if not any(tool.name == choice for tool in tools):
        raise InvalidRequest(f"tool_choice {choice[:80]!r} is neither auto/none/required nor an offered tool")
    return choice


def _check_metadata(metadata: Mapping[str, str], limits: Limits) -> None:
    if len(metadata) > limits.max_metadata_entries:
        raise InvalidRequest(f"{len(metadata)} metadata entries; the limit is {limits.max_metadata_entries}")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    if size > limits.max_metadata_bytes:
        raise InvalidRequest(f"metadata is {size} bytes; the limit is {limits.max_metadata_bytes}")
