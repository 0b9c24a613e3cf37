"""The connection core on a fake clock: every deadline is a `now` the test passes in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.core.connection import Connection, Do, HeadRead, Limits, Reject, State
from router.core.errors import BadHead, HeadTimeout, HeadTooLarge, Overloaded
from router.core.head import Mode

LIMITS = Limits(head_timeout=10.0, max_head_bytes=1024, send_timeout=30.0, idle_timeout=40.0)
T0 = 1000.0
HEAD = b"GET /v1/responses HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
POST = b"POST /v1/responses HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n"


def relaying(now: float = T0) -> Connection:
    conn = Connection(LIMITS, now)
    assert isinstance(conn.receive(HEAD), HeadRead)
    conn.start_relay(now)
    return conn


def fire(conn: Connection, now: float, moved: int = 0) -> list[Do | Reject]:
    """Run the timer as the shell does: every action due at `now`, in order (NOTHING left out)."""
    actions: list[Do | Reject] = []
    while conn.deadline is not None and conn.deadline <= now and conn.state is not State.CLOSED:
        action = conn.on_timer(now, moved)
        if action is not Do.NOTHING:
            actions.append(action)
    return actions


# ---------------------------------------------------------------------------- head
def test_a_head_in_pieces_is_read_and_what_follows_it_is_kept() -> None:
    conn = Connection(LIMITS, T0)
    assert conn.deadline == T0 + 10.0
    assert conn.receive(HEAD[:7]) is Do.NOTHING
    read = conn.receive(HEAD[7:] + b"\x81\x05early")
    assert isinstance(read, HeadRead)
    assert (read.raw, read.head.method, conn.mode) == (HEAD, "GET", Mode.WS)
    assert conn.state is State.CONNECTING
    assert conn.deadline is None  # no head deadline once it was read
    assert conn.receive(b"more") is Do.NOTHING  # a chunk that arrived while connecting
    assert conn.take_early() == b"\x81\x05earlymore"
    assert conn.take_early() == b""


def test_plain_http_is_told_from_an_upgrade() -> None:
    conn = Connection(LIMITS, T0)
    assert isinstance(conn.receive(POST + b"{}"), HeadRead)
    assert conn.mode is Mode.HTTP


def test_the_head_deadline_does_not_move_however_active_the_client() -> None:
    conn = Connection(LIMITS, T0)
    conn.receive(b"GET / HTTP/1.1\r\n")
    for second in range(1, 10):
        assert conn.receive(b"X: y\r\n") is Do.NOTHING
        assert fire(conn, T0 + second) == []
    (action,) = fire(conn, T0 + 10.0)
    assert isinstance(action, Reject)
    assert isinstance(action.error, HeadTimeout)
    assert action.error.message == "no complete request head within 10.0 s"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 2000, HeadTooLarge),  # never ends within the limit
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n", HeadTooLarge),  # ends past the limit
        (b"GET / HTTP/1.1\r\nHost h\r\n\r\n", BadHead),
    ],
)
def test_bad_heads_are_rejected(data: bytes, error: type[Exception]) -> None:
    action = Connection(LIMITS, T0).receive(data)
    assert isinstance(action, Reject)
    assert type(action.error) is error


# ---------------------------------------------------------------------------- refused over the limit
REFUSAL = Overloaded("the router holds its maximum of 1 connections")


@pytest.mark.parametrize(("data", "mode"), [(HEAD, Mode.WS), (POST, Mode.HTTP)])
def test_a_refused_connection_reads_its_head_only_to_answer_the_refusal(data: bytes, mode: Mode) -> None:
    conn = Connection(LIMITS, T0, refusal=REFUSAL)
    assert conn.receive(data[:10]) is Do.NOTHING
    assert conn.receive(data[10:]) == Reject(REFUSAL)
    assert conn.mode is mode  # the shell answers a WebSocket upgrade with the refusal's 426
    assert conn.state is State.HEAD


def test_a_refused_connection_waits_for_its_head_for_linger_seconds_only() -> None:
    conn = Connection(LIMITS, T0, refusal=REFUSAL)
    assert conn.deadline == T0 + LIMITS.linger_seconds
    assert fire(conn, T0 + LIMITS.linger_seconds) == [Reject(REFUSAL)]  # not a 408: the refusal
    assert conn.mode is None


@pytest.mark.parametrize(
    "data", [b"GET / HTTP/1.1\r\nHost h\r\n\r\n", b"GET / HTTP/1.1\r\nX: " + b"a" * 2000]
)
def test_a_refused_connection_with_a_bad_head_gets_the_refusal(data: bytes) -> None:
    assert Connection(LIMITS, T0, refusal=REFUSAL).receive(data) == Reject(REFUSAL)


# ---------------------------------------------------------------------------- linger
def test_a_rejected_connection_lingers_then_closes() -> None:
    conn = Connection(LIMITS, T0)
    assert conn.reject(T0 + 1.0)
    assert conn.state is State.LINGER
    assert conn.deadline == T0 + 3.0  # linger_seconds; the head deadline is gone
    assert not conn.reject(T0 + 1.5)  # already answered
    assert conn.receive(b"x" * 1000) is Do.NOTHING  # read and dropped
    assert fire(conn, T0 + 2.9) == []
    assert fire(conn, T0 + 3.0) == [Do.CLOSE]
    assert conn.deadline is None


def test_a_lingering_client_that_keeps_sending_is_closed_after_linger_bytes() -> None:
    conn = Connection(LIMITS, T0)
    conn.reject(T0)
    assert conn.receive(b"x" * LIMITS.linger_bytes) is Do.NOTHING
    assert conn.receive(b"x") is Do.CLOSE


def test_a_head_timeout_answers_once() -> None:
    conn = Connection(LIMITS, T0)
    (action,) = fire(conn, T0 + 10.0)
    assert isinstance(action, Reject)
    assert conn.reject(T0 + 10.0)  # the shell answers it
    assert conn.deadline == T0 + 12.0
    assert fire(conn, T0 + 12.0) == [Do.CLOSE]


# ---------------------------------------------------------------------------- half-closes
def test_half_closes_pass_on_and_the_second_closes() -> None:
    conn = relaying()
    assert conn.client_eof() is Do.PASS_EOF
    assert conn.upstream_eof() is Do.CLOSE
    conn = relaying()
    assert conn.upstream_eof() is Do.PASS_EOF
    assert conn.client_eof() is Do.CLOSE


def test_a_client_eof_before_the_relay_closes() -> None:
    assert Connection(LIMITS, T0).client_eof() is Do.CLOSE
    conn = Connection(LIMITS, T0)
    conn.reject(T0)
    assert conn.client_eof() is Do.CLOSE


# ---------------------------------------------------------------------------- stall and flush
def test_a_client_that_takes_nothing_for_send_timeout_is_dropped() -> None:
    conn = relaying()
    conn.client_paused(T0 + 1.0)
    assert conn.stalled
    conn.client_paused(T0 + 5.0)  # still paused: the deadline does not move
    assert conn.deadline == T0 + 10.0  # the idle check comes first
    assert fire(conn, T0 + 30.9, moved=1) == []
    assert fire(conn, T0 + 31.0, moved=1) == [Do.ABORT_STALLED]
    assert not conn.stalled


def test_a_client_that_drains_a_little_gets_a_new_send_timeout() -> None:
    conn = relaying()
    conn.client_paused(T0)
    assert conn.client_resumed()  # relaying: the shell resumes reading from the box
    assert not conn.stalled
    conn.client_paused(T0 + 20.0)
    assert fire(conn, T0 + 30.0, moved=1) == []
    assert fire(conn, T0 + 50.0, moved=2) == [Do.ABORT_STALLED]


def test_after_the_box_went_away_the_flush_deadline_is_fixed() -> None:
    conn = relaying()
    conn.client_paused(T0)
    conn.upstream_lost(T0 + 10.0)
    conn.client_resumed()  # a partial drain: clears the stall, not the flush deadline
    conn.upstream_lost(T0 + 20.0)  # reported once; the first deadline stands
    conn.client_paused(T0 + 39.0)
    assert fire(conn, T0 + 39.9, moved=1) == []
    assert fire(conn, T0 + 40.0, moved=1) == [Do.ABORT]


def test_resume_outside_the_relay_resumes_nothing() -> None:
    conn = Connection(LIMITS, T0)
    conn.client_paused(T0)
    assert not conn.client_resumed()


# ---------------------------------------------------------------------------- idle
def test_a_connection_idle_for_idle_timeout_is_closed_then_aborted_if_it_cannot_flush() -> None:
    conn = relaying()
    assert conn.deadline == T0 + 10.0  # idle_timeout / idle_checks
    assert fire(conn, T0 + 10.0, moved=500) == []  # bytes moved since the start
    for check in (20.0, 30.0, 40.0):
        assert fire(conn, T0 + check, moved=500) == []
    assert fire(conn, T0 + 50.0, moved=500) == [Do.CLOSE_IDLE]  # four quiet checks: idle_timeout
    assert fire(conn, T0 + 60.0, moved=500) == [Do.ABORT]  # still here: its close did not flush


def test_any_byte_resets_the_idle_count() -> None:
    conn = relaying()
    moved = 0
    for check in range(1, 40):
        if check % 4 == 0:
            moved += 1  # a byte every 40 s (every fourth check)
        assert fire(conn, T0 + 10.0 * check, moved) == []


def test_a_late_timer_runs_each_due_check_once() -> None:
    """A timer that fires late (a busy loop) performs one check, then schedules the next from now."""
    conn = relaying()
    assert fire(conn, T0 + 35.0, moved=1) == []
    assert conn.deadline == T0 + 45.0


# ---------------------------------------------------------------------------- end
def test_finish_clears_every_deadline() -> None:
    conn = relaying()
    conn.client_paused(T0)
    conn.upstream_lost(T0)
    assert conn.finish()
    assert (conn.state, conn.deadline) == (State.CLOSED, None)
    assert fire(conn, T0 + 1e6) == []
    conn.client_paused(T0)  # late callbacks of a closed connection arm nothing
    conn.upstream_lost(T0)
    assert conn.deadline is None
    assert not Connection(LIMITS, T0).finish()  # never relayed


def test_start_relay_needs_a_read_head() -> None:
    with pytest.raises(RuntimeError):
        Connection(LIMITS, T0).start_relay(T0)


# ---------------------------------------------------------------------------- any order of events
EVENTS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "head",
                "bytes",
                "relay",
                "reject",
                "client_eof",
                "upstream_eof",
                "pause",
                "resume",
                "lost",
                "timer",
            ]
        ),
        st.floats(min_value=0.0, max_value=100.0),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(EVENTS)
def test_any_event_order_keeps_the_deadlines_sound(events: list[tuple[str, float]]) -> None:
    """Time only moves forward; after each event the deadline is None or a finite time; a timer run
    always ends (every due deadline is cleared or moved past `now`); a closed connection keeps none."""
    conn = Connection(LIMITS, T0)
    now, moved = T0, 0
    for name, step in events:
        now += step
        if name == "head" and conn.state is State.HEAD:
            conn.receive(HEAD)
        elif name == "bytes":
            moved += 1
            conn.receive(b"x")
        elif name == "relay" and conn.state is State.CONNECTING:
            conn.start_relay(now)
        elif name == "reject":
            conn.reject(now)
        elif name == "client_eof":
            conn.client_eof()
        elif name == "upstream_eof":
            conn.upstream_eof()
        elif name == "pause":
            conn.client_paused(now)
        elif name == "resume":
            conn.client_resumed()
        elif name == "lost":
            conn.upstream_lost(now)
        elif name == "timer":
            for _ in range(10):
                deadline = conn.deadline
                if deadline is None or deadline > now:
                    break
                conn.on_timer(now, moved)
            else:
                pytest.fail("a timer run did not end")
        deadline = conn.deadline
        assert deadline is None or deadline >= T0
    conn.finish()
    assert conn.deadline is None
