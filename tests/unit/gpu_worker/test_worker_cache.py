"""The cache policy: preconditions, prefix reuse, LRU under a token budget, pinning."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_worker.core.cache import ChainCache, Evicted, Reuse
from gpu_worker.core.errors import OverBudget, PreconditionFailed
from gpu_worker.wire.chain import BLOCK_TOKENS, ChainDigest, digest_of


def chain(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


def put(cache: ChainCache, key: str, tokens: list[int], now: float = 0.0, **kw: str | None) -> list[Evicted]:
    return cache.commit(key, array("I", tokens), ChainDigest(tokens), now, **kw)


def test_holding_names_the_reason_a_delta_cannot_be_served() -> None:
    cache = ChainCache(10_000)
    put(cache, "a", chain(100))
    assert cache.holding("a", 100, digest_of(chain(100))).key == "a"
    with pytest.raises(PreconditionFailed) as unknown:
        cache.holding("b", 100, digest_of(chain(100)))
    with pytest.raises(PreconditionFailed) as length:
        cache.holding("a", 99, digest_of(chain(99)))
    with pytest.raises(PreconditionFailed) as digest:
        cache.holding("a", 100, digest_of(chain(100, start=1)))
    assert (unknown.value.reason, length.value.reason, digest.value.reason) == (
        "unknown_cache_key",
        "length_mismatch",
        "digest_mismatch",
    )
    assert unknown.value.code == "FAILED_PRECONDITION"


def test_best_prefix_prefers_the_exact_own_chain_then_shared_blocks() -> None:
    cache = ChainCache(100_000)
    prompt = chain(300)
    hashes = ChainDigest(prompt).block_hashes
    assert cache.best_prefix("own", prompt, hashes) == Reuse(None, 0)
    put(cache, "other", chain(200))  # shares 3 full blocks (192 tokens) with prompt
    assert cache.best_prefix(None, prompt, hashes) == Reuse("other", 3 * BLOCK_TOKENS)
    put(cache, "own", chain(250))  # an exact prefix, token by token, beyond the block boundary
    assert cache.best_prefix("own", prompt, hashes) == Reuse("own", 250)
    put(cache, "own", chain(250)[:100] + [999_999] * 150)  # diverges inside block 2
    assert cache.best_prefix("own", prompt, hashes) == Reuse("other", 3 * BLOCK_TOKENS)
    longer = chain(400)
    put(cache, "long", longer)
    assert cache.best_prefix(None, prompt, hashes) == Reuse("long", 4 * BLOCK_TOKENS)
    assert cache.best_prefix("long", prompt, hashes) == Reuse("long", 300)  # a rewind: all of the prompt


def test_lru_eviction_keeps_the_total_within_the_budget() -> None:
    cache = ChainCache(1_000)
    put(cache, "a", chain(400), now=1)
    put(cache, "b", chain(400, 1000), now=2)
    cache.touch("a", 3)  # a is now more recent than b
    evicted = put(cache, "c", chain(400, 2000), now=4)
    assert evicted == [Evicted("b", 400, "lru")]
    assert cache.keys() == ["a", "c"]
    assert cache.tokens_held == 800


def test_pinned_chains_and_the_new_chain_are_never_evicted() -> None:
    cache = ChainCache(1_000)
    put(cache, "a", chain(600), now=1)
    cache.pin("a")
    assert put(cache, "b", chain(600, 5000), now=2) == []  # over budget, but nothing may go
    assert cache.tokens_held == 1_200
    cache.unpin("a")
    assert put(cache, "c", chain(10, 9000), now=3) == [Evicted("a", 600, "lru")]
    assert set(cache.keys()) == {"b", "c"}


def test_a_replaced_chain_keeps_its_pins_and_is_reindexed() -> None:
    cache = ChainCache(100_000)
    put(cache, "a", chain(200))
    cache.pin("a")
    put(cache, "a", chain(200, 7000))
    entry = cache.get("a")
    assert entry is not None
    assert entry.pins == 1
    old_hashes = ChainDigest(chain(200)).block_hashes
    assert cache.best_prefix(None, chain(200), old_hashes) == Reuse(None, 0)


def test_drop_frees_tokens_and_the_block_index() -> None:
    cache = ChainCache(100_000)
    put(cache, "a", chain(300))
    assert cache.drop("a") == 300
    assert cache.drop("a") == 0
    assert cache.tokens_held == 0
    assert len(cache) == 0
    assert cache.best_prefix(None, chain(300), ChainDigest(chain(300)).block_hashes) == Reuse(None, 0)


def test_an_anonymous_chain_is_superseded_by_its_extension_unless_read() -> None:
    cache = ChainCache(100_000)
    put(cache, "~t1", chain(200))
    evicted = put(cache, "~t2", chain(300), supersedes="~t1")
    assert evicted == [Evicted("~t1", 200, "superseded")]
    cache.pin("~t2")
    assert put(cache, "~t3", chain(400), supersedes="~t2") == []  # still read by another request
    cache.unpin("~t2")
    assert put(cache, "~t4", chain(50, 10_000), supersedes="~t3") == []  # not a prefix
    assert put(cache, "k", chain(500), supersedes="k") == []


def test_check_fits_rejects_a_request_larger_than_the_whole_budget() -> None:
    cache = ChainCache(1_000)
    cache.check_fits(1_000)
    with pytest.raises(OverBudget) as exc:
        cache.check_fits(1_001)
    assert exc.value.code == "RESOURCE_EXHAUSTED"


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="budget"):
        ChainCache(0)


operations = st.lists(
    st.tuples(
        st.sampled_from(["commit", "drop", "pin", "unpin"]),
        st.sampled_from(["a", "b", "c", "~x", "~y"]),
        st.integers(min_value=1, max_value=300),
        st.integers(min_value=0, max_value=3),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_accounting_and_index_stay_consistent(ops: list[tuple[str, str, int, int]]) -> None:
    cache = ChainCache(700)
    for now, (op, key, size, variant) in enumerate(ops):
        if op == "commit":
            put(cache, key, chain(size, variant * 64), now=now)
        elif op == "drop":
            cache.drop(key)
        elif op == "pin":
            cache.pin(key)
        else:
            cache.unpin(key)
        entries = [cache.get(k) for k in cache]
        assert cache.tokens_held == sum(len(e.tokens) for e in entries if e is not None)
        if all(e is not None and e.pins == 0 for e in entries) and op == "commit":
            last = cache.get(key)
            assert last is not None
            assert cache.tokens_held <= max(700, len(last.tokens))
        for entry in entries:
            assert entry is not None
            hashes = entry.digest.block_hashes
            if hashes:
                reuse = cache.best_prefix(None, list(entry.tokens), hashes)
                assert reuse.length == len(hashes) * BLOCK_TOKENS
    for block, holders in cache._by_block.items():
        assert holders, block
        for key in holders:
            entry = cache.get(key)
            assert entry is not None
            assert block in entry.digest.block_hashes
