"""Items to tokens, and what the box knows of each token chain (its tokens, digest, what the worker holds).

A chain is `header + items + outputs`, rendered by the model's chat format (gpu_worker/wire/chat): each
turn appends the closing of the last output, the new items and the generation prompt; the outputs are
the model's own sampled ids. The header (instructions and tools) is re-sent on every turn and never
carried over from a previous response:

- same header as the chain's and the base response is the chain's tip: the turn extends the chain in
  place; the worker is sent only the new items' tokens (held_len/held_digest = what the last turn's Done
  reported). Cost: O(new items), never O(history).
- a different header, a base response that is not the tip (a fork), or a chain busy with another turn:
  a new chain `new header + base body + items` under a new cache key, sent whole (held_len 0); the
  worker's block-hash prefix cache still reuses what matches. Cost: O(history), as it must be.

Tokens live in `array("I")` (4 bytes a token). The worker's output ids are appended on commit, so the
box's copy equals what the worker holds; its digest (the wire ChainDigest, keeping only the last block
hash) is extended by the new tokens only and checked against the worker's Done digest (a mismatch
makes the next turn a full resend, not a wrong delta).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from hashlib import blake2b

import orjson

from api_box.core.errors import ContextLengthExceeded, UnknownCallId
from api_box.core.protocol import (
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputItem,
    MessageItem,
)
from gpu_worker.wire.chain import ChainDigest
from gpu_worker.wire.chat import (
    ChatItem,
    ChatTool,
    Message,
    Renderer,
    TetherRenderer,
    ToolCall,
    ToolOutput,
)

# Tether's own format (the sim and dummy weights): the renderer for boxes whose workers do not describe a
# model of their own, and for the tests of the chain logic.
DEFAULT_RENDERER: Renderer = TetherRenderer()


def chat_item(item: InputItem) -> ChatItem:
    """The renderer's view of an input item (tools by the name the model sees)."""
    if isinstance(item, MessageItem):
        return Message(item.role, item.text)
    if isinstance(item, FunctionCallItem):
        return ToolCall(item.call_id, item.model_name, item.arguments)
    return ToolOutput(item.call_id, item.output)


def chat_tools(tools: Sequence[FunctionTool]) -> tuple[ChatTool, ...]:
    """The tools as the renderer offers them to the model."""
    return tuple(ChatTool(t.model_name, t.description or "", t.parameters or {}) for t in tools)


def render_items(items: Iterable[InputItem], renderer: Renderer = DEFAULT_RENDERER) -> list[int]:
    """Tokens of several items appended to a closed chain."""
    return renderer.items([chat_item(item) for item in items])


@dataclass(frozen=True, slots=True)
class Header:
    """The rendered header of a request: instructions and tools, identified by a digest of both."""

    key: bytes
    tokens: tuple[int, ...]


def header_key(
    instructions: str | None, tools: Sequence[FunctionTool], renderer_key: str = DEFAULT_RENDERER.format
) -> bytes:
    """Identity of a header: equal keys render to equal tokens. Cost O(instructions + tools)."""
    h = blake2b(digest_size=16)
    h.update(renderer_key.encode())
    h.update(b"\x00")
    h.update((instructions or "").encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    for tool in chat_tools(tools):
        h.update(orjson.dumps([tool.name, tool.description, tool.parameters], option=orjson.OPT_SORT_KEYS))
    return h.digest()


class HeaderCache:
    """Rendered headers by key (LRU, bounded): agents re-send the same instructions and tools every turn.

    `renderer_key` names the renderer (the model's tokenizer fingerprint and chat format): a chain never
    continues in place under another model's header.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._max = max_entries
        self._entries: OrderedDict[bytes, Header] = OrderedDict()

    def header(
        self,
        instructions: str | None,
        tools: Sequence[FunctionTool],
        *,
        renderer: Renderer = DEFAULT_RENDERER,
        renderer_key: str = DEFAULT_RENDERER.format,
    ) -> Header:
        """The header for these instructions and tools, rendered only on a miss."""
        key = header_key(instructions, tools, renderer_key)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        header = Header(key, tuple(renderer.header(instructions, chat_tools(tools))))
        self._entries[key] = header
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return header


@dataclass(frozen=True, slots=True)
class AgentCounters:
    """What the worker's agent policy knows of a chain (sent as AgentState)."""

    tool_calls_since_user_message: int = 0
    user_messages: int = 0
    last_item_is_tool_output: bool = False

    def after_items(self, items: Iterable[InputItem]) -> AgentCounters:
        """The counters once `items` are appended to the chain."""
        calls, users, last_output = (
            self.tool_calls_since_user_message,
            self.user_messages,
            self.last_item_is_tool_output,
        )
        for item in items:
            last_output = isinstance(item, FunctionCallOutputItem)
            if isinstance(item, MessageItem) and item.role == "user":
                users, calls = users + 1, 0
            elif isinstance(item, FunctionCallItem):
                calls += 1
        return AgentCounters(calls, users, last_output)

    def after_output(self, function_calls: int) -> AgentCounters:
        """The counters once the model's output (with `function_calls` calls) is appended."""
        return replace(
            self,
            tool_calls_since_user_message=self.tool_calls_since_user_message + function_calls,
            last_item_is_tool_output=False,
        )


class ChainState:
    """One token chain: the box's copy of the tokens, their digest, and what the worker holds."""

    __slots__ = (
        "agent",
        "busy",
        "cache_key",
        "call_ids",
        "digest",
        "header_key",
        "header_len",
        "held_digest",
        "held_len",
        "tokens",
    )

    def __init__(
        self,
        cache_key: str,
        header: Header,
        tokens: array[int],
        *,
        call_ids: dict[str, int] | None = None,
        agent: AgentCounters | None = None,
    ) -> None:
        self.cache_key = cache_key
        self.header_key = header.key
        self.header_len = len(header.tokens)
        self.tokens = tokens
        self.digest = ChainDigest(tokens, keep_blocks=False)
        self.held_len = 0
        self.held_digest = b""
        self.call_ids: dict[str, int] = call_ids if call_ids is not None else {}
        self.agent = agent if agent is not None else AgentCounters()
        self.busy = False

    @property
    def length(self) -> int:
        """Committed tokens (the digest covers exactly these)."""
        return len(self.digest)

    def nbytes(self) -> int:
        """Bytes this chain holds (tokens, call ids), for the store's accounting."""
        return self.tokens.itemsize * len(self.tokens) + 96 * len(self.call_ids) + 512


@dataclass(frozen=True, slots=True)
class ChainRef:
    """A response's place in a chain: the chain and the length it had when the response completed."""

    chain: ChainState
    length: int
    agent: AgentCounters
    # Bytes a stateless client would have uploaded to send this whole context (the chain's requests and
    # outputs): what tether_box_full_context_bytes_total counts against the bytes actually received.
    context_bytes: int = 0


@dataclass(slots=True)
class PendingTurn:
    """A turn in flight: the chain already holds the new input tokens (uncommitted) from `start` on."""

    chain: ChainState
    start: int  # committed length before this turn
    held_len: int  # what to tell the worker it holds
    held_digest: bytes
    agent: AgentCounters  # counters for the request (after this turn's items)
    new_call_ids: dict[str, int]
    fresh: bool  # a new chain (first turn, fork or header change): sent whole
    start_reason: str = ""  # why a new chain (CHAIN_START_REASONS); "" when the turn extends its base

    @property
    def prompt_len(self) -> int:
        """Tokens of the whole prompt chain."""
        return len(self.chain.tokens)


def check_call_ids(items: Sequence[InputItem], known: dict[str, int], known_limit: int) -> None:
    """Every function_call_output must answer a call of the chain (at position <= known_limit) or of items."""
    seen: set[str] = set()
    for item in items:
        if isinstance(item, FunctionCallItem):
            seen.add(item.call_id)
        elif isinstance(item, FunctionCallOutputItem) and item.call_id not in seen:
            position = known.get(item.call_id)
            if position is None or position > known_limit:
                raise UnknownCallId(
                    f"No tool call found for function call output with call_id {item.call_id}.", param="input"
                )


def begin_turn(
    base: ChainRef | None,
    header: Header,
    items: Sequence[InputItem],
    *,
    new_cache_key: str,
    max_tokens: int,
    renderer: Renderer = DEFAULT_RENDERER,
    generate: bool = True,
    rendered: Sequence[int] | None = None,
) -> PendingTurn:
    """Validate the items against the base chain and append their tokens (see the module docstring).

    `rendered`: the items' tokens when the caller rendered them already (off the event loop, for a large
    request). Raises UnknownCallId or ContextLengthExceeded; nothing is changed then.
    """
    known = base.chain.call_ids if base is not None else {}
    check_call_ids(items, known, base.length if base is not None else 0)
    agent = (base.agent if base is not None else AgentCounters()).after_items(items)
    reason = chain_start_reason(base, header)
    if base is not None and not reason:
        chain, fresh = base.chain, False
        held_len, held_digest = chain.held_len, chain.held_digest
    else:
        chain, fresh = _new_chain(base, header, new_cache_key), True
        held_len, held_digest = 0, b""
    start = chain.length
    # Close the model's last output (the format's end-of-turn text), the new items, then the prompt the
    # model generates after; every call of the turn is answered by the end of its items.
    item_tokens = renderer.closing(chain.tokens)
    item_tokens += render_items(items, renderer) if rendered is None else rendered
    call_offsets = dict.fromkeys(_call_ids(items), len(item_tokens))
    if generate:
        item_tokens += renderer.generation_prompt()
    if start + len(item_tokens) > max_tokens:
        raise ContextLengthExceeded(
            f"This chain would hold {start + len(item_tokens)} tokens; the limit is {max_tokens}.",
            param="input",
        )
    chain.tokens.extend(item_tokens)
    chain.busy = True
    new_call_ids = {call_id: start + offset for call_id, offset in call_offsets.items()}
    return PendingTurn(chain, start, held_len, held_digest, agent, new_call_ids, fresh, reason)


# Why a turn starts a new chain instead of appending to its base's: a new conversation, a fork (the base is
# not the chain's tip), a header change (other instructions or tools, or another model's format), or a
# chain busy with another turn. Every chat format is append-only, so these are the only reasons.
CHAIN_START_REASONS = ("new", "fork", "header", "busy")


def chain_start_reason(base: ChainRef | None, header: Header) -> str:
    """Why a turn on `base` with `header` starts a new chain; "" when it extends the chain in place."""
    if base is None:
        return "new"
    chain = base.chain
    if chain.busy:
        return "busy"
    if base.length != chain.length:
        return "fork"
    return "header" if header.key != chain.header_key else ""


def _new_chain(base: ChainRef | None, header: Header, cache_key: str) -> ChainState:
    tokens = array("I", header.tokens)
    call_ids: dict[str, int] = {}
    if base is not None:
        old = base.chain
        shift = len(header.tokens) - old.header_len
        tokens.extend(old.tokens[old.header_len : base.length])
        call_ids = {cid: pos + shift for cid, pos in old.call_ids.items() if pos <= base.length}
    return ChainState(cache_key, header, tokens, call_ids=call_ids, agent=base.agent if base else None)


def _call_ids(items: Sequence[InputItem]) -> list[str]:
    return [item.call_id for item in items if isinstance(item, FunctionCallItem)]


def commit_turn(
    turn: PendingTurn,
    output_ids: Sequence[int],
    output_call_ids: Sequence[str],
    *,
    worker_len: int,
    worker_digest: bytes,
    worker_holds: bool = True,
    context_bytes: int = 0,
) -> ChainRef:
    """Append the worker's output, record what the worker holds, and return the new response's place.

    `worker_holds` is False for a keyless (stateless) request: the worker keeps nothing under our key.
    """
    chain = turn.chain
    chain.tokens.extend(output_ids)
    chain.digest.extend(chain.tokens[turn.start :])
    chain.call_ids.update(turn.new_call_ids)
    for call_id in output_call_ids:
        chain.call_ids[call_id] = chain.length
    chain.agent = turn.agent.after_output(len(output_call_ids))
    consistent = worker_holds and worker_len == chain.length and worker_digest == chain.digest.digest()
    chain.held_len, chain.held_digest = (worker_len, worker_digest) if consistent else (0, b"")
    chain.busy = False
    return ChainRef(chain, chain.length, chain.agent, context_bytes)


def abort_turn(turn: PendingTurn) -> None:
    """Undo a turn that did not complete: drop its uncommitted tokens and free the chain."""
    del turn.chain.tokens[turn.start :]
    turn.chain.busy = False
