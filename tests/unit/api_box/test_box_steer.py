"""response.steer: parsing (api_box/core/steer.py) and the state machine (ConnectionSession.steer and what
happens when a steered response ends), pure: no sockets, time passed in."""

from __future__ import annotations

from array import array
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api_box.core.chain import ChainRef, ChainState, HeaderCache
from api_box.core.protocol import CreateRequest, Limits, MessageItem
from api_box.core.session import (
    Arrival,
    ConnectionSession,
    Effect,
    StartTurn,
    SteerAccepted,
    SteerFailed,
    SteerPending,
    StopResponse,
    TurnOutcome,
)
from api_box.core.steer import (
    InvalidSteer,
    RequiredInput,
    SteerRequest,
    accepted_event,
    failed_event,
    parse_steer,
    pending_event,
    required_inputs,
)
from api_box.core.store import ResponseRecord

HEADER = HeaderCache().header(None, ())
LIMITS = Limits()


def record(response_id: str) -> ResponseRecord:
    chain = ChainState(f"ck_{response_id}", HEADER, array("I", [1, 2, 3]))
    return ResponseRecord("t", response_id, ChainRef(chain, 3, chain.agent), store=False)


def create(lane: str | None = None, previous: str | None = None, **fields: Any) -> Arrival:
    request = CreateRequest(
        model="m",
        input=(MessageItem("user", "go"),),
        stream_id=lane,
        previous_response_id=previous,
        metadata={"k": "v"},
        **fields,
    )
    return Arrival(request, 0.0, 10)


def steer(target: str, text: str = "shorter") -> SteerRequest:
    result = parse_steer(
        {"type": "response.steer", "previous_response_id": target, "input": text}, LIMITS, 50
    )
    assert isinstance(result, SteerRequest)
    return result


def running(lane: str | None = None, **fields: Any) -> tuple[ConnectionSession, Arrival]:
    s = ConnectionSession(opened_at=0.0, max_age_seconds=100.0, max_queued=4, max_pending_steers=2)
    arrival = create(lane, **fields)
    assert s.receive(arrival, 0.0) == [StartTurn(arrival)]
    s.response_created("r1", lane=lane)
    return s, arrival


# --------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("event", "why"),
    [
        ({"previous_response_id": "r", "input": "x", "stream_id": "a"}, "stream_id"),
        ({"previous_response_id": "r", "input": []}, "non-empty"),
        ({"previous_response_id": "r", "input": 3}, "non-empty"),
        ({"previous_response_id": "", "input": "x"}, "previous_response_id"),
        ({"input": "x"}, "previous_response_id"),
        ({"previous_response_id": "r", "input": [{"role": "assistant", "content": "x"}]}, "user message"),
        ({"previous_response_id": "r", "input": [{"role": "user", "content": "x", "id": "m"}]}, "only type"),
        ({"previous_response_id": "r", "input": [{"type": "function_call_output", "call_id": "c"}]}, "only"),
        (
            {"previous_response_id": "r", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "part",
        ),
        ({"previous_response_id": "r", "input": [{"role": "user"}]}, "content"),
    ],
)
def test_anything_but_user_messages_is_invalid_input(event: dict[str, Any], why: str) -> None:
    parsed = parse_steer({"type": "response.steer", **event}, LIMITS)
    assert isinstance(parsed, InvalidSteer)
    assert why in parsed.message
    assert parsed.raw_input == event.get("input")


def test_strings_messages_and_parts_are_accepted() -> None:
    content = [{"type": "input_text", "text": "a"}, {"type": "input_image", "image_url": "https://x/i.png"}]
    parsed = parse_steer(
        {
            "type": "response.steer",
            "previous_response_id": "r",
            "input": [
                {"type": "message", "role": "user", "content": content},
                {"role": "user", "content": "b"},
            ],
        },
        LIMITS,
        99,
    )
    assert isinstance(parsed, SteerRequest)
    assert [item.text for item in parsed.items] == [
        "a[image omitted: this model does not accept images]",
        "b",
    ]
    assert all(item.role == "user" for item in parsed.items)
    assert parsed.size == 99


def test_the_answers_have_the_sdk_shapes() -> None:
    from openai.types.responses import (
        ResponseSteerAcceptedEvent,
        ResponseSteerFailedEvent,
        ResponseSteerPendingEvent,
    )

    from api_box.core.steer import Steer

    accepted = Steer("steer_1", steer("r1"))
    ResponseSteerAcceptedEvent.model_validate(accepted_event(accepted, 3))
    required = (RequiredInput("c1", "read_file"), RequiredInput("c2", "patch", custom=True))
    ResponseSteerPendingEvent.model_validate(pending_event(accepted, required, 4))
    failed = failed_event(
        "response_not_found", "no", previous_response_id="r9", raw_input="x", steer_id=None, sequence_number=0
    )
    assert "id" not in failed["steer"]
    ResponseSteerFailedEvent.model_validate(failed)
    output = [{"type": "message"}, {"type": "function_call", "call_id": "c1", "name": "read_file"}]
    assert required_inputs(output) == (RequiredInput("c1", "read_file"),)


# ------------------------------------------------------------------------------------ the machine
def test_a_steer_is_accepted_stops_the_response_and_a_successor_follows_at_once() -> None:
    s, _ = running("a")
    queued = create("a", previous="r1")
    s.receive(queued, 1.0)
    effects = s.steer(steer("r1"), 1.0)
    accepted = effects[0]
    assert isinstance(accepted, SteerAccepted)
    assert accepted.lane == "a"
    assert effects[1:] == [StopResponse("a")]
    assert s.steer(steer("r1", "also"), 1.0)[1:] == []  # stopping already
    done = s.turn_finished(TurnOutcome(record("r1"), None), 2.0, lane="a")
    (start,) = [e for e in done if isinstance(e, StartTurn)]  # the successor, not the queued create
    successor = start.arrival
    assert successor.automatic
    assert [st.request.items[0].text for st in successor.steers] == ["shorter", "also"]
    assert start.create.previous_response_id == "r1"
    assert [i.text for i in start.create.input] == ["shorter", "also"]
    assert start.create.metadata == {"k": "v"}  # the steered response's settings
    assert start.create.stream_id == "a"
    assert successor.received_at == 2.0
    assert s.queued == 1  # the queued create runs after the successor


def test_steers_that_cannot_be_taken() -> None:
    s, _ = running()
    assert _codes(s.steer(steer("r9"), 0.0)) == ["response_not_found"]
    assert _codes(s.steer(InvalidSteer("bad", "r1", None), 0.0)) == ["invalid_input"]
    s.steer(steer("r1"), 0.0)
    s.steer(steer("r1"), 0.0)
    assert _codes(s.steer(steer("r1"), 0.0)) == ["too_many_pending_steers"]
    s.turn_finished(TurnOutcome(record("r1"), None), 1.0)
    s.response_created("r2")  # the successor runs
    s.turn_finished(TurnOutcome(record("r2"), "r1"), 2.0)
    assert _codes(s.steer(steer("r2"), 3.0)) == ["response_already_completed"]
    for fields in ({"generate": False}, {"compact_threshold": 0}):
        warm, _ = running(**fields)
        assert _codes(warm.steer(steer("r1"), 0.0)) == ["steering_not_supported"]
    off = ConnectionSession(opened_at=0.0, max_age_seconds=100.0, max_queued=4, steering=False)
    off.receive(create(), 0.0)
    off.response_created("r1")
    assert _codes(off.steer(steer("r1"), 0.0)) == ["steering_not_supported"]
    late, _ = running()
    assert _codes(late.steer(steer("r1"), 100.0)) == ["response_not_active"]  # past the connection's age


def test_a_failed_steered_response_or_successor_returns_the_steers_with_their_ids() -> None:
    s, _ = running()
    s.steer(steer("r1"), 0.0)
    failed = s.turn_finished(TurnOutcome(None, None), 1.0)
    assert _codes(failed) == ["successor_creation_failed"]
    assert isinstance(failed[0], SteerFailed)
    assert failed[0].steer_id == "steer_1"
    s2, _ = running()
    s2.turn_finished(TurnOutcome(record("r0"), None), 0.5)  # not steered: nothing else happens
    s3, _ = running()
    s3.steer(steer("r1"), 0.0)
    start = next(
        e for e in s3.turn_finished(TurnOutcome(record("r1"), None), 1.0) if isinstance(e, StartTurn)
    )
    refused = s3.turn_finished(TurnOutcome(None, "r1", refused="too long"), 2.0)
    assert _codes(refused) == ["successor_creation_failed"]
    assert "too long" in refused[0].message  # type: ignore[union-attr]
    assert start.arrival.automatic
    assert s3.lookup("r1") is not None  # a failed successor does not evict the steered response


def test_a_response_that_waits_for_tool_outputs_leaves_its_steers_pending() -> None:
    s, _ = running()
    s.steer(steer("r1"), 0.0)
    required = (RequiredInput("call_1", "read_file"),)
    effects = s.turn_finished(TurnOutcome(record("r1"), None, required=required), 1.0)
    (pending,) = effects
    assert isinstance(pending, SteerPending)
    assert pending.required == required
    assert s.steer(steer("r1"), 1.5)[0].code == "response_already_completed"  # type: ignore[union-attr]
    continuation = create(previous="r1")
    (start,) = s.receive(continuation, 2.0)
    assert isinstance(start, StartTurn)
    assert [i.text for i in start.create.input] == ["shorter", "go"]  # the steer, prepended
    assert [st.steer_id for st in start.arrival.steers] == ["steer_1"]
    assert not start.arrival.automatic


def test_waiting_steers_fail_when_the_lane_continues_from_elsewhere() -> None:
    s, _ = running()
    s.steer(steer("r1"), 0.0)
    s.turn_finished(TurnOutcome(record("r1"), None, required=(RequiredInput("c", "f"),)), 1.0)
    other = create()
    effects = s.receive(other, 2.0)
    assert _codes(effects) == ["response_not_active"]
    assert effects[-1] == StartTurn(other)


def _codes(effects: list[Effect]) -> list[str]:
    return [e.code for e in effects if isinstance(e, SteerFailed)]


events = st.lists(
    st.sampled_from(["create", "steer", "steer_other", "done", "done_calls", "done_fail", "continue"]),
    max_size=40,
)


@settings(max_examples=300)
@given(events)
def test_every_accepted_steer_is_committed_or_failed_once_or_still_waits(script: list[str]) -> None:
    s = ConnectionSession(opened_at=0.0, max_age_seconds=1e9, max_queued=4, max_pending_steers=2)
    running_id: str | None = None
    last: str | None = None
    n = 0
    accepted: set[str] = set()
    on_running: set[str] = set()  # accepted for the response running now
    pending: set[str] = set()
    committed: list[str] = []
    failed: list[str] = []
    for step, what in enumerate(script):
        now = float(step)
        if what in ("create", "continue"):
            effects = s.receive(create(previous=last if what == "continue" else None), now)
        elif what.startswith("steer"):
            effects = s.steer(steer(running_id if what == "steer" and running_id else "r_none"), now)
        elif what.startswith("done") and running_id is not None:
            required = (RequiredInput("c", "f"),) if what == "done_calls" else ()
            ok = what != "done_fail"
            effects = s.turn_finished(
                TurnOutcome(record(running_id) if ok else None, last, required=required), now
            )
            last, running_id, on_running = (running_id if ok else last), None, set()
        else:
            continue
        for effect in effects:
            if isinstance(effect, SteerAccepted):
                accepted.add(effect.steer.steer_id)
                on_running.add(effect.steer.steer_id)
            elif isinstance(effect, SteerPending):
                pending.add(effect.steer.steer_id)
            elif isinstance(effect, SteerFailed) and effect.steer_id is not None:
                failed.append(effect.steer_id)
                pending.discard(effect.steer_id)
            elif isinstance(effect, StartTurn):
                n += 1
                running_id = f"r{n}"
                s.response_created(running_id)
                committed += [st.steer_id for st in effect.arrival.steers]
                pending -= {st.steer_id for st in effect.arrival.steers}
        assert s.running <= 1
    assert len(committed) == len(set(committed))
    assert len(failed) == len(set(failed))
    assert not set(committed) & set(failed)
    assert accepted == set(committed) | set(failed) | pending | on_running
