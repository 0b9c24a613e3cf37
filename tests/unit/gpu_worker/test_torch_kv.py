"""The torch engine's KV store: in-place continuation, copy on prefix hits, cancel leaves the chain as it
was, LRU eviction under the byte budget, and the precondition path."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the torch extra is not installed (pip install '.[torch]')")

from gpu_worker.core.errors import OverBudget, PreconditionFailed  # noqa: E402
from gpu_worker.engines.torch_kv import KvStore, Lease  # noqa: E402

PER_TOKEN = 2 * 4  # [layers=1, K/V=2, heads=1, T, dim=1] in float32
CHUNK = 8


def _store(budget_tokens: int = 64) -> KvStore:
    return KvStore(
        lambda capacity: torch.full((1, 2, 1, capacity, 1), -1.0),
        bytes_per_token=PER_TOKEN,
        budget_bytes=budget_tokens * PER_TOKEN,
        chunk_tokens=CHUNK,
    )


def _fill(lease: Lease, tokens: list[int]) -> None:
    """What a forward pass does: write each token's 'key and value' (here: the id) after kv_len."""
    start = lease.kv_len
    lease.kv[:, :, :, start : start + len(tokens)] = torch.tensor(tokens, dtype=torch.float32).view(
        1, 1, 1, -1, 1
    )
    lease.tokens += tokens
    lease.kv_len += len(tokens)


def _chain(store: KvStore, key: str, tokens: list[int], total: int | None = None) -> None:
    lease = store.lease(key, None, 0, tokens, total or len(tokens))
    assert lease is not None
    _fill(lease, tokens)
    store.commit(lease, tokens)


def _held(store: KvStore, key: str) -> list[int]:
    chain = store.get(key)
    assert chain is not None
    return [int(x) for x in chain.kv[0, 0, 0, : chain.kv_len, 0]]


def test_a_continuation_extends_the_chain_in_place() -> None:
    store = _store()
    _chain(store, "a", [1, 2, 3], total=8)
    before = store.get("a")
    assert before is not None
    lease = store.lease("a", "a", 3, [1, 2, 3, 4], 8)
    assert lease is not None
    assert lease.kv.data_ptr() == before.kv.data_ptr()
    assert lease.kv_len == lease.reused == 3
    _fill(lease, [4, 5])
    store.commit(lease, [1, 2, 3, 4, 5, 6])  # 6 (sampled last) was never fed: not in KV
    chain = store.get("a")
    assert chain is not None
    assert chain.tokens == [1, 2, 3, 4, 5, 6]
    assert _held(store, "a") == [1, 2, 3, 4, 5]


def test_a_cancelled_continuation_leaves_the_chain_as_it_was() -> None:
    store = _store()
    _chain(store, "a", [1, 2, 3])
    lease = store.lease("a", "a", 3, [1, 2, 3, 4], 20)  # grows: a new tensor
    assert lease is not None
    _fill(lease, [4, 9, 9])
    store.release(lease)
    chain = store.get("a")
    assert chain is not None
    assert chain.tokens == [1, 2, 3]
    assert _held(store, "a") == [1, 2, 3]
    assert chain.writer is None
    assert store.stats().used_bytes == CHUNK * PER_TOKEN  # the grown tensor is gone


def test_reusing_less_than_held_keeps_only_that_prefix() -> None:
    store = _store()
    _chain(store, "a", [1, 2, 3, 4, 5])
    lease = store.lease("a", "a", 2, [1, 2, 7], 8)
    assert lease is not None
    assert lease.kv_len == 2
    store.release(lease)
    assert _held(store, "a") == [1, 2]  # positions 2.. may have been overwritten: no longer claimed


def test_only_tokens_that_agree_with_the_prompt_are_reused() -> None:
    store = _store()
    _chain(store, "a", [1, 2, 3, 4])
    lease = store.lease("b", "a", 4, [1, 2, 9, 4], 8)
    assert lease is not None
    assert lease.kv_len == 2


def test_a_prefix_hit_copies_and_leaves_the_source_alone() -> None:
    store = _store()
    _chain(store, "a", [1, 2, 3, 4])
    lease = store.lease("b", "a", 3, [1, 2, 3, 8], 8)
    assert lease is not None
    source = store.get("a")
    assert source is not None
    assert lease.kv.data_ptr() != source.kv.data_ptr()
    _fill(lease, [8])
    store.commit(lease, [1, 2, 3, 8])
    assert _held(store, "b") == [1, 2, 3, 8]
    assert _held(store, "a") == [1, 2, 3, 4]


def test_two_generations_on_one_chain_do_not_share_a_tensor() -> None:
    store = _store()
    _chain(store, "a", [1, 2, 3], total=8)
    first = store.lease("a", "a", 3, [1, 2, 3, 4], 8)
    second = store.lease("a", "a", 3, [1, 2, 3, 5], 8)
    assert first is not None
    assert second is not None
    assert first.kv.data_ptr() != second.kv.data_ptr()
    _fill(first, [4])
    _fill(second, [5])
    store.commit(second, [1, 2, 3, 5])
    store.commit(first, [1, 2, 3, 4])  # the last commit wins, whole
    assert _held(store, "a") == [1, 2, 3, 4]


def test_chains_are_evicted_least_recently_used_first_under_the_byte_budget() -> None:
    store = _store(budget_tokens=3 * CHUNK)
    for key in "abc":
        _chain(store, key, [1, 2])
    store.touch("a")
    _chain(store, "d", [3, 4])
    assert "b" not in store
    assert all(k in store for k in "acd")
    stats = store.stats()
    assert stats.evictions == 1
    assert stats.evicted_tokens == 2
    assert stats.used_bytes == 3 * CHUNK * PER_TOKEN <= stats.budget_bytes


def test_a_chain_the_engine_evicted_is_a_failed_precondition() -> None:
    store = _store()
    with pytest.raises(PreconditionFailed) as info:
        store.lease("a", "a", 3, [1, 2, 3, 4], 8)
    assert info.value.reason == "unknown_cache_key"


def test_a_request_larger_than_the_budget_is_refused() -> None:
    store = _store(budget_tokens=2 * CHUNK)
    with pytest.raises(OverBudget):
        store.lease("a", None, 0, [1], 2 * CHUNK + 1)


def test_a_lease_waits_while_running_generations_hold_the_memory() -> None:
    store = _store(budget_tokens=2 * CHUNK)
    running = store.lease("a", None, 0, [1], 2 * CHUNK)
    assert running is not None
    assert store.lease("b", None, 0, [1], CHUNK) is None
    store.release(running)
    assert store.lease("b", None, 0, [1], CHUNK) is not None


def test_with_nothing_running_a_lease_gives_up_reuse_rather_than_wait() -> None:
    store = _store(budget_tokens=2 * CHUNK)
    _chain(store, "a", [1, 2], total=2 * CHUNK)
    lease = store.lease("b", "a", 2, [1, 2, 3], CHUNK)  # copying would need 3 chunks
    assert lease is not None
    assert lease.kv_len == 0
    assert "a" not in store


def test_dropping_a_chain_under_a_running_lease() -> None:
    store = _store()
    _chain(store, "a", [1, 2], total=8)
    lease = store.lease("a", "a", 2, [1, 2, 3], 8)
    assert lease is not None
    assert store.drop("a") == 2
    assert store.drop("a") == 0
    _fill(lease, [3])
    store.commit(lease, [1, 2, 3])
    assert _held(store, "a") == [1, 2, 3]
