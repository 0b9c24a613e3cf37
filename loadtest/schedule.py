"""Pure rules of the Locust run, kept free of Locust (tests import this; they never import locust).

`users_at` is the load shape (steady, ramp, soak); `threshold_problems` is the pass/fail rule of a run.
"""

from __future__ import annotations

import math

SHAPES = ("steady", "ramp", "soak")


def users_at(
    shape: str, elapsed: float, users: int, ramp_seconds: float, ramp_steps: int, soak_seconds: float
) -> int | None:
    """Users wanted `elapsed` seconds into the run; None: stop the test.

    steady: `users` all along. ramp: `ramp_steps` equal steps up to `users` over `ramp_seconds`, then
    stop. soak: a linear ramp to `users` over `ramp_seconds`, then hold for `soak_seconds`, then stop.
    """
    if shape == "steady":
        return users
    ramp = max(ramp_seconds, 0.0)
    if shape == "ramp":
        if elapsed >= ramp:
            return None
        steps = max(ramp_steps, 1)
        step = min(int(elapsed / ramp * steps) + 1, steps)
        return max(1, math.ceil(users * step / steps))
    if shape == "soak":
        if elapsed < ramp:
            return max(1, math.ceil(users * elapsed / ramp))
        return users if elapsed < ramp + soak_seconds else None
    raise ValueError(f"unknown shape {shape!r}: expected one of {', '.join(SHAPES)}")


def threshold_problems(
    turns: int, failures: int, p95_ttft_ms: float | None, max_error_ratio: float, max_p95_ttft_ms: float
) -> list[str]:
    """Why a run fails: no turns at all, too many failed turns, or a p95 time to first token too high."""
    problems = []
    if turns == 0:
        problems.append("no turn completed or failed")
    elif failures / turns > max_error_ratio:
        problems.append(f"{failures} of {turns} turns failed (> {max_error_ratio:.1%})")
    if p95_ttft_ms is not None and p95_ttft_ms > max_p95_ttft_ms:
        problems.append(f"p95 time to first token {p95_ttft_ms:.0f} ms > {max_p95_ttft_ms:g} ms")
    return problems
