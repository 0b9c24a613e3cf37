"""Parked connections (api_box/core/parking.py) and what a connection leaves and takes back
(ConnectionSession.cached / restore): bounds, expiry on an injected clock, one use, lanes, the prior
response of a lane."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api_box.core.chain import ChainRef, ChainState, HeaderCache
from api_box.core.parking import Left, ParkingLot
from api_box.core.protocol import CreateRequest, MessageItem
from api_box.core.sealed import derive
from api_box.core.session import (
    Arrival,
    CachedLane,
    ConnectionSession,
    LocalCache,
    ReleaseChain,
    StartTurn,
    TurnOutcome,
)
from api_box.core.store import ResponseRecord

HEADER = HeaderCache().header(None, ())
HANDOFF = derive(b"k" * 32)


def chain(key: str, tokens: int = 3) -> ChainState:
    return ChainState(key, HEADER, array("I", range(tokens)))


def record(response_id: str, on: ChainState | None = None, *, store: bool = False) -> ResponseRecord:
    state = on if on is not None else chain(f"ck_{response_id}")
    return ResponseRecord("t", response_id, ChainRef(state, len(state.tokens), state.agent), store=store)


def cache(*records: ResponseRecord) -> LocalCache:
    return LocalCache(tuple(CachedLane(f"l{i}", r) for i, r in enumerate(records)), records[-1])


def lot(**bounds: float) -> ParkingLot:
    return ParkingLot(
        grace_seconds=bounds.get("grace", 60.0),
        max_entries=int(bounds.get("entries", 8)),
        max_bytes=int(bounds.get("nbytes", 1 << 20)),
    )


def create(previous: str | None = None, lane: str | None = None) -> Arrival:
    return Arrival(
        CreateRequest(
            model="m", input=(MessageItem("user", "x"),), previous_response_id=previous, stream_id=lane
        )
    )


# ------------------------------------------------------------------------------------------ the lot
def test_a_parked_connection_is_taken_once_within_the_grace_window() -> None:
    parking = lot(grace=60.0)
    parked, gone = parking.park(("t", "s"), cache(record("r1")), HANDOFF, now=100.0)
    assert parked is not None
    assert gone == []
    assert parked.expires_at == 160.0
    assert parking.take(("other", "s"), 101.0) is None  # keys are per tenant
    taken = parking.take(("t", "s"), 159.9)
    assert taken is parked
    assert parking.take(("t", "s"), 150.0) is None  # one use
    assert len(parking) == 0
    assert parking.nbytes == 0


def test_an_expired_connection_is_not_taken_and_expire_hands_it_back_in_order() -> None:
    parking = lot(grace=10.0)
    parking.park(("t", "a"), cache(record("ra")), HANDOFF, now=0.0)
    parking.park(("t", "b"), cache(record("rb")), HANDOFF, now=5.0)
    assert parking.next_expiry == 10.0
    assert parking.take(("t", "a"), 10.0) is None
    assert parking.expire(9.9) == []
    gone = parking.expire(10.0)
    assert [(d.parked.key, d.reason) for d in gone] == [(("t", "a"), Left.EXPIRED)]
    assert parking.next_expiry == 15.0
    assert [d.parked.key for d in parking.expire(100.0)] == [("t", "b")]
    assert parking.next_expiry is None


def test_the_count_bound_evicts_the_oldest_first() -> None:
    parking = lot(entries=2)
    parking.park(("t", "a"), cache(record("ra")), HANDOFF, now=0.0)
    parking.park(("t", "b"), cache(record("rb")), HANDOFF, now=1.0)
    _, gone = parking.park(("t", "c"), cache(record("rc")), HANDOFF, now=2.0)
    assert [(d.parked.key, d.reason) for d in gone] == [(("t", "a"), Left.EVICTED)]
    assert [p.key for p in parking.entries()] == [("t", "b"), ("t", "c")]


def test_the_byte_bound_evicts_and_a_connection_over_the_whole_budget_is_not_parked() -> None:
    one = cache(record("r1")).nbytes()
    parking = lot(nbytes=2 * one + 1)
    parking.park(("t", "a"), cache(record("ra")), HANDOFF, now=0.0)
    parking.park(("t", "b"), cache(record("rb")), HANDOFF, now=0.0)
    assert parking.nbytes == 2 * one
    _, gone = parking.park(("t", "c"), cache(record("rc")), HANDOFF, now=0.0)
    assert [d.parked.key for d in gone] == [("t", "a")]
    big = cache(record("big", chain("ck_big", tokens=4096)))
    parked, gone = parking.park(("t", "d"), big, HANDOFF, now=0.0)
    assert parked is None
    assert [d.reason for d in gone] == [Left.SKIPPED]
    assert len(parking) == 2  # nothing was evicted for a connection that could never fit


def test_parking_a_key_again_replaces_the_older_entry() -> None:
    parking = lot()
    parking.park(("t", "a"), cache(record("r1")), HANDOFF, now=0.0)
    _, gone = parking.park(("t", "a"), cache(record("r2")), HANDOFF, now=1.0)
    assert [(d.parked.cache.latest.response_id, d.reason) for d in gone] == [("r1", Left.REPLACED)]  # type: ignore[union-attr]
    taken = parking.take(("t", "a"), 2.0)
    assert taken is not None
    assert taken.cache.latest is not None
    assert taken.cache.latest.response_id == "r2"


def test_clear_hands_everything_back_for_release() -> None:
    parking = lot()
    parking.park(("t", "a"), cache(record("ra"), record("rs", store=True)), HANDOFF, now=0.0)
    (gone,) = parking.clear()
    assert gone.reason is Left.SHUTDOWN
    assert gone.parked.cache.store_false_chains() == ["ck_ra"]  # store:true chains are the store's
    assert parking.nbytes == 0


def test_the_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="positive"):
        ParkingLot(grace_seconds=0, max_entries=1, max_bytes=1)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(1, 600), st.integers(0, 30)), max_size=40))
def test_the_bounds_always_hold_and_entries_leave_in_expiry_order(steps: list[tuple[str, int, int]]) -> None:
    one = cache(record("r", chain("ck", tokens=100))).nbytes()
    parking = ParkingLot(grace_seconds=20.0, max_entries=3, max_bytes=4 * one)
    now = 0.0
    for slot, tokens, wait in steps:
        now += wait
        parking.park(("t", slot), cache(record(slot, chain(f"ck_{slot}", tokens))), HANDOFF, now)
        expired = parking.expire(now)
        assert all(d.parked.expires_at <= now for d in expired)
        assert len(parking) <= 3
        assert parking.nbytes <= 4 * one
        assert parking.nbytes == sum(p.nbytes for p in parking.entries())
        expiries = [p.expires_at for p in parking.entries()]
        assert expiries == sorted(expiries)


# -------------------------------------------------------------------------------------- the session
def session() -> ConnectionSession:
    return ConnectionSession(opened_at=0.0, max_age_seconds=3600.0, max_queued=4)


def test_a_connection_leaves_each_lane_and_the_response_before_on_the_same_chain() -> None:
    s = session()
    shared, other = chain("ck_a"), chain("ck_b")
    for lane, parent, done in ((None, None, record("a1", shared)), ("b", None, record("b1", other))):
        s.receive(create(parent, lane), 0.0)
        s.turn_finished(TurnOutcome(done, parent), 1.0, lane=lane)
    s.receive(create("a1"), 2.0)
    s.turn_finished(TurnOutcome(record("a2", shared), "a1"), 3.0)
    left = s.cached()
    assert left is not None
    assert [(c.lane, c.last.response_id, c.prior and c.prior.response_id) for c in left.lanes] == [
        (None, "a2", "a1"),  # a2 extended a1's chain: a1 is kept, free
        ("b", "b1", None),
    ]
    assert left.latest is not None
    assert left.latest.response_id == "a2"
    assert s.lookup("a1") is None  # a live connection continues from the latest only
    assert s.close(parked=True) == []  # parked: nothing is released, the lot owns the chains


def test_a_prior_on_another_chain_is_not_kept() -> None:
    s = session()
    s.receive(create(), 0.0)
    s.turn_finished(TurnOutcome(record("r1"), None), 1.0)
    s.receive(create("r1"), 1.0)
    assert s.turn_finished(TurnOutcome(record("r2"), "r1"), 2.0) == [ReleaseChain("ck_r1")]
    left = s.cached()
    assert left is not None
    assert left.lanes[0].prior is None


def test_a_restored_connection_continues_from_the_last_or_the_one_before_once() -> None:
    shared = chain("ck")
    r1, r2 = record("r1", shared), record("r2", shared)
    s = session()
    assert s.restore(LocalCache((CachedLane(None, r2, r1), CachedLane("x", record("x1"))), r2))
    assert s.lookup("r2") is r2
    assert s.lookup("r1") is r1
    assert s.lookup("x1") is not None
    assert s.last is r2
    arrival = create("r1")
    assert s.receive(arrival, 0.0) == [StartTurn(arrival)]
    s.turn_finished(TurnOutcome(record("r3", shared), "r1"), 1.0)
    assert s.lookup("r1") is None  # back to the most recent only
    assert s.lookup("r2") is None


def test_restore_only_into_a_fresh_connection() -> None:
    s = session()
    s.receive(create(), 0.0)
    s.turn_finished(TurnOutcome(record("r1"), None), 1.0)
    assert not s.restore(cache(record("r9")))
    assert s.lookup("r9") is None


def test_a_failed_continuation_from_the_restored_prior_forgets_it() -> None:
    shared = chain("ck")
    r1, r2 = record("r1", shared), record("r2", shared)
    s = session()
    s.restore(LocalCache((CachedLane(None, r2, r1),), r2))
    s.receive(create("r1"), 0.0)
    assert s.turn_finished(TurnOutcome(None, "r1"), 1.0) == []
    assert s.lookup("r1") is None
    assert s.lookup("r2") is r2
