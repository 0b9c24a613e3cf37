"""Retention in the cache policy: marked chains outlive unmarked ones under the budget, within a share of
it, until their mark expires. Time is a fake clock: every call takes `now`."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_worker.core.cache import ChainCache, Evicted
from gpu_worker.wire.chain import ChainDigest


def chain(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


def put(
    cache: ChainCache, key: str, tokens: list[int], now: float, retain: float = 0.0, **kw: str | None
) -> list[Evicted]:
    return cache.commit(key, array("I", tokens), ChainDigest(tokens), now, retain_seconds=retain, **kw)


def until(cache: ChainCache, key: str) -> float:
    entry = cache.get(key)
    assert entry is not None
    return entry.retained_until


def test_a_retained_chain_outlives_more_recent_unretained_ones() -> None:
    cache = ChainCache(1_000, retained_share=0.5)
    put(cache, "agent", chain(400), now=1, retain=1800)
    put(cache, "b", chain(400, 1000), now=2)
    evicted = put(cache, "c", chain(400, 2000), now=3)
    assert evicted == [Evicted("b", 400, "lru")]
    assert set(cache.keys()) == {"agent", "c"}
    assert cache.retained_tokens(3) == 400
    assert until(cache, "agent") == 1801


def test_without_retention_the_same_sequence_evicts_the_oldest() -> None:
    cache = ChainCache(1_000, retained_share=0.5)
    put(cache, "agent", chain(400), now=1)
    put(cache, "b", chain(400, 1000), now=2)
    assert put(cache, "c", chain(400, 2000), now=3) == [Evicted("agent", 400, "lru")]


def test_retained_chains_go_only_when_nothing_else_is_left_first_to_expire_first() -> None:
    cache = ChainCache(1_000, retained_share=1.0)
    put(cache, "late", chain(300), now=0, retain=100)  # until 100
    put(cache, "early", chain(300, 1000), now=1, retain=50)  # until 51
    put(cache, "plain", chain(100, 2000), now=2)
    put(cache, "latest", chain(300, 3000), now=3, retain=200)  # until 203; 1000 held
    evicted = put(cache, "new", chain(400, 4000), now=4)
    assert evicted == [Evicted("plain", 100, "lru"), Evicted("early", 300, "lru", retained=True)]
    assert cache.tokens_held == 1_000
    assert cache.retained_keys(4) == ["late", "latest"]


def test_an_expired_mark_is_no_mark() -> None:
    cache = ChainCache(1_000, retained_share=0.5)
    put(cache, "agent", chain(400), now=0, retain=30)
    assert cache.retained_tokens(29.9) == 400
    assert cache.retained_tokens(30) == 0  # retained while now < until
    assert until(cache, "agent") == 0.0
    put(cache, "b", chain(400, 1000), now=31)
    assert put(cache, "c", chain(400, 2000), now=32) == [Evicted("agent", 400, "lru")]


def test_retention_beyond_the_share_is_not_granted() -> None:
    cache = ChainCache(1_000, retained_share=0.5)  # 500 retained tokens at most
    assert cache.retained_budget == 500
    put(cache, "a", chain(300), now=0, retain=60)
    put(cache, "b", chain(300, 1000), now=1, retain=60)
    assert (until(cache, "a"), until(cache, "b")) == (60, 0.0)
    assert cache.retained_tokens(1) == 300
    put(cache, "c", chain(200, 2000), now=2, retain=60)  # exactly fills the share
    assert cache.retained_keys(2) == ["a", "c"]
    assert cache.retained_tokens(2) == 500


def test_a_chain_that_outgrows_the_share_loses_its_mark() -> None:
    cache = ChainCache(1_000, retained_share=0.5)
    put(cache, "a", chain(300), now=0, retain=60)
    put(cache, "b", chain(150, 1000), now=1, retain=60)
    put(cache, "a", chain(400), now=2, retain=60)  # 400 + 150 > 500: held, unmarked
    assert until(cache, "a") == 0.0
    assert cache.retained_keys(2) == ["b"]
    assert cache.retained_tokens(2) == 150


def test_a_commit_keeps_the_later_of_its_own_and_the_previous_mark() -> None:
    cache = ChainCache(10_000, retained_share=0.5)
    put(cache, "a", chain(100), now=0, retain=43_200)
    put(cache, "a", chain(200), now=10, retain=1_800)  # the 12 h mark of turn 1 still holds
    assert until(cache, "a") == 43_200
    put(cache, "a", chain(300), now=20)  # a turn that asks for nothing keeps an unexpired mark
    assert until(cache, "a") == 43_200
    assert cache.retained_tokens(20) == 300  # counted at the chain's current length
    put(cache, "a", chain(400), now=43_200)  # expired: no mark
    assert until(cache, "a") == 0.0


def test_drop_clears_the_mark_and_its_tokens() -> None:
    cache = ChainCache(1_000, retained_share=0.5)
    put(cache, "a", chain(300), now=0, retain=60)
    assert cache.drop("a") == 300
    assert cache.retained_tokens(1) == 0
    assert cache.retained_keys(1) == []
    put(cache, "b", chain(500, 1000), now=2, retain=60)  # the share is free again
    assert cache.retained_keys(2) == ["b"]


def test_a_superseded_anonymous_chain_takes_its_mark_with_it() -> None:
    cache = ChainCache(10_000, retained_share=0.5)
    put(cache, "~t1", chain(200), now=0, retain=60)
    evicted = put(cache, "~t2", chain(300), now=1, retain=60, supersedes="~t1")
    assert evicted == [Evicted("~t1", 200, "superseded")]
    assert cache.retained_keys(1) == ["~t2"]
    assert cache.retained_tokens(1) == 300


def test_a_pinned_retained_chain_stays_and_the_budget_yields_only_to_pins() -> None:
    cache = ChainCache(1_000, retained_share=1.0)
    put(cache, "a", chain(500), now=0, retain=60)
    put(cache, "b", chain(400, 1000), now=1, retain=90)
    cache.pin("a")
    evicted = put(cache, "c", chain(300, 2000), now=2)
    assert evicted == [Evicted("b", 400, "lru", retained=True)]  # a expires first but is read
    cache.unpin("a")
    assert put(cache, "d", chain(300, 3000), now=3) == [Evicted("c", 300, "lru")]  # unretained first
    assert put(cache, "e", chain(600, 4000), now=4) == [
        Evicted("d", 300, "lru"),
        Evicted("a", 500, "lru", retained=True),
    ]


def test_re_marking_a_chain_every_turn_keeps_the_expiry_heap_bounded() -> None:
    cache = ChainCache(100_000, retained_share=0.5)
    for turn in range(2_000):
        put(cache, f"k{turn % 3}", chain(10 + turn % 7), now=turn, retain=1_800)
    assert len(cache._expiries) <= 2 * len(cache.retained_keys(2_000)) + 64
    assert cache.retained_keys(2_000) == ["k2", "k0", "k1"]


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan"), float("inf")])
def test_the_share_must_be_a_fraction(share: float) -> None:
    with pytest.raises(ValueError, match="retained_share"):
        ChainCache(1_000, retained_share=share)


def test_a_zero_share_grants_nothing() -> None:
    cache = ChainCache(1_000, retained_share=0.0)
    put(cache, "a", chain(1), now=0, retain=60)
    assert cache.retained_keys(0) == []


# --------------------------------------------------------------------------------------- property
BUDGET = 700
KEYS = ["a", "b", "c", "d", "~x", "~y"]
operations = st.lists(
    st.tuples(
        st.sampled_from(["commit"] * 6 + ["drop", "pin", "unpin", "touch"]),
        st.sampled_from(KEYS),
        st.integers(min_value=1, max_value=400),  # chain length
        st.sampled_from([0.0, 5.0, 30.0, 1_800.0]),  # retain_seconds
        st.sampled_from([0.0, 0.0, 1.0, 4.0, 40.0]),  # time that passes before the operation
    ),
    max_size=50,
)


@settings(max_examples=500, deadline=None)
@given(operations, st.sampled_from([0.0, 0.25, 0.5, 1.0]))
def test_the_budget_and_the_share_always_hold(
    ops: list[tuple[str, str, int, float, float]], share: float
) -> None:
    cache = ChainCache(BUDGET, retained_share=share)
    now = 0.0
    for op, key, size, retain, wait in ops:
        now += wait
        marks_before = {k: until(cache, k) for k in cache.retained_keys(now)}
        if op == "commit":
            evicted = put(cache, key, chain(size, len(key) * 7), now=now, retain=retain)
            _check_eviction_order(cache, key, evicted, marks_before)
            if all(e.pins == 0 for k in cache if (e := cache.get(k)) is not None and k != key):
                assert cache.tokens_held <= max(BUDGET, size)  # the budget holds unless pins forbid it
        elif op == "drop":
            cache.drop(key)
        elif op == "pin":
            cache.pin(key)
        elif op == "unpin":
            cache.unpin(key)
        elif op == "touch":
            cache.touch(key, now)
        entries = {k: e for k in cache if (e := cache.get(k)) is not None}
        assert cache.tokens_held == sum(len(e.tokens) for e in entries.values())
        retained = cache.retained_tokens(now)
        assert retained <= cache.retained_budget  # the share holds
        assert retained == sum(len(e.tokens) for e in entries.values() if e.retained_until > now)
        assert set(cache.retained_keys(now)) == {k for k, e in entries.items() if e.retained_until > now}


def _check_eviction_order(
    cache: ChainCache, key: str, evicted: list[Evicted], marks: dict[str, float]
) -> None:
    lru = [e for e in evicted if e.reason == "lru"]
    flags = [e.retained for e in lru]
    assert flags == [e.key in marks for e in lru]  # the flag says whether its mark was live
    assert flags == sorted(flags)  # every unretained eviction before any retained one
    retained_order = [marks[e.key] for e in lru if e.retained]
    assert retained_order == sorted(retained_order)  # retained: the first to expire first
    if any(flags):  # a retained chain went: no unretained, unpinned chain but the new one is left,
        last = retained_order[-1]  # and every retained one that stays expires no earlier
        for k in cache:
            entry = cache.get(k)
            assert entry is not None
            assert k == key or entry.pins or (k in marks and marks[k] >= last)
