"""The hash ring: determinism, minimal movement, balance, failover order, bounded loads, versions."""

from __future__ import annotations

import collections
import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.errors import ConfigError, EmptyRing
from router.core.hashring import HashRing, _member_positions, key_hash

ROOT = Path(__file__).resolve().parents[3]
# Small rings keep hypothesis fast; the balance/movement figures below use the real default layout.
SMALL = 64

names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=20
)
names = names.filter(str.isprintable)
member_sets = st.sets(names, min_size=2, max_size=12)
keys = st.lists(st.text(max_size=40), min_size=1, max_size=60)


@given(member_sets, keys)
def test_same_key_same_member_across_instances(members: set[str], some_keys: list[str]) -> None:
    first, second = HashRing(members, vnodes=SMALL), HashRing(sorted(members, reverse=True), vnodes=SMALL)
    for key in some_keys:
        assert first.lookup(key) == second.lookup(key) == first.lookup(key)
        assert first.lookup(key) in members


@given(member_sets, keys)
def test_lookup_matches_a_brute_force_ring(members: set[str], some_keys: list[str]) -> None:
    ring = HashRing(members, vnodes=SMALL)
    points = sorted((position, name) for name in members for position in _member_positions(name, SMALL))
    for key in some_keys:
        after = [name for position, name in points if position > key_hash(key)]
        assert ring.lookup(key) == (after[0] if after else points[0][1])


@given(member_sets, keys, st.data())
def test_removing_a_member_moves_only_its_keys(
    members: set[str], some_keys: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(sorted(members)))
    before = HashRing(members, vnodes=SMALL)
    after = HashRing(members - {gone}, vnodes=SMALL)
    for key in some_keys:
        owner = before.lookup(key)
        if owner != gone:
            assert after.lookup(key) == owner
        else:  # the key goes to its ring successor: every replica agrees on where
            assert after.lookup(key) == list(before.successors(key))[1]


@given(member_sets, names, keys)
def test_adding_a_member_moves_keys_only_to_it(members: set[str], new: str, some_keys: list[str]) -> None:
    before = HashRing(members, vnodes=SMALL)
    after = HashRing(members | {new}, vnodes=SMALL)
    for key in some_keys:
        assert after.lookup(key) in (before.lookup(key), new)


@given(member_sets, st.text(max_size=40))
def test_successors_walk_every_member_once_from_the_owner(members: set[str], key: str) -> None:
    ring = HashRing(members, vnodes=SMALL)
    order = list(ring.successors(key))
    assert order[0] == ring.lookup(key)
    assert sorted(order) == sorted(members)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.dictionaries(names, st.integers(min_value=0, max_value=30), min_size=2, max_size=8),
    st.floats(min_value=1.05, max_value=3.0),
    st.text(max_size=20),
)
def test_bounded_lookup_picks_a_member_below_capacity(loads: dict[str, int], factor: float, key: str) -> None:
    ring = HashRing(list(loads), vnodes=SMALL)
    chosen = ring.lookup_bounded(key, loads, factor)
    total = sum(loads.values()) + 1
    assert loads[chosen] < ring.capacity(chosen, total, factor)
    # the owner keeps the key whenever it is below capacity
    owner = ring.lookup(key)
    if loads[owner] < ring.capacity(owner, total, factor):
        assert chosen == owner


def test_bounded_loads_cap_max_over_mean() -> None:
    ring = HashRing([f"box-{i}" for i in range(8)], vnodes=SMALL)  # few points: unbalanced on purpose
    unbounded = collections.Counter(ring.lookup(f"k{i}") for i in range(4000))
    loads: collections.Counter[str] = collections.Counter()
    for i in range(4000):
        loads[ring.lookup_bounded(f"k{i}", loads, 1.25)] += 1
    mean = 4000 / 8
    assert max(loads.values()) <= 1.25 * mean + 1
    assert max(unbounded.values()) > max(loads.values())  # the bound did something


KEYS = [f"session-{i}" for i in range(100_000)]
SIZES = [8, 16, 32, 64, 128]


@functools.cache
def _ring(*members: str) -> HashRing:
    return HashRing(members)


@functools.cache
def _owners(*members: str) -> tuple[str, ...]:
    ring = _ring(*members)
    return tuple(ring.lookup(key) for key in KEYS)


def _members(n: int) -> tuple[str, ...]:
    return tuple(f"box-{i}" for i in range(n))


@pytest.mark.parametrize("n", SIZES)
def test_exact_balance_and_movement(n: int) -> None:
    """The ring itself, without key sampling: every member's exact share of the hash space. Removing member
    m moves exactly m's share and adding one moves exactly the newcomer's, so max share × N bounds every
    possible −1 change. Targets: moved ≤ 1.05 × ideal (1/N, 1/(N+1)) and max/mean ≤ 1.10."""
    shares = _ring(*_members(n)).shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    assert max(shares.values()) * n <= 1.05  # every −1 change, and max/mean ≤ 1.10 with room
    newcomer = _ring(*_members(n + 1)).shares()[f"box-{n}"]
    assert newcomer * (n + 1) <= 1.05


@pytest.mark.parametrize("n", SIZES)
def test_100k_keys_move_minimally_and_follow_the_shares(n: int) -> None:
    """With 100k keys (`session-<i>`, fixed): a −1 change moves exactly the removed member's keys and a +1
    change exactly the newcomer's (zero excess movement), and every member's key count matches its exact
    share within sampling noise (|z| ≤ 4.5 with 128 members: the key hash is uniform).

    Why not assert max/mean of the sampled counts ≤ 1.10 at every N: with 100k keys the binomial noise of a
    member's count is 1/sqrt(100k/N) — 3.6 % at N = 128 — so even a perfectly even split exceeds 1.10 with
    probability ≈ 0.30 at N = 128 (simulated: mean max/mean 1.094, p95 1.121); no scheme can promise it.
    The sampled figures are in the README; below N = 64 they stay well under 1.10 and are asserted."""
    members = _members(n)
    owners, shares = _owners(*members), _ring(*members).shares()
    counts = collections.Counter(owners)
    for member in members:
        expected = len(KEYS) * shares[member]
        assert abs(counts[member] - expected) <= 4.5 * math.sqrt(expected)
    if n <= 32:
        assert max(counts.values()) / (len(KEYS) / n) <= 1.10
    gone = members[-1]
    for before, after in zip(owners, _owners(*members[:-1]), strict=True):
        assert (before == after) != (before == gone)  # a key moves exactly when its owner left
    grown = _owners(*_members(n + 1))
    moved = sum(before != after for before, after in zip(owners, grown, strict=True))
    assert moved == grown.count(f"box-{n}")  # every moved key went to the newcomer, none elsewhere


def test_weights_scale_shares() -> None:
    ring = HashRing({"small": 1.0, "big": 2.0})
    shares = ring.shares()
    assert shares["big"] / shares["small"] == pytest.approx(2.0, rel=0.05)
    assert ring.points_of("big") == 2 * ring.points_of("small")


def test_version_is_a_digest_of_sorted_members_and_weights() -> None:
    a = HashRing({"x": 1.0, "y": 1.0}, vnodes=SMALL)
    assert a.version == HashRing(["y", "x"], vnodes=SMALL).version
    assert a.version != HashRing({"x": 1.0, "y": 2.0}, vnodes=SMALL).version
    assert a.version != HashRing(["x", "y", "z"], vnodes=SMALL).version
    assert a.version != HashRing(["x", "y"], vnodes=SMALL * 2).version
    assert len(a.version) == 16


def test_empty_ring_raises() -> None:
    ring = HashRing()
    with pytest.raises(EmptyRing):
        ring.lookup("k")
    with pytest.raises(EmptyRing):
        next(ring.successors("k"))
    assert ring.shares() == {}


@pytest.mark.parametrize(
    "members",
    [{"": 1.0}, {"a": 0.0}, {"a": -1.0}, {"a": float("nan")}, {"a": float("inf")}, {"bad\nname": 1.0}],
)
def test_invalid_members_are_refused(members: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        HashRing(members)


def test_invalid_layouts_are_refused() -> None:
    with pytest.raises(ConfigError):
        HashRing(["a"], vnodes=0)
    with pytest.raises(ConfigError):
        HashRing(["a"]).lookup_bounded("k", {}, 1.0)


_CHILD = """
import json, sys
from router.core.hashring import HashRing, _member_positions, key_hash
ring = HashRing([f"box-{i}" for i in range(16)])
keys = [f"k{i}" for i in range(2000)] + ["", "é", "\\udcff", "x" * 5000]
print(json.dumps([ring.version, [ring.lookup(k) for k in keys], [key_hash(k) for k in keys]]))
"""


def test_identical_across_processes() -> None:
    """Two interpreters with different hash seeds compute the same ring (Python's hash() is never used)."""
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    ring = HashRing([f"box-{i}" for i in range(16)])
    version, owners, hashes = outputs[0]
    assert version == ring.version
    assert owners[:3] == [ring.lookup(f"k{i}") for i in range(3)]
    assert hashes[0] == key_hash("k0")
