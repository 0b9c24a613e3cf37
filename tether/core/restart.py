"""When `tether up` starts a child again after it exited: a restart policy with crash-loop backoff. Pure.

Like a Kubernetes pod with `restartPolicy: Always`, every exit is followed by a restart, whatever the
status (a box that drained after SIGTERM exits 0 and comes back too). The delay grows while a child keeps
exiting soon after it started:

    ran >= stable_after before it exited   restart at once, and forget earlier quick exits
    1st quick exit in a row                restart at once
    2nd, 3rd, ... quick exit in a row      wait first_backoff, then twice as long each time (max_backoff)

A restart that does not get as far as serving (the process exits, stays silent, or fails its readiness
check) counts as a quick exit. Time is an argument (`now`, seconds on any monotonic clock): the shell
(tether/supervisor.py) passes its loop's clock, the tests a fake one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RestartDecision", "RestartPolicy", "RestartTracker"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """The backoff of a crash loop: `first_backoff` seconds, doubled per quick exit, capped at
    `max_backoff`; a child that ran `stable_after` seconds counts as healthy again."""

    first_backoff: float = 1.0
    max_backoff: float = 30.0
    stable_after: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.first_backoff <= self.max_backoff:
            raise ValueError(
                f"need 0 <= first_backoff <= max_backoff, got {self.first_backoff}, {self.max_backoff}"
            )
        if self.stable_after < 0:
            raise ValueError(f"stable_after must be >= 0, got {self.stable_after}")


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """What to do about one exit: wait `delay` seconds, then start the child again.

    `quick_exits` counts the exits in a row that came less than `stable_after` after a start (this one
    included; 0 when the child had run long enough). `ran_for` is how long it ran (None: it never
    became ready, so it was never counted as started).
    """

    delay: float
    quick_exits: int
    ran_for: float | None

    @property
    def crash_loop(self) -> bool:
        """True once the restart waits: the child keeps exiting soon after it starts."""
        return self.delay > 0


@dataclass(slots=True)
class _History:
    started_at: float | None = None
    quick_exits: int = 0


@dataclass(slots=True)
class RestartTracker:
    """Per child name: when it last became ready and how many quick exits it made in a row."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    _children: dict[str, _History] = field(default_factory=dict)

    def started(self, name: str, now: float) -> None:
        """`name` is serving (and ready) again as of `now`."""
        self._children.setdefault(name, _History()).started_at = now

    def exited(self, name: str, now: float) -> RestartDecision:
        """`name` exited at `now`, or a restart of it failed before it was ready: when to try again."""
        history = self._children.setdefault(name, _History())
        ran_for = None if history.started_at is None else max(0.0, now - history.started_at)
        history.started_at = None
        if ran_for is not None and ran_for >= self.policy.stable_after:
            history.quick_exits = 0
            return RestartDecision(0.0, 0, ran_for)
        history.quick_exits += 1
        return RestartDecision(self.backoff(history.quick_exits), history.quick_exits, ran_for)

    def forget(self, name: str) -> None:
        """Drop what is known of `name` (it was stopped on purpose; a later start begins afresh)."""
        self._children.pop(name, None)

    def backoff(self, quick_exits: int) -> float:
        """The delay before the restart that follows the `quick_exits`-th quick exit in a row."""
        if quick_exits <= 1:
            return 0.0
        delay = self.policy.first_backoff * 2.0 ** min(quick_exits - 2, 64)
        return min(delay, self.policy.max_backoff)
