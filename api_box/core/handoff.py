"""What a cold store (Redis, docs/handoff.md) writes and restores: turn records and chain snapshots.

Write-behind appends one `TurnRecord` per completed store:true response. A record is either *whole*
(`base_response_id` None: `tokens` is the entire chain — a first turn, a fork, a header change, or a
continuation of a response that was never persisted) or a *delta* over the chain of `base_response_id`
(`tokens` are the tokens after its first `base_len`). `snapshot_from_turns` folds a whole record and its
deltas into the `ChainSnapshot` a restore returns, and `record_from_snapshot` turns that into a live
ResponseRecord. Both encode to bytes (`to_bytes`/`from_bytes`, versioned) and round-trip exactly.

Format version 1 (`FORMAT_VERSION`): 4 magic bytes (`TTR1` a turn record, `TCS1` a snapshot), a 4-byte
little-endian header length, a JSON header (`"v": 1`, the scalar fields, and `"blobs"`: the lengths of
the ResponseResource and input-items blobs that follow), the blobs, then the tokens as little-endian
uint32. A reader refuses any other magic or version with ValueError (a cold store treats that as a miss),
so a future version 2 can be rolled out beside version 1 under new magic bytes.

Cold-store layout (`ColdKeys`, used by api_box/io/redis_store.py): per tenant, one key per response
holding its whole TurnRecord, and one append-only list per chain (cache key) holding its records
`slim()` (without the two blobs). `chain_path` picks a response's ancestry out of such a list: boxes
that owned the chain one after the other append to the same list, so it may also hold sibling branches.
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import orjson

from api_box.core.chain import AgentCounters, ChainRef, ChainState, Header
from api_box.core.store import ResponseRecord

FORMAT_VERSION = 1
_TURN_MAGIC = b"TTR1"
_SNAPSHOT_MAGIC = b"TCS1"


def _tokens_to_bytes(tokens: Sequence[int]) -> bytes:
    packed = array("I", tokens)
    if sys.byteorder == "big":  # little-endian on the wire
        packed.byteswap()
    return packed.tobytes()


def _tokens_from_bytes(raw: bytes) -> array[int]:
    if len(raw) % 4:
        raise ValueError("token bytes are not a multiple of 4")
    tokens = array("I")
    tokens.frombytes(raw)
    if sys.byteorder == "big":
        tokens.byteswap()
    return tokens


def _frame(magic: bytes, meta: dict[str, Any], tokens: Sequence[int], blobs: Sequence[bytes]) -> bytes:
    return _frame_bytes(magic, meta, _tokens_to_bytes(tokens), blobs)


def _frame_bytes(magic: bytes, meta: dict[str, Any], token_bytes: bytes, blobs: Sequence[bytes]) -> bytes:
    head = orjson.dumps({**meta, "blobs": [len(b) for b in blobs]})
    return b"".join([magic, len(head).to_bytes(4, "little"), head, *blobs, token_bytes])


def _unframe(magic: bytes, raw: bytes) -> tuple[dict[str, Any], list[bytes], array[int]]:
    meta, blobs, token_bytes = _split(magic, raw)
    return meta, blobs, _tokens_from_bytes(token_bytes)


def _split(magic: bytes, raw: bytes) -> tuple[dict[str, Any], list[bytes], bytes]:
    """Header, blobs and the raw token bytes of a record (the tokens are not decoded)."""
    if raw[:4] != magic:
        raise ValueError("not a Tether handoff record of this kind/version")
    head_len = int.from_bytes(raw[4:8], "little")
    if 8 + head_len > len(raw):
        raise ValueError("truncated handoff record")
    try:
        meta = orjson.loads(raw[8 : 8 + head_len])
    except orjson.JSONDecodeError:
        raise ValueError("corrupt handoff record header") from None
    if not isinstance(meta, dict) or meta.get("v") != FORMAT_VERSION:
        raise ValueError("corrupt handoff record header or unsupported format version")
    at = 8 + head_len
    blobs: list[bytes] = []
    for size in meta.pop("blobs", ()):
        if not isinstance(size, int) or size < 0 or at + size > len(raw):
            raise ValueError("truncated handoff record")
        blobs.append(raw[at : at + size])
        at += size
    if len(blobs) != 2 or (len(raw) - at) % 4:
        raise ValueError("corrupt handoff record header or token bytes")
    return meta, blobs, raw[at:]


def _decoded(kind: str, build: Any, raw: bytes) -> Any:
    """`build(raw)`, with any malformed-field error reported as ValueError (a corrupt record)."""
    try:
        return build(raw)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"corrupt {kind}: {type(exc).__name__}") from None


def _agent_json(agent: AgentCounters) -> list[Any]:
    return [agent.tool_calls_since_user_message, agent.user_messages, agent.last_item_is_tool_output]


def _agent_from(raw: list[Any]) -> AgentCounters:
    return AgentCounters(int(raw[0]), int(raw[1]), bool(raw[2]))


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """One completed store:true response, as write-behind appends it."""

    tenant: str
    response_id: str
    previous_response_id: str | None
    base_response_id: str | None  # None: `tokens` is the whole chain
    base_len: int
    cache_key: str
    header_key: bytes
    header_len: int
    tokens: tuple[int, ...]
    call_ids: dict[str, int]  # call ids added by this turn (all of them for a whole record)
    agent: AgentCounters
    created_at: float
    resource: bytes = b""
    input_items: bytes = b""
    version: int = field(default=FORMAT_VERSION)

    @property
    def whole(self) -> bool:
        """True when `tokens` is the entire chain."""
        return self.base_response_id is None

    def to_bytes(self) -> bytes:
        """Versioned binary encoding."""
        return _frame(_TURN_MAGIC, self._meta(), self.tokens, [self.resource, self.input_items])

    def to_bytes_pair(self) -> tuple[bytes, bytes]:
        """(`to_bytes()`, `slim().to_bytes()`), the tokens encoded once: what write-behind writes."""
        meta, token_bytes = self._meta(), _tokens_to_bytes(self.tokens)
        full = _frame_bytes(_TURN_MAGIC, meta, token_bytes, [self.resource, self.input_items])
        return full, _frame_bytes(_TURN_MAGIC, meta, token_bytes, [b"", b""])

    def _meta(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "tenant": self.tenant,
            "id": self.response_id,
            "prev": self.previous_response_id,
            "base": self.base_response_id,
            "base_len": self.base_len,
            "cache_key": self.cache_key,
            "header_key": self.header_key.hex(),
            "header_len": self.header_len,
            "call_ids": self.call_ids,
            "agent": _agent_json(self.agent),
            "created_at": self.created_at,
        }

    def slim(self) -> TurnRecord:
        """This record without its ResponseResource and input items (what a chain list holds)."""
        return dataclasses.replace(self, resource=b"", input_items=b"")

    def nbytes(self) -> int:
        """About how many bytes `to_bytes` produces (without encoding), for write-behind bounds."""
        return (
            4 * len(self.tokens) + len(self.resource) + len(self.input_items) + 64 * len(self.call_ids) + 256
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> TurnRecord:
        """Decode `to_bytes` output; raises ValueError on anything else."""
        record: TurnRecord = _decoded("turn record", cls._from_bytes, raw)
        return record

    @classmethod
    def _from_bytes(cls, raw: bytes) -> TurnRecord:
        meta, (resource, items), tokens = _unframe(_TURN_MAGIC, raw)
        return cls(
            tenant=meta["tenant"],
            response_id=meta["id"],
            previous_response_id=meta["prev"],
            base_response_id=meta["base"],
            base_len=meta["base_len"],
            cache_key=meta["cache_key"],
            header_key=bytes.fromhex(meta["header_key"]),
            header_len=meta["header_len"],
            tokens=tuple(tokens),
            call_ids=dict(meta["call_ids"]),
            agent=_agent_from(meta["agent"]),
            created_at=meta["created_at"],
            resource=resource,
            input_items=items,
            version=meta["v"],
        )


@dataclass(frozen=True, slots=True)
class ChainSnapshot:
    """Everything needed to continue from one response on another box."""

    tenant: str
    response_id: str
    cache_key: str
    header_key: bytes
    header_len: int
    tokens: tuple[int, ...]
    call_ids: dict[str, int]
    agent: AgentCounters
    resource: bytes = b""
    input_items: bytes = b""

    def to_bytes(self) -> bytes:
        """Versioned binary encoding."""
        meta = {
            "v": FORMAT_VERSION,
            "tenant": self.tenant,
            "id": self.response_id,
            "cache_key": self.cache_key,
            "header_key": self.header_key.hex(),
            "header_len": self.header_len,
            "call_ids": self.call_ids,
            "agent": _agent_json(self.agent),
        }
        return _frame(_SNAPSHOT_MAGIC, meta, self.tokens, [self.resource, self.input_items])

    @classmethod
    def from_bytes(cls, raw: bytes) -> ChainSnapshot:
        """Decode `to_bytes` output; raises ValueError on anything else."""
        snapshot: ChainSnapshot = _decoded("chain snapshot", cls._from_bytes, raw)
        return snapshot

    @classmethod
    def _from_bytes(cls, raw: bytes) -> ChainSnapshot:
        meta, (resource, items), tokens = _unframe(_SNAPSHOT_MAGIC, raw)
        return cls(
            tenant=meta["tenant"],
            response_id=meta["id"],
            cache_key=meta["cache_key"],
            header_key=bytes.fromhex(meta["header_key"]),
            header_len=meta["header_len"],
            tokens=tuple(tokens),
            call_ids=dict(meta["call_ids"]),
            agent=_agent_from(meta["agent"]),
            resource=resource,
            input_items=items,
        )


def turn_record(
    record: ResponseRecord,
    *,
    base: ResponseRecord | None,
    previous_response_id: str | None,
    start: int,
    created_at: float,
) -> TurnRecord:
    """The write-behind record of a completed store:true response.

    `base` is the record this turn extended in place (None for a new chain); a delta is written only when
    the base was itself persisted (store:true), else the whole chain. `start` is where this turn's tokens
    begin in the chain. Cost: O(this turn's tokens) for a delta.
    """
    chain = record.ref.chain
    whole = base is None or not base.store
    first = 0 if whole else start
    call_ids = {cid: pos for cid, pos in chain.call_ids.items() if pos > first and pos <= record.ref.length}
    return TurnRecord(
        tenant=record.tenant,
        response_id=record.response_id,
        previous_response_id=previous_response_id,
        base_response_id=None if whole or base is None else base.response_id,
        base_len=first,
        cache_key=chain.cache_key,
        header_key=chain.header_key,
        header_len=chain.header_len,
        tokens=tuple(chain.tokens[first : record.ref.length]),
        call_ids=call_ids,
        agent=record.ref.agent,
        created_at=created_at,
        resource=record.resource,
        input_items=record.input_items,
    )


def snapshot_from_turns(turns: Sequence[TurnRecord]) -> ChainSnapshot:
    """Fold a whole record and its deltas (oldest first) into the snapshot of the last one."""
    if not turns or not turns[0].whole:
        raise ValueError("the first turn record must be whole")
    tokens = list(turns[0].tokens)
    call_ids = dict(turns[0].call_ids)
    for previous, turn in itertools.pairwise(turns):
        if turn.whole:
            tokens, call_ids = list(turn.tokens), dict(turn.call_ids)
            continue
        if turn.base_response_id != previous.response_id or turn.base_len > len(tokens):
            raise ValueError(f"turn {turn.response_id} does not extend {previous.response_id}")
        del tokens[turn.base_len :]
        tokens += turn.tokens
        call_ids.update(turn.call_ids)
    last = turns[-1]
    return ChainSnapshot(
        tenant=last.tenant,
        response_id=last.response_id,
        cache_key=last.cache_key,
        header_key=last.header_key,
        header_len=last.header_len,
        tokens=tuple(tokens),
        call_ids=call_ids,
        agent=last.agent,
        resource=last.resource,
        input_items=last.input_items,
    )


def record_from_snapshot(snapshot: ChainSnapshot, *, store: bool = True) -> ResponseRecord:
    """A live record from a restored snapshot (the worker is assumed to hold nothing): store:true from the
    cold store, store:false from a sealed handoff (api_box/core/sealed.py)."""
    tokens = array("I", snapshot.tokens)
    header = Header(snapshot.header_key, tuple(tokens[: snapshot.header_len]))
    chain = ChainState(
        snapshot.cache_key, header, tokens, call_ids=dict(snapshot.call_ids), agent=snapshot.agent
    )
    return ResponseRecord(
        tenant=snapshot.tenant,
        response_id=snapshot.response_id,
        ref=ChainRef(chain, chain.length, snapshot.agent),
        store=store,
        resource=snapshot.resource,
        input_items=snapshot.input_items,
    )


class Linked(Protocol):
    """What `chain_path` needs of a record: its identity and the record it extends."""

    @property
    def tenant(self) -> str: ...
    @property
    def response_id(self) -> str: ...
    @property
    def base_response_id(self) -> str | None: ...
    @property
    def cache_key(self) -> str: ...
    @property
    def whole(self) -> bool: ...


L = TypeVar("L", bound=Linked)


def chain_path(target: L, records: Iterable[L]) -> list[L]:
    """The records to fold (oldest first) to restore `target`: its ancestry back to the nearest whole
    record, picked out of `records` (a chain list: any order, duplicates and sibling branches allowed).

    Raises ValueError when an ancestor is missing (never written, dropped, or expired) or belongs to
    another tenant or chain. Cost O(len(records)).
    """
    by_id = {record.response_id: record for record in records}
    path = [target]
    while not path[-1].whole:
        child = path[-1]
        base = by_id.pop(child.base_response_id or "", None)  # popped: a cycle ends as "missing"
        if base is None or base.tenant != target.tenant or base.cache_key != child.cache_key:
            raise ValueError(f"the chain of {target.response_id} is incomplete at {child.base_response_id}")
        path.append(base)
    path.reverse()
    return path


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """A turn record of a chain list decoded only as far as folding needs (tokens stay bytes)."""

    tenant: str
    response_id: str
    base_response_id: str | None
    base_len: int
    cache_key: str
    call_ids: dict[str, int]
    token_bytes: bytes  # little-endian uint32

    @property
    def whole(self) -> bool:
        """True when the tokens are the entire chain."""
        return self.base_response_id is None

    @classmethod
    def from_bytes(cls, raw: bytes) -> ChainEntry:
        """Decode a TurnRecord's bytes (whole or slim) without decoding its tokens; ValueError if bad."""
        entry: ChainEntry = _decoded("turn record", cls._from_bytes, raw)
        return entry

    @classmethod
    def _from_bytes(cls, raw: bytes) -> ChainEntry:
        meta, _, token_bytes = _split(_TURN_MAGIC, raw)
        return cls(
            meta["tenant"], meta["id"], meta["base"], int(meta["base_len"]), meta["cache_key"],
            dict(meta["call_ids"]), token_bytes,
        )  # fmt: skip

    @classmethod
    def of(cls, turn: TurnRecord) -> ChainEntry:
        """The entry of a decoded record."""
        return cls(
            turn.tenant, turn.response_id, turn.base_response_id, turn.base_len, turn.cache_key,
            turn.call_ids, _tokens_to_bytes(turn.tokens),
        )  # fmt: skip


def fold_chain(target: TurnRecord, entries: Iterable[bytes]) -> ChainSnapshot:
    """The snapshot of `target` from the raw records of its chain list (as `chain_path`, then
    `snapshot_from_turns`, but folding token bytes: about one JSON header parse per record).
    Raises ValueError when the chain is incomplete or a record is corrupt."""
    if target.whole:
        return snapshot_from_turns([target])
    path = chain_path(ChainEntry.of(target), (ChainEntry.from_bytes(raw) for raw in entries))
    tokens = bytearray()
    call_ids: dict[str, int] = {}
    for entry in path:
        if entry.whole:
            tokens, call_ids = bytearray(entry.token_bytes), dict(entry.call_ids)
            continue
        cut = 4 * entry.base_len
        if cut > len(tokens):
            raise ValueError(f"turn {entry.response_id} extends past its base")
        del tokens[cut:]
        tokens += entry.token_bytes
        call_ids.update(entry.call_ids)
    return ChainSnapshot(
        tenant=target.tenant,
        response_id=target.response_id,
        cache_key=target.cache_key,
        header_key=target.header_key,
        header_len=target.header_len,
        tokens=struct.unpack(f"<{len(tokens) // 4}I", tokens),  # one C call: the tuple directly
        call_ids=call_ids,
        agent=target.agent,
        resource=target.resource,
        input_items=target.input_items,
    )


MAX_ID_CHARS = 256  # longer response ids were not made by a box: a restore of one is a miss at once


@dataclass(frozen=True, slots=True)
class ColdKeys:
    """Key names in the cold store, namespaced by prefix and tenant (every part percent-encoded, so no
    tenant, id or cache key can reach into another's namespace)."""

    prefix: str = "tether"

    def response(self, tenant: str, response_id: str) -> str:
        """The key of one response's whole TurnRecord."""
        return f"{self.prefix}:{quote(tenant, safe='')}:r:{quote(response_id, safe='')}"

    def chain(self, tenant: str, cache_key: str) -> str:
        """The key of one chain's list of slim records (append order)."""
        return f"{self.prefix}:{quote(tenant, safe='')}:c:{quote(cache_key, safe='')}"

    def sealed(self, tenant: str, slot: str) -> str:
        """The key of one sealed store:false handoff (api_box/core/sealed.py), by its slot id."""
        return f"{self.prefix}:{quote(tenant, safe='')}:sealed:{quote(slot, safe='')}"

    def writer(self, writer_id: str) -> str:
        """A writer's liveness marker: gone means the store lost data since that writer last wrote."""
        return f"{self.prefix}:writer:{quote(writer_id, safe='')}"
