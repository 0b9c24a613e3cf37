"""The per-connection state machine: FIFO, bounded queue, connection-local cache, eviction, age limit."""

from __future__ import annotations

from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from api_box.core.chain import ChainRef, ChainState, HeaderCache
from api_box.core.errors import ConnectionLimitReached, InvalidJson, TooManyQueued
from api_box.core.protocol import CreateRequest, MessageItem
from api_box.core.session import (
    CLOSED,
    IDLE,
    RUNNING,
    Arrival,
    Close,
    ConnectionSession,
    ReleaseChain,
    SendError,
    StartTurn,
    TurnOutcome,
)
from api_box.core.store import ResponseRecord

HEADER = HeaderCache().header(None, ())


def create(text: str = "hi", previous: str | None = None) -> Arrival:
    return Arrival(
        CreateRequest(model="m", input=(MessageItem("user", text),), previous_response_id=previous)
    )


def rejected(previous: str | None = None) -> Arrival:
    error = InvalidJson("bad")
    error.previous_response_id = previous
    return Arrival(error)


def record(response_id: str, *, store: bool = False, key: str | None = None) -> ResponseRecord:
    chain = ChainState(key or f"ck_{response_id}", HEADER, array("I", [1, 2, 3]))
    return ResponseRecord("t", response_id, ChainRef(chain, 3, chain.agent), store=store)


def session(max_queued: int = 2) -> ConnectionSession:
    return ConnectionSession(opened_at=0.0, max_age_seconds=3600.0, max_queued=max_queued)


def test_a_create_starts_a_turn_and_more_creates_wait_in_order() -> None:
    s = session()
    first, second, third = create("1"), create("2"), create("3")
    assert s.receive(first, 1.0) == [StartTurn(first)]
    assert s.state is RUNNING
    assert s.receive(second, 1.0) == []
    assert s.receive(third, 1.0) == []
    assert s.queued == 2
    assert s.turn_finished(TurnOutcome(record("r1"), None), 2.0) == [StartTurn(second)]
    effects = s.turn_finished(TurnOutcome(record("r2"), None), 3.0)
    assert StartTurn(third) in effects
    assert s.queued == 0


def test_the_queue_is_bounded() -> None:
    s = session(max_queued=1)
    s.receive(create(), 0.0)
    s.receive(create(), 0.0)
    effects = s.receive(create(), 0.0)
    assert len(effects) == 1
    assert isinstance(effects[0], SendError)
    assert isinstance(effects[0].error, TooManyQueued)
    assert effects[0].error.status == 429
    assert s.state is RUNNING


def test_a_rejected_create_is_answered_in_its_place_and_the_connection_stays_usable() -> None:
    s = session()
    assert isinstance(s.receive(rejected(), 0.0)[0], SendError)
    assert s.state is IDLE
    s.receive(create("1"), 0.0)
    bad, good = rejected(), create("2")
    s.receive(bad, 0.0)
    s.receive(good, 0.0)
    effects = s.turn_finished(TurnOutcome(record("r1"), None), 1.0)
    assert effects == [SendError(bad.create), StartTurn(good)]  # type: ignore[arg-type]


def test_only_the_most_recent_response_is_cached() -> None:
    s = session()
    s.receive(create(), 0.0)
    r1 = record("r1")
    s.turn_finished(TurnOutcome(r1, None), 1.0)
    assert s.lookup("r1") is r1
    s.receive(create(previous="r1"), 1.0)
    r2 = record("r2")
    effects = s.turn_finished(TurnOutcome(r2, "r1"), 2.0)
    assert s.lookup("r1") is None
    assert s.lookup("r2") is r2
    assert effects == [ReleaseChain("ck_r1")]  # r1's store:false chain is no longer referenced


def test_the_same_chain_is_not_released_when_extended_in_place() -> None:
    s = session()
    s.receive(create(), 0.0)
    s.turn_finished(TurnOutcome(record("r1", key="ck"), None), 1.0)
    s.receive(create(), 1.0)
    shared = record("r2")
    shared.ref = s.last.ref  # type: ignore[union-attr]
    assert s.turn_finished(TurnOutcome(shared, None), 2.0) == []


def test_closing_releases_the_last_store_false_chain_unless_it_was_handed_off() -> None:
    for keep_chain, released in ((False, [ReleaseChain("ck_r1")]), (True, [])):
        s = session()
        s.receive(create(), 0.0)
        s.turn_finished(TurnOutcome(record("r1"), None), 1.0)
        assert s.close(keep_chain=keep_chain) == released  # a sealed chain stays on the worker, warm
        assert s.lookup("r1") is None


def test_a_failed_continuation_evicts_the_referenced_response() -> None:
    s = session()
    s.receive(create(), 0.0)
    s.turn_finished(TurnOutcome(record("r1"), None), 1.0)
    s.receive(create(previous="r1"), 1.0)
    effects = s.turn_finished(TurnOutcome(None, "r1"), 2.0)
    assert s.lookup("r1") is None
    assert effects == [ReleaseChain("ck_r1")]


def test_a_rejected_continuation_also_evicts() -> None:
    s = session()
    s.receive(create(), 0.0)
    s.turn_finished(TurnOutcome(record("r1", store=True), None), 1.0)
    effects = s.receive(rejected(previous="r1"), 2.0)
    assert s.lookup("r1") is None
    assert effects == [SendError(effects[0].error)]


def test_a_failure_without_previous_keeps_the_cache() -> None:
    s = session()
    s.receive(create(), 0.0)
    s.turn_finished(TurnOutcome(record("r1"), None), 1.0)
    s.receive(create(), 1.0)
    s.turn_finished(TurnOutcome(None, None), 2.0)
    assert s.lookup("r1") is not None


def test_the_age_limit_closes_an_idle_connection() -> None:
    s = ConnectionSession(opened_at=10.0, max_age_seconds=60.0, max_queued=2)
    assert s.deadline == 70.0
    assert s.deadline_reached(69.9) == []
    effects = s.deadline_reached(70.0)
    assert isinstance(effects[0], SendError)
    assert isinstance(effects[0].error, ConnectionLimitReached)
    assert effects[0].error.status == 400
    assert "(1 minutes)" in effects[0].error.message
    assert effects[-1] == Close(1000, "connection limit reached")
    assert s.state is CLOSED


def test_the_age_limit_lets_the_running_turn_finish_then_answers_queued_creates() -> None:
    s = ConnectionSession(opened_at=0.0, max_age_seconds=3600.0, max_queued=4)
    s.receive(create(), 1.0)
    s.receive(create(), 2.0)
    assert s.deadline_reached(3600.0) == []
    s.receive(create(), 3601.0)
    effects = s.turn_finished(TurnOutcome(record("r1"), None), 3602.0)
    errors = [e for e in effects if isinstance(e, SendError)]
    assert len(errors) == 2
    assert all(e.error.code == "websocket_connection_limit_reached" for e in errors)
    assert "(60 minutes)" in errors[0].error.message
    assert effects[-1] == Close(1000, "connection limit reached")
    assert not any(isinstance(e, StartTurn) for e in effects)


def test_a_create_after_the_deadline_on_an_idle_socket_gets_the_limit_error() -> None:
    s = ConnectionSession(opened_at=0.0, max_age_seconds=10.0, max_queued=4)
    effects = s.receive(create(), 11.0)
    assert [type(e) for e in effects] == [SendError, Close]


def test_close_releases_store_false_chains_only() -> None:
    s = session()
    s.receive(create(), 0.0)
    s.turn_finished(TurnOutcome(record("r1", store=True), None), 1.0)
    assert s.close() == []
    assert s.state is CLOSED
    assert s.receive(create(), 2.0) == []
    assert s.turn_finished(TurnOutcome(None, None), 2.0) == []


inputs = st.lists(st.sampled_from(["create", "bad", "done_ok", "done_fail", "deadline"]), max_size=40)


@settings(max_examples=300)
@given(inputs)
def test_at_most_one_turn_runs_and_creates_start_in_arrival_order(script: list[str]) -> None:
    s = ConnectionSession(opened_at=0.0, max_age_seconds=100.0, max_queued=3)
    running = 0
    started: list[int] = []
    sent = 0
    for step, what in enumerate(script):
        now = float(step * 10)
        if what == "create":
            effects = s.receive(Arrival(CreateRequest(model="m", input=(), metadata={"n": str(sent)})), now)
            sent += 1
        elif what == "bad":
            effects = s.receive(rejected(), now)
        elif what == "deadline":
            effects = s.deadline_reached(now)
        elif running:
            outcome = TurnOutcome(record(f"r{step}") if what == "done_ok" else None, None)
            running -= 1
            effects = s.turn_finished(outcome, now)
        else:
            continue
        for effect in effects:
            if isinstance(effect, StartTurn):
                running += 1
                started.append(int(effect.create.metadata["n"]))
        assert running <= 1
        assert (s.state is RUNNING) == (running == 1) or s.state is CLOSED
        assert s.queued <= 3
    assert started == sorted(started)
