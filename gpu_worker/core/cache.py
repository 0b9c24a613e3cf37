"""Cache policy: which token chains the worker holds, under a total token budget. Pure; time is passed in.

An entry is one chain: its key (a box's `cache_key`, or an anonymous key for keyless requests, which
start with ANON_PREFIX), its token ids, its incremental ChainDigest and its last use. The cache answers:

- `holding(key, base_len, digest)`: the entry a delta request builds on, or PreconditionFailed with a
  machine-readable reason (unknown_cache_key | length_mismatch | digest_mismatch).
- `best_prefix(key, prompt, block_hashes)`: the longest prefix of a full-chain request the worker already
  holds: the request's own entry first (exact, token by token), then any chain sharing its leading blocks
  (a block-hash index, as vLLM's automatic prefix caching keys KV blocks by chained block hashes).
- `commit(key, tokens, digest, now, retain_seconds=...)`: install a finished chain, then evict whole
  chains until the total is within the budget: unretained chains first, least recently used first; then,
  only when nothing else is left, retained chains, the one whose retention expires first. Pinned chains
  (read by a running request) and the chain just committed are never evicted. The returned `Evicted` list
  is what the engine must drop.

Retention (a request's `retain_seconds`, from the client's `prompt_cache_options.ttl`): the committed chain
is marked retained until `now + retain_seconds`, or until the later of that and its previous mark when it
still had one. Marks expire with time (`now` is passed in; an expired mark is no mark). Retained tokens
are the whole length of every marked chain, counted like the budget (a shared prefix counts once per
chain), and never exceed `retained_budget` = floor(retained_share x budget_tokens): a commit whose chain
would take the retained total past it is held unmarked (plain LRU) and a mark it had is lost. Retention
is a priority among chains, not a reservation: it never lets the total exceed the budget.

Chains are counted separately even when they share a prefix: the budget is an upper bound of what the
engine holds, never an underestimate. Running requests are not counted until they commit.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from gpu_worker.core.errors import OverBudget, PreconditionFailed
from gpu_worker.wire.chain import BLOCK_TOKENS, ChainDigest

__all__ = ["ANON_PREFIX", "ChainCache", "ChainEntry", "Evicted", "Reuse"]

ANON_PREFIX = "~"


@dataclass(slots=True, eq=False)
class ChainEntry:
    """One chain held by the worker."""

    key: str
    tokens: array[int]
    digest: ChainDigest
    last_used: float
    pins: int = 0
    retained_until: float = 0.0  # retained while now < retained_until (0: never marked)

    @property
    def anonymous(self) -> bool:
        """Whether this is prefix cache of keyless requests rather than a box's chain."""
        return self.key.startswith(ANON_PREFIX)


@dataclass(frozen=True, slots=True)
class Reuse:
    """`length` leading tokens of a prompt equal the first tokens of chain `source` (None: nothing)."""

    source: str | None
    length: int


@dataclass(frozen=True, slots=True)
class Evicted:
    """A chain removed by the policy; the engine must drop its KV."""

    key: str
    tokens: int
    reason: Literal["lru", "superseded"]
    retained: bool = False  # its retention had not expired: nothing unretained was left to evict


class ChainCache:
    """LRU of whole chains under a token budget, with a block-hash index for prefix reuse and retention
    marks that put chains ahead of the others when something must be evicted."""

    def __init__(self, budget_tokens: int, *, retained_share: float = 0.5) -> None:
        if budget_tokens <= 0:
            raise ValueError("budget_tokens must be > 0")
        if not (math.isfinite(retained_share) and 0.0 <= retained_share <= 1.0):
            raise ValueError("retained_share must be within 0..1")
        self.budget_tokens = budget_tokens
        self.retained_share = retained_share
        self.retained_budget = math.floor(budget_tokens * retained_share)
        self._entries: OrderedDict[str, ChainEntry] = OrderedDict()  # least recently used first
        self._by_block: dict[bytes, dict[str, None]] = {}  # block hash -> keys holding it (ordered set)
        self._tokens = 0
        self._retained: dict[str, float] = {}  # marked chains: key -> retained_until
        self._retained_tokens = 0
        self._expiries: list[tuple[float, str]] = []  # heap of marks; stale ones are skipped

    # ----------------------------------------------------------------------------------- inspection
    @property
    def tokens_held(self) -> int:
        """Tokens of all chains held."""
        return self._tokens

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def get(self, key: str) -> ChainEntry | None:
        """The entry for `key`, if held (does not count as a use)."""
        return self._entries.get(key)

    def keys(self) -> list[str]:
        """Keys held, least recently used first."""
        return list(self._entries)

    def retained_tokens(self, now: float) -> int:
        """Tokens of the chains whose retention has not expired at `now` (<= retained_budget)."""
        self.expire(now)
        return self._retained_tokens

    def retained_keys(self, now: float) -> list[str]:
        """Keys of the chains retained at `now`, the first to expire first."""
        self.expire(now)
        return sorted(self._retained, key=self._retained.__getitem__)

    # ------------------------------------------------------------------------------------- lookups
    def holding(self, key: str, base_len: int, base_digest: bytes) -> ChainEntry:
        """The entry holding exactly `base_len` tokens with `base_digest`, else PreconditionFailed."""
        entry = self._entries.get(key)
        if entry is None:
            raise PreconditionFailed("unknown_cache_key", "the worker holds no chain for this cache_key")
        if len(entry.tokens) != base_len:
            raise PreconditionFailed(
                "length_mismatch", f"the worker holds {len(entry.tokens)} tokens, not base_len={base_len}"
            )
        if entry.digest.digest() != base_digest:
            raise PreconditionFailed("digest_mismatch", "the held chain's digest differs from base_digest")
        return entry

    def best_prefix(self, key: str | None, prompt: Sequence[int], block_hashes: Sequence[bytes]) -> Reuse:
        """The longest held prefix of `prompt` (whose chained block hashes are `block_hashes`)."""
        own = self._own_prefix(key, prompt, block_hashes)
        blocks = self._indexed_blocks(block_hashes)
        if blocks * BLOCK_TOKENS > own.length:
            holders = self._by_block[block_hashes[blocks - 1]]
            return Reuse(next(reversed(holders)), blocks * BLOCK_TOKENS)
        return own

    def _own_prefix(self, key: str | None, prompt: Sequence[int], block_hashes: Sequence[bytes]) -> Reuse:
        entry = self._entries.get(key) if key is not None else None
        if entry is None:
            return Reuse(None, 0)
        held = entry.tokens
        span = min(len(held), len(prompt))
        if held[:span] == array("I", prompt[:span]):
            return Reuse(entry.key, span)
        shared = _common_blocks(entry.digest.block_hashes, block_hashes)
        return Reuse(entry.key, shared * BLOCK_TOKENS) if shared else Reuse(None, 0)

    def _indexed_blocks(self, block_hashes: Sequence[bytes]) -> int:
        # Chained hashes: a chain holding block k holds blocks 1..k-1 too, so "indexed" is monotone.
        low, high = 0, len(block_hashes)
        while low < high:
            mid = (low + high + 1) // 2
            if block_hashes[mid - 1] in self._by_block:
                low = mid
            else:
                high = mid - 1
        return low

    def check_fits(self, tokens: int) -> None:
        """OverBudget when a chain of `tokens` could never be held, whatever is evicted."""
        if tokens > self.budget_tokens:
            raise OverBudget(
                f"the request needs up to {tokens} tokens; the worker's budget is {self.budget_tokens}"
            )

    # ------------------------------------------------------------------------------------- updates
    def pin(self, key: str | None) -> None:
        """Protect chain `key` from eviction while a request reads it (no-op for None/unknown)."""
        entry = self._entries.get(key) if key is not None else None
        if entry is not None:
            entry.pins += 1

    def unpin(self, key: str | None) -> None:
        """Undo one `pin`."""
        entry = self._entries.get(key) if key is not None else None
        if entry is not None and entry.pins > 0:
            entry.pins -= 1

    def touch(self, key: str, now: float) -> None:
        """Record a use of `key` (moves it to the most recently used end)."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.last_used = now
            self._entries.move_to_end(key)

    def commit(
        self,
        key: str,
        tokens: array[int],
        digest: ChainDigest,
        now: float,
        *,
        supersedes: str | None = None,
        retain_seconds: float = 0.0,
    ) -> list[Evicted]:
        """Hold `tokens` as chain `key` (replacing what it held), then evict to the budget.

        `supersedes`: the anonymous chain this one was extended from; it is dropped when the new chain
        contains it entirely and nobody reads it, since every block it could serve is now in `key`.
        `retain_seconds` > 0: mark the chain retained until `now + retain_seconds` (or its previous mark,
        if later), within the retained budget; `get(key).retained_until > now` tells whether it was.
        """
        self.expire(now)
        until = now + retain_seconds if retain_seconds > 0 else 0.0
        if key in self._retained:
            until = max(until, self._unmark(key))
        old = self._entries.pop(key, None)
        pins = old.pins if old is not None else 0
        if old is not None:
            self._tokens -= len(old.tokens)
        self._entries[key] = ChainEntry(key, tokens, digest, now, pins)
        self._tokens += len(tokens)
        self._reindex(key, old.digest.block_hashes if old is not None else (), digest.block_hashes)
        if until > now and self._retained_tokens + len(tokens) <= self.retained_budget:
            self._mark(key, until)
        removed = self._supersede(supersedes, key, tokens)
        return removed + self._evict(protect=key)

    def drop(self, key: str) -> int:
        """Forget chain `key`; the tokens freed (0 when unknown)."""
        if key in self._retained:
            self._unmark(key)
        entry = self._entries.pop(key, None)
        if entry is None:
            return 0
        self._tokens -= len(entry.tokens)
        self._reindex(key, entry.digest.block_hashes, ())
        return len(entry.tokens)

    def expire(self, now: float) -> None:
        """Clear the retention marks that have expired at `now` (the chains stay, as unretained)."""
        heap = self._expiries
        while heap and heap[0][0] <= now:
            until, key = heapq.heappop(heap)
            if self._retained.get(key) == until:
                self._unmark(key)

    def _mark(self, key: str, until: float) -> None:
        entry = self._entries[key]
        entry.retained_until = until
        self._retained[key] = until
        self._retained_tokens += len(entry.tokens)
        heapq.heappush(self._expiries, (until, key))
        if len(self._expiries) > 2 * len(self._retained) + 64:  # re-marked chains leave stale items
            self._expiries = [(u, k) for k, u in self._retained.items()]
            heapq.heapify(self._expiries)

    def _unmark(self, key: str) -> float:
        until = self._retained.pop(key)
        entry = self._entries[key]
        entry.retained_until = 0.0
        self._retained_tokens -= len(entry.tokens)
        return until

    def _supersede(self, source: str | None, key: str, tokens: array[int]) -> list[Evicted]:
        entry = self._entries.get(source) if source is not None and source != key else None
        if entry is None or not entry.anonymous or entry.pins:
            return []
        size = len(entry.tokens)
        if size > len(tokens) or tokens[:size] != entry.tokens:
            return []
        self.drop(entry.key)
        return [Evicted(entry.key, size, "superseded")]

    def _evict(self, protect: str) -> list[Evicted]:
        # Unretained chains, least recently used first; then retained ones, the first to expire first.
        evicted: list[Evicted] = []
        if self._tokens <= self.budget_tokens:
            return evicted
        for entry in list(self._entries.values()):
            if self._tokens <= self.budget_tokens:
                return evicted
            if entry.pins or entry.key == protect or entry.key in self._retained:
                continue
            evicted.append(Evicted(entry.key, self.drop(entry.key), "lru"))
        for key in sorted(self._retained, key=self._retained.__getitem__):
            if self._tokens <= self.budget_tokens:
                break
            if self._entries[key].pins or key == protect:
                continue
            evicted.append(Evicted(key, self.drop(key), "lru", retained=True))
        return evicted

    def _reindex(self, key: str, old: Sequence[bytes], new: Sequence[bytes]) -> None:
        shared = _common_blocks(old, new)
        for block in old[shared:]:
            holders = self._by_block.get(block)
            if holders is not None:
                holders.pop(key, None)
                if not holders:
                    del self._by_block[block]
        for block in new[shared:]:
            self._by_block.setdefault(block, {})[key] = None


def _common_blocks(a: Sequence[bytes], b: Sequence[bytes]) -> int:
    """Leading blocks two chains share (chained hashes: equal at k means equal before k)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[mid - 1] == b[mid - 1]:
            low = mid
        else:
            high = mid - 1
    return low
