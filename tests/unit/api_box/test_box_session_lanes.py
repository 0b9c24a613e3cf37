"""Lanes (`stream_id`) in the per-connection state machine: per-lane FIFO, concurrency across lanes, the
in-flight and lane limits, the per-lane cache and its eviction rules, expiry with several turns running."""

from __future__ import annotations

from array import array
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from api_box.core.chain import ChainRef, ChainState, HeaderCache
from api_box.core.errors import (
    ConnectionLimitReached,
    InvalidJson,
    StreamLimitReached,
    TooManyQueued,
)
from api_box.core.protocol import CreateRequest, MessageItem
from api_box.core.session import (
    CLOSED,
    IDLE,
    RUNNING,
    Arrival,
    Close,
    ConnectionSession,
    Effect,
    ReleaseChain,
    SendError,
    StartTurn,
    TurnOutcome,
)
from api_box.core.store import ResponseRecord

HEADER = HeaderCache().header(None, ())


def create(lane: str | None, text: str = "hi", previous: str | None = None) -> Arrival:
    item = MessageItem("user", text)
    return Arrival(CreateRequest(model="m", input=(item,), previous_response_id=previous, stream_id=lane))


def record(response_id: str, *, chain: ChainState | None = None) -> ResponseRecord:
    state = chain or ChainState(f"ck_{response_id}", HEADER, array("I", [1, 2, 3]))
    return ResponseRecord("t", response_id, ChainRef(state, 3, state.agent), store=False)


def session(**limits: int) -> ConnectionSession:
    options = {"max_queued": 8, "max_in_flight": 16, "max_lanes": 32} | limits
    return ConnectionSession(opened_at=0.0, max_age_seconds=3600.0, **options)


def done(
    s: ConnectionSession, lane: str | None, result: ResponseRecord | None, previous: str | None = None
) -> list[Effect]:
    return s.turn_finished(TurnOutcome(result, previous), 1.0, lane=lane)


def test_different_lanes_run_at_once_and_one_lane_runs_in_order() -> None:
    s = session()
    a1, b1, a2 = create("a", "1"), create("b", "1"), create("a", "2")
    assert s.receive(a1, 0.0) == [StartTurn(a1)]
    assert s.receive(b1, 0.0) == [StartTurn(b1)]  # another lane: runs at once
    assert s.receive(a2, 0.0) == []  # behind a1 on its lane
    assert (s.running, s.queued, s.state) == (2, 1, RUNNING)
    assert done(s, "b", record("rb")) == []
    assert done(s, "a", record("ra")) == [StartTurn(a2)]
    assert done(s, "a", record("ra2")) == [ReleaseChain("ck_ra")]
    assert s.state is IDLE


def test_the_default_lane_alone_keeps_one_response_in_flight() -> None:
    s = session()
    first, second = create(None), create(None)
    s.receive(first, 0.0)
    assert s.receive(second, 0.0) == []
    assert done(s, None, record("r1")) == [StartTurn(second)]


def test_at_most_max_in_flight_run_and_ready_lanes_take_free_slots_in_order() -> None:
    s = session(max_in_flight=2)
    a, b, c, d = create("a"), create("b"), create("c"), create("d")
    s.receive(a, 0.0)
    s.receive(b, 0.0)
    assert s.receive(c, 0.0) == []
    assert s.receive(d, 0.0) == []
    assert (s.running, s.queued) == (2, 2)
    assert done(s, "b", record("rb")) == [StartTurn(c)]  # c became ready before d
    assert done(s, "a", record("ra")) == [StartTurn(d)]


def test_a_lane_that_finishes_queues_behind_lanes_already_waiting_for_a_slot() -> None:
    s = session(max_in_flight=1)
    a1, b1, a2 = create("a", "1"), create("b", "1"), create("a", "2")
    s.receive(a1, 0.0)
    s.receive(b1, 0.0)
    s.receive(a2, 0.0)
    assert done(s, "a", record("ra")) == [StartTurn(b1)]
    assert done(s, "b", record("rb")) == [StartTurn(a2)]


def test_one_named_lane_too_many_is_refused_on_that_lane() -> None:
    s = session(max_lanes=2)
    s.receive(create("a"), 0.0)
    s.receive(create("b"), 0.0)
    s.receive(create(None), 0.0)  # the default lane is not a named lane
    effects = s.receive(create("c"), 0.0)
    assert len(effects) == 1
    assert isinstance(effects[0], SendError)
    assert isinstance(effects[0].error, StreamLimitReached)
    assert effects[0].error.code == "websocket_stream_limit_reached"
    assert effects[0].lane == "c"
    assert s.receive(create("a"), 0.0) == []  # a known lane still queues


def test_the_queue_bound_counts_every_lane() -> None:
    s = session(max_queued=1)
    s.receive(create("a"), 0.0)
    s.receive(create("a"), 0.0)
    effects = s.receive(create("a"), 0.0)
    assert isinstance(effects[0], SendError)
    assert isinstance(effects[0].error, TooManyQueued)
    assert effects[0].lane == "a"
    assert isinstance(s.receive(create("b"), 0.0)[0], StartTurn)  # a free lane with a free slot runs


def test_a_rejected_create_is_answered_on_its_lane_in_its_place() -> None:
    s = session()
    running = create("a")
    s.receive(running, 0.0)
    error = InvalidJson("bad")
    error.stream_id = "a"
    bad = Arrival(error)
    later = create("a")
    s.receive(bad, 0.0)
    s.receive(later, 0.0)
    assert done(s, "a", record("r1")) == [SendError(error, "a"), StartTurn(later)]


def test_each_lane_caches_its_own_most_recent_response() -> None:
    s = session()
    s.receive(create("a"), 0.0)
    s.receive(create("b"), 0.0)
    ra, rb = record("ra"), record("rb")
    done(s, "a", ra)
    done(s, "b", rb)
    assert s.lookup("ra") is ra
    assert s.lookup("rb") is rb
    assert s.last is rb


def test_a_failed_continuation_on_its_own_lane_evicts_but_a_failed_fork_keeps_the_parent() -> None:
    s = session()
    s.receive(create("a"), 0.0)
    done(s, "a", record("ra"))
    s.receive(create("b", previous="ra"), 0.0)
    assert done(s, "b", None, previous="ra") == []  # a failed cross-lane fork
    assert s.lookup("ra") is not None
    s.receive(create("a", previous="ra"), 0.0)
    assert done(s, "a", None, previous="ra") == [ReleaseChain("ck_ra")]  # same lane: evicted
    assert s.lookup("ra") is None


def test_a_chain_shared_by_two_lanes_is_released_only_when_neither_caches_it() -> None:
    s = session()
    shared = ChainState("ck_shared", HEADER, array("I", [1, 2, 3]))
    s.receive(create("a"), 0.0)
    s.receive(create("b"), 0.0)
    done(s, "a", record("ra", chain=shared))
    done(s, "b", record("rb", chain=shared))
    s.receive(create("a"), 0.0)
    assert done(s, "a", record("ra2")) == []  # lane b still caches the shared chain
    s.receive(create("b"), 0.0)
    assert done(s, "b", record("rb2")) == [ReleaseChain("ck_shared")]


def test_expiry_lets_every_running_turn_finish_then_answers_each_queued_create_on_its_lane() -> None:
    s = ConnectionSession(opened_at=0.0, max_age_seconds=10.0, max_queued=8)
    s.receive(create("a"), 1.0)
    s.receive(create("b"), 1.0)
    s.receive(create("a"), 2.0)
    assert s.deadline_reached(10.0) == []
    assert s.receive(create("c"), 11.0) == []  # a free lane, but the connection expired: not run
    assert s.turn_finished(TurnOutcome(record("ra"), None), 12.0, lane="a") == []
    effects = s.turn_finished(TurnOutcome(record("rb"), None), 13.0, lane="b")
    errors = [e for e in effects if isinstance(e, SendError)]
    assert sorted(str(e.lane) for e in errors) == ["a", "c"]
    assert all(isinstance(e.error, ConnectionLimitReached) for e in errors)
    assert effects[-1] == Close(1000, "connection limit reached")
    assert s.state is CLOSED


def test_closing_releases_every_lane_except_the_handed_off_chain() -> None:
    s = session()
    s.receive(create("a"), 0.0)
    s.receive(create("b"), 0.0)
    done(s, "a", record("ra"))
    done(s, "b", record("rb"))
    assert s.close(keep_chain=True) == [ReleaseChain("ck_ra")]  # rb, the latest, was sealed


lane_steps = st.lists(
    st.tuples(
        st.sampled_from(["create", "bad", "done_ok", "done_fail"]), st.sampled_from([None, "a", "b", "c"])
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(lane_steps)
def test_lanes_never_overlap_run_in_order_and_respect_the_limits(
    script: list[tuple[str, str | None]],
) -> None:
    s = ConnectionSession(opened_at=0.0, max_age_seconds=1e9, max_queued=4, max_in_flight=2, max_lanes=2)
    running: dict[str | None, int] = {}
    sent: defaultdict[str | None, int] = defaultdict(int)
    started: defaultdict[str | None, list[int]] = defaultdict(list)
    for step, (what, lane) in enumerate(script):
        if what in ("create", "bad"):
            if what == "create":
                arrival = Arrival(
                    CreateRequest(model="m", input=(), metadata={"n": str(sent[lane])}, stream_id=lane)
                )
                sent[lane] += 1
            else:
                error = InvalidJson("bad")
                error.stream_id = lane
                arrival = Arrival(error)
            effects = s.receive(arrival, float(step))
        elif lane in running:
            del running[lane]
            effects = s.turn_finished(
                TurnOutcome(record(f"r{step}") if what == "done_ok" else None, None), float(step), lane=lane
            )
        else:
            continue
        for effect in effects:
            if isinstance(effect, StartTurn):
                assert effect.arrival.lane not in running  # one turn per lane
                running[effect.arrival.lane] = step
                started[effect.arrival.lane].append(int(effect.create.metadata["n"]))
            if isinstance(effect, SendError) and isinstance(effect.error, InvalidJson):
                assert effect.lane == effect.error.stream_id  # answered on the lane it came on
        assert len(running) == s.running <= 2
        assert (s.state is RUNNING) == bool(running)
        assert s.queued <= 4
        assert len([name for name in started if name is not None]) <= 2
    for order in started.values():
        assert order == sorted(order)
