"""`tether bench`: the agent workload's arms (mode + worker routing), side by side, with report and plots.

    tether bench                         start clusters (1 box, 4 workers, calibrated sim; one per worker
                                         routing and KV regime), run everything
    tether bench --smoke                 a small, fast run (CI)
    tether bench --base-url http://127.0.0.1:8080/v1 --metrics http://127.0.0.1:9101/metrics ...
                                         against a running cluster (`tether up` prints its metrics URLs)

The flags are derived from the fields of BenchSettings (loadtest/bench/settings.py): one field is one
`TETHER_BENCH_*` variable and one flag, with its help and default shown from the field, so a new knob is one
line there. tether/cli.py only registers this parser and dispatches to `run`. The work itself (and the
`loadtest` extra it needs: matplotlib, tqdm) is imported only when the benchmark runs; see docs/benchmark.md.
Exit status: 0 when the benchmark ran (a missed target is a finding, not a failure), 1 when it could not
run, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import Field, fields
from pathlib import Path
from typing import Any, get_type_hints

from loadtest.bench.settings import ENV_PREFIX, SMOKE, BenchConfigError, BenchSettings, convert

GROUPS = ("cluster", "workload", "history and capacity", "run")
_REPEATED = frozenset(
    {"metrics"}
)  # given once per value (--metrics URL --metrics URL) rather than comma-separated


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register `bench` on the `tether` subcommands; every flag defaults to None (= the env/default)."""
    p: argparse.ArgumentParser = commands.add_parser(
        "bench",
        help="measure WebSocket vs HTTP agent runs under affinity and round-robin worker routing "
        "(run time, TTFT, cache hits, bytes, box CPU, capacity)",
        description=(__doc__ or "").splitlines()[0] + " Flags override TETHER_BENCH_* variables.",
    )
    p.add_argument("--smoke", action="store_true", help="a small, fast configuration (CI); flags still apply")
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    hints = get_type_hints(BenchSettings)
    for f in fields(BenchSettings):
        _add_flag(groups[f.metadata["group"]], f, hints[f.name])
    groups["run"].add_argument(
        "--report-only", metavar="DIR", help="redraw DIR/report.md and charts from DIR/results.json"
    )
    return p


def _add_flag(group: Any, f: Field[Any], kind: Any) -> None:
    dashed, variable = f.name.replace("_", "-"), ENV_PREFIX + f.name.upper()
    if kind is bool:  # a switch that turns the default over
        on = bool(f.default)
        flag = f"--no-{dashed}" if on else f"--{dashed}"
        words = f"do not {f.metadata['help']}" if on else f.metadata["help"]
        switch = {"action": "store_const", "const": not on, "default": None}
        group.add_argument(flag, dest=f.name, help=f"{words} ({variable})", **switch)
        return
    help_text = f"{f.metadata['help']} (default {f.metadata['shown'] or _shown(f.default)}; {variable})"
    names = [n for n in (f.metadata["short"], f"--{dashed}") if n]
    metavar = "URL" if f.name in _REPEATED else f.name.upper()
    action = "append" if f.name in _REPEATED else "store"
    group.add_argument(*names, dest=f.name, action=action, metavar=metavar, help=help_text)


def _shown(default: object) -> str:
    if isinstance(default, tuple):
        return ",".join(str(item) for item in default) or "none"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The BenchSettings fields given as flags, converted like their TETHER_BENCH_* variables."""
    hints = get_type_hints(BenchSettings)
    values: dict[str, Any] = {}
    for f in fields(BenchSettings):
        raw = getattr(args, f.name, None)
        if raw is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(raw, list):  # a repeated flag
            values[f.name] = tuple(convert(flag, item, str) for item in raw)
        elif isinstance(raw, str):
            values[f.name] = convert(flag, raw, hints[f.name])
        else:
            values[f.name] = raw  # a boolean switch
    return values


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> BenchSettings:
    """BenchSettings: TETHER_BENCH_* from `environ`, the smoke preset, then the flags given."""
    settings = BenchSettings.from_env(environ)
    if args.smoke:
        settings = settings.replace(**SMOKE)
    return settings.replace(**flag_values(args))


def run(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> int:
    """Run `tether bench` (`argv`: the command line after `tether`, for the report); the exit status."""
    try:
        from loadtest.bench.entry import rewrite_report, run_bench
    except ImportError as exc:  # the loadtest extra is missing
        print(
            f"tether bench needs the loadtest extra (pip install 'tether[loadtest]'): {exc}", file=sys.stderr
        )
        return 1
    if args.report_only:
        return rewrite_report(Path(args.report_only))
    try:
        settings = settings_from_args(args, environ)
    except BenchConfigError as exc:
        parser.error(str(exc))
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(run_bench(settings, command=" ".join(["tether", *map(shlex.quote, words)])))
    except KeyboardInterrupt:  # asyncio.run cancelled the benchmark, so its cleanups ran
        print("bench interrupted", file=sys.stderr)
        return 130
