"""`tether bench`: the agent workload in the three modes, side by side, with its report and plots.

    tether bench                         start a cluster (1 box, 1 worker, calibrated sim), run everything
    tether bench --smoke                 a small, fast run (CI)
    tether bench --base-url http://127.0.0.1:8080/v1 --metrics http://127.0.0.1:9101/metrics ...
                                         against a running cluster (`tether up` prints its metrics URLs)

Flags override `TETHER_BENCH_*` variables (loadtest/bench/settings.py). The work itself lives in
loadtest/bench/ (the `loadtest` extra: matplotlib, tqdm); see docs/benchmark.md. Exit status: 0 when the
benchmark ran (a missed target is a finding, not a failure), 1 when it could not run, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_FIELDS_WITH_LISTS = {
    "modes",
    "links",
    "tool_calls",
    "history_tokens",
    "capacity_levels",
    "capacity_modes",
    "metrics",
}


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register `bench` on the `tether` subcommands; every flag defaults to None (= the env/default)."""
    p: argparse.ArgumentParser = commands.add_parser(
        "bench",
        help="measure WebSocket vs HTTP agent runs (bytes, TTFT, run time, box CPU, capacity)",
        description=__doc__.splitlines()[0] + " Flags override TETHER_BENCH_* variables.",
    )
    p.add_argument("--smoke", action="store_true", help="a small, fast configuration (CI); flags still apply")
    target = p.add_argument_group("cluster")
    target.add_argument("--base-url", help="a running cluster's base URL (ending in /v1); default: start one")
    target.add_argument(
        "--metrics", action="append", help="a /metrics URL of that cluster (repeat per process)"
    )
    target.add_argument("--api-key", help="the key clients use (default tether-dev-key)")
    target.add_argument("--boxes", type=int, help="boxes of the cluster it starts (default 1)")
    target.add_argument("--workers", type=int, help="workers of the cluster it starts (default 1)")
    target.add_argument("--speed", type=float, help="sim timing of the cluster it starts (1 = calibrated)")
    target.add_argument("--no-pin", dest="pin", action="store_false", default=None, help="do not pin CPUs")
    load = p.add_argument_group("workload")
    load.add_argument("--modes", help="comma-separated: ws,http_full,http_chained (default all)")
    load.add_argument("--links", help="comma-separated: loopback,shaped (default both; shaped needs root)")
    load.add_argument("-c", "--concurrency", type=int, help="concurrent agents per job (default 4)")
    load.add_argument("--runs", type=int, help="agent runs per agent per job (default 2)")
    load.add_argument("--tool-calls", help="the T sweep, comma-separated (default 1,5,10,20)")
    load.add_argument("--headline-tool-calls", type=int, help="T of the headline figures (default 20)")
    load.add_argument("--output-bytes", type=int, help="S: bytes per tool output (default 4096)")
    load.add_argument("--rtt-ms", type=float, help="shaped link round-trip time (default 20)")
    load.add_argument("--rate-mbit", type=float, help="shaped link rate each way (default 50)")
    load.add_argument("--no-overhead", dest="overhead", action="store_false", default=None)
    cap = p.add_argument_group("history and capacity")
    cap.add_argument("--history-tokens", help="history sizes for box CPU per turn (default 1000,...,100000)")
    cap.add_argument("--history-seconds", type=float, help="measured seconds per history size and mode")
    cap.add_argument("--no-capacity", dest="capacity", action="store_false", default=None)
    cap.add_argument(
        "--capacity-tokens", type=int, help="history size of the capacity steps (default 100000)"
    )
    cap.add_argument("--capacity-levels", help="concurrent agents per step (default 1,2,4,8,16,32)")
    cap.add_argument("--capacity-modes", help="modes of the capacity steps (default ws,http_full)")
    cap.add_argument("--capacity-seconds", type=float, help="measured seconds per step (default 6)")
    cap.add_argument("--capacity-output-bytes", type=int, help="tool output bytes of steady agents (512)")
    cap.add_argument("--slo-ttft-ms", type=float, help="p99 TTFT bound of the capacity (default 500)")
    run = p.add_argument_group("run")
    run.add_argument("--out", help="output folder (default results/bench-<UTC time>)")
    run.add_argument(
        "--report-only", metavar="DIR", help="redraw DIR/report.md and charts from DIR/results.json"
    )
    run.add_argument("--no-plots", dest="plots", action="store_false", default=None)
    run.add_argument("--deadline", type=float, help="seconds for the whole benchmark (default 1800)")
    run.add_argument("--turn-timeout", type=float, help="seconds per turn before it counts as failed")
    return p


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    from loadtest.bench.settings import BenchSettings

    values: dict[str, Any] = {}
    for name in BenchSettings.__dataclass_fields__:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in _FIELDS_WITH_LISTS and isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            value = (
                tuple(int(p) for p in parts)
                if name in {"tool_calls", "history_tokens", "capacity_levels"}
                else tuple(parts)
            )
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return values


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    """BenchSettings: TETHER_BENCH_* from `environ`, the smoke preset, then the flags given."""
    from loadtest.bench.settings import SMOKE, BenchSettings

    settings = BenchSettings.from_env(environ)
    if args.smoke:
        settings = settings.replace(**SMOKE)
    return settings.replace(**_flag_values(args))


def run(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> int:
    """Run `tether bench` (`argv`: the command line after `tether`, for the report); the exit status."""
    try:
        from loadtest.bench.entry import rewrite_report, run_bench
        from loadtest.bench.settings import BenchConfigError
    except ImportError as exc:  # the loadtest extra is missing
        print(
            f"tether bench needs the loadtest extra (pip install 'tether[loadtest]'): {exc}", file=sys.stderr
        )
        return 1
    if args.report_only:
        return rewrite_report(Path(args.report_only))
    try:
        settings = settings_from_args(args, environ)
    except (BenchConfigError, ValueError) as exc:
        parser.error(str(exc))
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(run_bench(settings, command=" ".join(["tether", *map(shlex.quote, words)])))
    except KeyboardInterrupt:  # asyncio.run cancelled the benchmark, so its cleanups ran
        print("bench interrupted", file=sys.stderr)
        return 130
