"""TetherShape: steady, ramp or soak load, chosen with --tether-shape (loadtest/listeners.py).

It reads the common options (`-u` users, `-r` spawn rate, `-t` run time), so `--tether-shape steady`
behaves like plain Locust; `--run-time` stops any shape early. The arithmetic: loadtest/schedule.py.
"""

from __future__ import annotations

import time
from typing import Any

from locust import LoadTestShape

from loadtest.schedule import users_at


class TetherShape(LoadTestShape):
    """See the module docstring."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        opts: Any = self.runner.environment.parsed_options
        elapsed = time.perf_counter() - self.start_time
        if opts.run_time and elapsed >= opts.run_time:
            return None  # headless Locust starts its --run-time timer only after a shape ends
        users = users_at(
            opts.tether_shape,
            elapsed,
            opts.num_users or 1,
            opts.ramp_seconds,
            opts.ramp_steps,
            opts.soak_seconds,
        )
        return None if users is None else (users, float(opts.spawn_rate or users))
