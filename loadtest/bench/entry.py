"""Run a benchmark end to end: the phases, then results.json, report.md and the plots; the exit status."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from loadtest.bench.netns import NetnsError
from loadtest.bench.procs import ChildFailed
from loadtest.bench.report import render, summarize, targets_table
from loadtest.bench.runner import Bench, BenchFailed
from loadtest.bench.settings import BenchSettings

EXIT_FAILED = 1


def _say(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line)  # above any progress bar


async def run_bench(settings: BenchSettings, *, command: str, say: Callable[[str], None] = _say) -> int:
    """Run the benchmark, write its outputs; 0 when it ran, 1 when it could not."""
    bench = Bench(settings, say=say, command=command)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    terminated: list[bool] = []

    def on_sigterm() -> None:
        terminated.append(True)
        if task is not None:
            task.cancel()

    # SIGTERM cancels like Ctrl-C does, so that every cleanup (cluster, emulator, namespace) runs.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        results = await bench.run()
    except (BenchFailed, ChildFailed, NetnsError, OSError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr, flush=True)
        _write_partial(bench)
        return EXIT_FAILED
    except asyncio.CancelledError:
        if not terminated:
            raise
        print("bench stopped by SIGTERM; everything it started is stopped and removed", file=sys.stderr)
        _write_partial(bench)
        return EXIT_FAILED
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
    write_outputs(results, bench.out, plots=settings.plots, say=say)
    return 0


def write_outputs(results: dict[str, Any], out: Path, *, plots: bool, say: Callable[[str], None]) -> None:
    """results.json, report.md and the PNG charts in `out`; prints the targets table."""
    summary = summarize(results)
    results["summary"] = summary
    written: list[str] = []
    if plots:
        from loadtest.bench.plots import draw_all

        written = draw_all(results, out)
    (out / "results.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    report = render(results, summary, written)
    (out / "report.md").write_text(report)
    for line in targets_table(summary, results):
        say(line)
    say(f"bench: wrote {out / 'results.json'}, {out / 'report.md'} and {len(written)} charts")


def _write_partial(bench: Bench) -> None:
    with contextlib.suppress(OSError, TypeError):
        bench.out.mkdir(parents=True, exist_ok=True)
        (bench.out / "partial.json").write_bytes(orjson.dumps(bench.results, option=orjson.OPT_NON_STR_KEYS))


def rewrite_report(out: Path, *, say: Callable[[str], None] = _say) -> int:
    """Redraw report.md and the charts of an earlier run from its results.json; the exit status."""
    try:
        results = orjson.loads((out / "results.json").read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        print(f"cannot read {out / 'results.json'}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    write_outputs(results, out, plots=True, say=say)
    return 0
