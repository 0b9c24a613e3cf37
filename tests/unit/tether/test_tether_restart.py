"""The restart policy of `tether up` on a fake clock: restart at once, back off in a crash loop, recover."""

from __future__ import annotations

import pytest

from tether.core.restart import RestartDecision, RestartPolicy, RestartTracker

POLICY = RestartPolicy(first_backoff=1.0, max_backoff=8.0, stable_after=10.0)


def test_a_child_that_ran_long_enough_comes_back_at_once_every_time() -> None:
    tracker = RestartTracker(POLICY)
    now = 0.0
    for _ in range(5):
        tracker.started("box-0", now)
        now += 60.0  # a drain after a minute of serving, again and again
        assert tracker.exited("box-0", now) == RestartDecision(0.0, 0, 60.0)


def test_a_crash_loop_backs_off_doubling_up_to_the_cap() -> None:
    tracker = RestartTracker(POLICY)
    now, delays = 0.0, []
    for _ in range(7):
        tracker.started("worker-0", now)
        now += 0.5  # exits half a second after each start
        decision = tracker.exited("worker-0", now)
        delays.append(decision.delay)
        now += decision.delay
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_stable_run_forgets_the_crash_loop() -> None:
    tracker = RestartTracker(POLICY)
    tracker.started("box-1", 0.0)
    tracker.exited("box-1", 1.0)
    tracker.started("box-1", 1.0)
    assert tracker.exited("box-1", 2.0).quick_exits == 2
    tracker.started("box-1", 3.0)
    decision = tracker.exited("box-1", 13.0)  # ran exactly stable_after
    assert decision == RestartDecision(0.0, 0, 10.0)
    assert not decision.crash_loop
    tracker.started("box-1", 13.0)
    assert tracker.exited("box-1", 14.0) == RestartDecision(0.0, 1, 1.0)  # a first quick exit again


def test_failed_restarts_count_as_quick_exits_without_a_run_time() -> None:
    tracker = RestartTracker(POLICY)
    tracker.started("box-0", 0.0)
    assert tracker.exited("box-0", 100.0).delay == 0.0
    # the restart never became ready (its port taken, say): nothing was started in between
    second = tracker.exited("box-0", 100.5)
    third = tracker.exited("box-0", 102.0)
    assert (second.ran_for, second.quick_exits, second.delay) == (None, 1, 0.0)
    assert (third.ran_for, third.quick_exits, third.delay) == (None, 2, 1.0)
    assert third.crash_loop


def test_children_are_tracked_apart_and_forgotten_on_a_deliberate_stop() -> None:
    tracker = RestartTracker(POLICY)
    for name in ("box-0", "box-1"):
        tracker.started(name, 0.0)
    tracker.exited("box-0", 1.0)
    tracker.started("box-0", 1.0)
    assert tracker.exited("box-0", 2.0).delay == 1.0
    assert tracker.exited("box-1", 2.0).delay == 0.0  # box-0's loop is not box-1's
    tracker.forget("box-0")
    assert tracker.exited("box-0", 3.0) == RestartDecision(0.0, 1, None)


def test_the_backoff_never_overflows() -> None:
    assert RestartTracker(POLICY).backoff(10_000) == POLICY.max_backoff


@pytest.mark.parametrize(
    "kwargs",
    [{"first_backoff": -1.0}, {"first_backoff": 5.0, "max_backoff": 1.0}, {"stable_after": -1.0}],
)
def test_a_bad_policy_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must be|need"):
        RestartPolicy(**kwargs)
