"""Candidate order for keyed and keyless connections, and the down list."""

from __future__ import annotations

import itertools

import pytest

from router.core.errors import EmptyRing
from router.core.hashring import HashRing
from router.core.routing import DownList, keyed_candidates, keyless_candidates

MEMBERS = [f"box-{i}" for i in range(5)]


def never(member: str) -> bool:
    return False


def test_keyed_candidates_follow_the_ring() -> None:
    ring = HashRing(MEMBERS, vnodes=64)
    for key in ("a", "b", "c"):
        assert list(keyed_candidates(ring, key, never)) == list(ring.successors(key))


def test_down_members_are_tried_last_in_ring_order() -> None:
    ring = HashRing(MEMBERS, vnodes=64)
    order = list(ring.successors("k"))
    down = {order[0], order[2]}
    assert list(keyed_candidates(ring, "k", down.__contains__)) == [
        order[1],
        order[3],
        order[4],
        order[0],
        order[2],
    ]


def test_candidates_are_lazy() -> None:
    ring = HashRing(MEMBERS, vnodes=64)
    first = list(itertools.islice(keyed_candidates(ring, "k", never), 1))
    assert first == [ring.lookup("k")]


def test_bounded_load_skips_members_at_capacity() -> None:
    ring = HashRing(MEMBERS, vnodes=64)
    owner, second = list(ring.successors("k"))[:2]
    loads = dict.fromkeys(MEMBERS, 2) | {owner: 10}
    # total 19 (+1), capacity ceil(1.25 * 20 / 5) = 5: the owner is full
    order = list(keyed_candidates(ring, "k", never, loads, 1.25))
    assert order[0] == second
    assert order[-1] == owner
    assert next(keyed_candidates(ring, "k", never, loads, None)) == owner  # off: owner first


def test_empty_ring_raises_on_first_candidate() -> None:
    with pytest.raises(EmptyRing):
        next(keyed_candidates(HashRing(), "k", never))


def test_keyless_prefers_the_least_loaded_and_rotates_ties() -> None:
    loads = {"box-0": 3, "box-1": 0, "box-2": 1, "box-3": 0, "box-4": 0}
    assert list(keyless_candidates(MEMBERS, loads, never, turn=0))[:3] == ["box-1", "box-3", "box-4"]
    assert list(keyless_candidates(MEMBERS, loads, never, turn=2))[:3] == ["box-3", "box-4", "box-1"]
    firsts = {next(keyless_candidates(MEMBERS, {}, never, turn=t)) for t in range(5)}
    assert firsts == set(MEMBERS)
    order = list(keyless_candidates(MEMBERS, loads, {"box-1"}.__contains__))
    assert order[-1] == "box-1"
    assert list(keyless_candidates([], {}, never)) == []


def test_down_list_cooldown_and_probe() -> None:
    down = DownList(cooldown=5.0)
    down.mark_down("a", now=100.0)
    assert down.is_down("a", 104.9)
    assert not down.is_down("a", 105.0)  # cooldown over: tried again by traffic
    assert down.marked() == ["a"]  # still re-probed until a connect succeeds
    assert down.mark_up("a")
    assert not down.mark_up("a")
    down.mark_down("b", 0.0)
    down.mark_down("c", 0.0)
    down.retain({"c"})
    assert down.marked() == ["c"]
