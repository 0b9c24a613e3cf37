"""Locust hooks: the Tether knobs as parser arguments (each with a TETHER_LOAD_* variable) and the
quitting check that fails the run when the error ratio or the p95 time to first token is over bounds.

Registered by `register(events)` from the locustfile, so importing this module has no side effects.
"""

from __future__ import annotations

import logging
from typing import Any

from locust.env import Environment
from locust.runners import WorkerRunner
from locust.stats import RequestStats, StatsEntry

from loadtest.schedule import SHAPES, threshold_problems
from loadtest.workload import DEFAULT_MODEL

_LOG = logging.getLogger("loadtest")
TTFT = "TTFT"


def add_arguments(parser: Any) -> None:
    """The Tether options on Locust's parser (also shown in the web UI)."""
    group = parser.add_argument_group("Tether agent workload")
    add = group.add_argument
    add(
        "--tool-calls",
        type=int,
        default=20,
        env_var="TETHER_LOAD_TOOL_CALLS",
        help="tool calls per agent run (0..64)",
    )
    add(
        "--tool-output-bytes",
        type=int,
        default=4096,
        env_var="TETHER_LOAD_TOOL_OUTPUT_BYTES",
        help="bytes per tool output",
    )
    add(
        "--history-tokens",
        type=int,
        default=0,
        env_var="TETHER_LOAD_HISTORY_TOKENS",
        help="synthetic history before the first message",
    )
    add(
        "--think-time",
        type=float,
        default=0.0,
        env_var="TETHER_LOAD_THINK_TIME",
        help="seconds between turns (tool run time)",
    )
    add(
        "--session-key",
        choices=("header", "query", "none"),
        default="header",
        env_var="TETHER_LOAD_SESSION_KEY",
        help="how the routing key travels: X-Session-Id header, session_id query, or not at all",
    )
    add(
        "--api-key",
        default=None,  # resolved by each user (loadtest/workload.py api_key), so the web UI never shows it
        env_var="TETHER_LOAD_API_KEY",
        help="bearer key (default: $OPENAI_API_KEY, else tether-dev-key)",
    )
    add("--model", default=DEFAULT_MODEL, env_var="TETHER_LOAD_MODEL", help="model name sent")
    add(
        "--turn-timeout",
        type=float,
        default=60.0,
        env_var="TETHER_LOAD_TURN_TIMEOUT",
        help="seconds per turn",
    )
    add(
        "--max-error-ratio",
        type=float,
        default=0.01,
        env_var="TETHER_LOAD_MAX_ERROR_RATIO",
        help="fail the run (exit 1) when more turns than this fail",
    )
    add(
        "--max-p95-ttft-ms",
        type=float,
        default=1000.0,
        env_var="TETHER_LOAD_MAX_P95_TTFT_MS",
        help="fail the run when the p95 time to first token is over this",
    )
    add(
        "--tether-shape",
        choices=SHAPES,
        default="steady",
        env_var="TETHER_LOAD_SHAPE",
        help="steady: -u users until --run-time; ramp: step up to -u over --ramp-seconds, then stop; "
        "soak: ramp up, then hold for --soak-seconds",
    )
    add("--ramp-seconds", type=float, default=60.0, env_var="TETHER_LOAD_RAMP_SECONDS")
    add("--ramp-steps", type=int, default=5, env_var="TETHER_LOAD_RAMP_STEPS")
    add("--soak-seconds", type=float, default=600.0, env_var="TETHER_LOAD_SOAK_SECONDS")  # fmt: skip


def merged(stats: RequestStats, request_type: str) -> StatsEntry:
    """One entry holding every entry of `request_type` (e.g. all TTFT entries)."""
    total = StatsEntry(stats, request_type, request_type, use_response_times_cache=False)
    for entry in stats.entries.values():
        if entry.method == request_type:
            total.extend(entry)
    return total


def problems_of(environment: Environment) -> list[str]:
    """The threshold rule (loadtest/schedule.py) applied to the run's stats."""
    opts: Any = environment.parsed_options
    stats = environment.stats
    turns = [e for e in stats.entries.values() if e.method != TTFT]
    ttft = merged(stats, TTFT)
    p95 = ttft.get_response_time_percentile(0.95) if ttft.num_requests else None
    return threshold_problems(
        sum(e.num_requests for e in turns),
        sum(e.num_failures for e in turns),
        p95,
        opts.max_error_ratio,
        opts.max_p95_ttft_ms,
    )


def on_quitting(environment: Environment, **_kwargs: Any) -> None:
    """Set exit code 1 when a threshold is exceeded (on the master or a local runner only)."""
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    problems = problems_of(environment)
    for problem in problems:
        _LOG.error("threshold exceeded: %s", problem)
    if problems:
        environment.process_exit_code = 1


def register(events: Any) -> None:
    """Hook the parser arguments and the quitting check into Locust's events."""
    events.init_command_line_parser.add_listener(add_arguments)
    events.quitting.add_listener(on_quitting)
