"""The chaos scenario, CI-sized: 200 concurrent agent sessions through the router of a real local cluster
(3 boxes, 2 workers, Redis) while box-0 drains and box-1 is killed (tests/chaos/scenario.py)."""

from __future__ import annotations

import collections
import shutil

import pytest

from tests.chaos.scenario import chaos_spec, print_report, run_scenario
from tether.supervisor import LocalCluster

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

SESSIONS = 200
TURNS = 6
LOSS_WINDOW_BOUND = 1.0  # seconds; the measured write-behind lag is tens of milliseconds (README)
RESUME_P99_BOUND = 5.0  # seconds, on 2 shared cores (the README has the figures)


async def test_sessions_survive_a_drain_with_no_lost_turn_and_a_kill_within_the_lag() -> None:
    logs: collections.deque[str] = collections.deque(maxlen=200)
    async with LocalCluster(
        chaos_spec(), sink=lambda name, _, line: logs.append(f"[{name}] {line}")
    ) as cluster:
        report = await run_scenario(
            cluster, sessions=SESSIONS, turns=TURNS, drain="box-0", kill="box-1", survivor="box-2"
        )
    print_report(report)
    assert report.sessions == SESSIONS
    assert report.turns_completed >= SESSIONS * TURNS  # every session finished its run
    assert report.drained_box_exit == 0, "\n".join(logs)
    assert report.disrupted_by_drain > 0
    assert report.disrupted_by_kill > 0
    assert report.turns_lost_drain == 0
    assert report.kill_loss_window_s < LOSS_WINDOW_BOUND
    assert report.resumed + report.fell_back >= max(report.disrupted_by_drain, report.disrupted_by_kill)
    assert report.resume_p99_s < RESUME_P99_BOUND
