"""Per-chain KV memory of the torch engine: one tensor per chain, LRU under a byte budget.

Each chain holds a tensor [layers, 2, kv_heads, capacity, head_dim] (capacity grows in chunks of
`chunk_tokens`), the chain's token ids, and `kv_len`: how many of those tokens have their keys and values
in the tensor. `kv_len` may be shorter than the chain (the last sampled token and `[END]` are never fed;
a re-encoded output can differ from what was fed): the next turn recomputes that tail, which it would
have to feed anyway.

A generation works on a `Lease`. A continuation of an idle chain writes in place after `kv_len` (no
copy); a prefix hit on another chain, or a chain another generation is already extending, gets a private
copy of the reused prefix. Positions below the lease's start are never written, so a cancelled lease
leaves the chain as it was; `commit` installs the lease as the chain's new state.

The budget counts allocated capacity (real memory), chains and in-flight leases alike. Admission evicts
idle chains, least recently used first; a lease that does not fit waits (`lease` returns None) while
other generations run, and only a request that alone exceeds the budget is refused. Not thread-safe: the
engine calls it from its event loop only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from gpu_worker.core.errors import OverBudget, PreconditionFailed
from gpu_worker.engines.torch_output import common_prefix


@dataclass(slots=True, eq=False)
class ChainKv:
    """What the engine holds for one chain."""

    tokens: list[int]
    kv: torch.Tensor
    kv_len: int
    writer: Lease | None = None  # the lease extending this tensor in place, if any


@dataclass(slots=True, eq=False)
class Lease:
    """A generation's KV: `kv` holds the keys and values of `tokens` (reused prompt, then all fed ids)."""

    key: str
    kv: torch.Tensor
    kv_len: int
    tokens: list[int] = field(default_factory=list)
    base: ChainKv | None = None  # the chain whose tensor `kv` is, while writing in place
    reused: int = 0  # prompt tokens whose KV came from the cache


@dataclass(frozen=True, slots=True)
class KvStats:
    """Sizes, for metrics and reports."""

    chains: int
    tokens: int  # tokens with KV held by chains
    used_bytes: int  # allocated capacity, chains and leases
    budget_bytes: int
    bytes_per_token: int
    evictions: int
    evicted_tokens: int


class KvStore:
    """Chains' KV tensors, LRU under `budget_bytes`."""

    def __init__(
        self,
        allocate: Callable[[int], torch.Tensor],
        *,
        bytes_per_token: int,
        budget_bytes: int,
        chunk_tokens: int,
    ) -> None:
        if budget_bytes < bytes_per_token * chunk_tokens:
            raise ValueError(
                f"KV budget {budget_bytes} B is below one chunk ({bytes_per_token * chunk_tokens} B)"
            )
        self._allocate = allocate
        self._per_token = bytes_per_token
        self._budget = budget_bytes
        self._chunk = chunk_tokens
        self._chains: OrderedDict[str, ChainKv] = OrderedDict()
        self._leases: list[Lease] = []
        self._evictions = 0
        self._evicted_tokens = 0

    # ------------------------------------------------------------------------------------------ queries
    def __contains__(self, key: str) -> bool:
        return key in self._chains

    def get(self, key: str) -> ChainKv | None:
        """The chain's state, without touching its LRU position."""
        return self._chains.get(key)

    def stats(self) -> KvStats:
        """Current sizes."""
        return KvStats(
            chains=len(self._chains),
            tokens=sum(c.kv_len for c in self._chains.values()),
            used_bytes=self._used_bytes(),
            budget_bytes=self._budget,
            bytes_per_token=self._per_token,
            evictions=self._evictions,
            evicted_tokens=self._evicted_tokens,
        )

    def capacity_for(self, tokens: int) -> int:
        """Capacity (tokens) allocated for a sequence of `tokens`: rounded up to whole chunks."""
        return -(-max(tokens, 1) // self._chunk) * self._chunk

    def check_fits(self, tokens: int) -> None:
        """Raise OverBudget when a sequence of `tokens` alone exceeds the budget."""
        need = self.capacity_for(tokens) * self._per_token
        if need > self._budget:
            raise OverBudget(
                f"{tokens} tokens need {need} B of KV; the engine's KV budget is {self._budget} B "
                f"({self._per_token} B per token)"
            )

    def touch(self, key: str | None) -> None:
        """Mark a chain recently used (a request for it is waiting)."""
        if key is not None and key in self._chains:
            self._chains.move_to_end(key)

    # ------------------------------------------------------------------------------------------ leases
    def lease(
        self, key: str, reuse_from: str | None, reuse_len: int, prompt: Sequence[int], total: int
    ) -> Lease | None:
        """A lease for generating `total` tokens (prompt included) on chain `key`, reusing up to `reuse_len`
        tokens of `reuse_from`. None when it does not fit yet; PreconditionFailed when `reuse_from` is
        not held (evicted under the budget, or never seen)."""
        self.check_fits(total)
        source = None
        if reuse_from is not None and reuse_len > 0:
            source = self._chains.get(reuse_from)
            if source is None:
                raise PreconditionFailed(
                    "unknown_cache_key", f"the torch engine holds no KV for {reuse_from!r}"
                )
            self._chains.move_to_end(reuse_from)
        usable = 0 if source is None else self._usable(source, reuse_len, prompt)
        if source is not None and reuse_from == key and source.writer is None:
            lease = self._lease_in_place(key, source, usable, prompt, total)
        else:
            lease = self._lease_copy(key, source, usable, prompt, total)
        if lease is None and source is not None and not self._leases:
            # Nothing runs that could free memory later: give up the reuse rather than wait forever.
            return self.lease(key, None, 0, prompt, total)
        if lease is not None:
            self._leases.append(lease)
        return lease

    def _lease_copy(
        self, key: str, source: ChainKv | None, usable: int, prompt: Sequence[int], total: int
    ) -> Lease | None:
        if not self._make_room(self.capacity_for(total) * self._per_token, keep=source):
            return None
        kv = self._allocate(self.capacity_for(total))
        if source is not None and usable:
            kv[:, :, :, :usable].copy_(source.kv[:, :, :, :usable])
        return Lease(key=key, kv=kv, kv_len=usable, tokens=list(prompt[:usable]), reused=usable)

    def _usable(self, source: ChainKv, reuse_len: int, prompt: Sequence[int]) -> int:
        # Trust but verify: only tokens whose ids agree with the prompt keep their keys and values.
        limit = min(reuse_len, source.kv_len, len(prompt))
        return common_prefix(source.tokens[:limit], list(prompt[:limit]))

    def _lease_in_place(
        self, key: str, chain: ChainKv, usable: int, prompt: Sequence[int], total: int
    ) -> Lease | None:
        kv = chain.kv
        if kv.shape[3] < total:
            # The chain keeps its tensor until commit (so a cancel leaves it as it was): room for both.
            if not self._make_room(self.capacity_for(total) * self._per_token, keep=chain):
                return None
            kv = self._grow(kv, usable, total)
        chain.kv_len = min(chain.kv_len, usable)  # positions from here on will be overwritten
        lease = Lease(key=key, kv=kv, kv_len=usable, tokens=list(prompt[:usable]), base=chain, reused=usable)
        chain.writer = lease
        return lease

    def ensure(self, lease: Lease, total: int) -> None:
        """Make `lease.kv` hold at least `total` tokens (a safety net: leases are sized up front)."""
        if lease.kv.shape[3] < total:
            lease.kv = self._grow(lease.kv, lease.kv_len, total)

    def _grow(self, kv: torch.Tensor, valid: int, total: int) -> torch.Tensor:
        grown = self._allocate(self.capacity_for(total))
        if valid:
            grown[:, :, :, :valid].copy_(kv[:, :, :, :valid])
        return grown

    def commit(self, lease: Lease, chain_tokens: Sequence[int]) -> None:
        """Install the lease as chain `lease.key`: `chain_tokens` (prompt + output ids), of which the first
        `lease.kv_len` have their KV in `lease.kv` (the engine trims kv_len to what matches)."""
        self._end(lease)
        old = self._chains.pop(lease.key, None)
        if old is not None and old.writer is not None and old.writer is not lease:
            old.writer.base = None  # another generation still writes there; it no longer owns a chain
        self._chains[lease.key] = ChainKv(tokens=list(chain_tokens), kv=lease.kv, kv_len=lease.kv_len)
        self._make_room(0, keep=self._chains[lease.key])

    def release(self, lease: Lease) -> None:
        """Abandon a lease (cancelled or failed): the chain stays as it was before the lease."""
        self._end(lease)

    def _end(self, lease: Lease) -> None:
        if lease in self._leases:
            self._leases.remove(lease)
        if lease.base is not None and lease.base.writer is lease:
            lease.base.writer = None
        lease.base = None

    def drop(self, key: str) -> int:
        """Forget a chain; the tokens it held (0 when unknown). A lease on it runs to its end unaffected."""
        chain = self._chains.pop(key, None)
        if chain is None:
            return 0
        if chain.writer is not None:
            chain.writer.base = None
        return chain.kv_len

    # ------------------------------------------------------------------------------------------ budget
    def _used_bytes(self) -> int:
        seen: dict[int, int] = {}
        for tensor in [c.kv for c in self._chains.values()] + [lease.kv for lease in self._leases]:
            seen[tensor.data_ptr()] = tensor.shape[3] * self._per_token
        return sum(seen.values())

    def _make_room(self, need: int, keep: ChainKv | None) -> bool:
        """Evict idle chains (LRU first, never `keep`) until `need` more bytes fit; whether they do."""
        used = self._used_bytes()
        for key in list(self._chains):
            if used + need <= self._budget:
                break
            chain = self._chains[key]
            if chain is keep or chain.writer is not None:
                continue
            del self._chains[key]
            used -= chain.kv.shape[3] * self._per_token
            self._evictions += 1
            self._evicted_tokens += chain.kv_len
        return used + need <= self._budget
