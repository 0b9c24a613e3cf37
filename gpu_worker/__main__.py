"""`tether-gpu-worker`: run one model worker.

On start it prints exactly one line to stdout, which launchers parse:

    tether-gpu-worker serving <host>:<port> metrics <url-or-off>

SIGTERM or SIGINT starts the graceful shutdown (health NOT_SERVING, in-flight generations finish within
--drain-seconds, then stop). Settings: TETHER_WORKER_* environment variables (gpu_worker/config.py),
overridden by the flags below.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

from gpu_worker.config import ENGINES, LOG_FORMATS, SettingsError, WorkerSettings
from tether_runtime.logs import configure_logging

__all__ = ["build_parser", "main"]

_LOG = logging.getLogger("gpu_worker")


def build_parser() -> argparse.ArgumentParser:
    """The command line (flags default to None: the environment, then the built-in default, applies)."""
    d = WorkerSettings()
    parser = argparse.ArgumentParser(
        prog="tether-gpu-worker",
        description="Tether model worker: gRPC Generate with a KV/prefix cache per chain.",
        epilog="Every flag has a TETHER_WORKER_<NAME> environment variable; see gpu_worker/config.py.",
    )
    parser.add_argument("--host", help=f"gRPC bind address (default {d.host})")
    parser.add_argument("--port", type=int, help=f"gRPC port, 0 = pick a free one (default {d.port})")
    parser.add_argument(
        "--metrics-port", type=int, help="/metrics port, 0 = pick a free one, -1 = off (default 0)"
    )
    parser.add_argument("--engine", choices=ENGINES, help=f"model engine (default {d.engine})")
    parser.add_argument(
        "--model-path",
        help="torch engine: serve this checkpoint, a Hugging Face directory or a .gguf file "
        "(default: dummy weights); vllm engine (required): a model directory or a Hugging Face model name",
    )
    parser.add_argument(
        "--kv-budget-tokens", type=int, help=f"tokens of chains held (default {d.kv_budget_tokens})"
    )
    parser.add_argument(
        "--retained-share",
        type=float,
        help=f"share of the KV budget that retained chains may hold, 0..1 (default {d.retained_share})",
    )
    parser.add_argument(
        "--speed", type=float, help="sim time scale: 1 = calibrated H100 timing, 0 = no delays"
    )
    parser.add_argument(
        "--drain-seconds", type=float, help=f"graceful-shutdown budget (default {d.drain_seconds})"
    )
    parser.add_argument("--log-format", choices=LOG_FORMATS, help=f"log format (default {d.log_format})")
    parser.add_argument("--log-level", help=f"log level (default {d.log_level})")
    return parser


def _configure_logging(settings: WorkerSettings) -> None:
    # stderr: stdout carries only the start-up line. The JSON schema is docs/logging.md.
    configure_logging("gpu_worker", settings.log_format, settings.log_level)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _announce(line: str) -> None:
    print(line, flush=True)


async def _serve(
    settings: WorkerSettings,
    environ: Mapping[str, str],
    *,
    stop: asyncio.Event | None = None,
    announce: Callable[[str], None] = _announce,
) -> int:
    """Serve until SIGTERM/SIGINT (or until `stop` is set, when given), then shut down gracefully."""
    from gpu_worker.server.app import WorkerServer, build_engine

    server = WorkerServer(settings, build_engine(settings, environ))
    await server.start()
    announce(f"tether-gpu-worker serving {server.address} metrics {server.metrics_url or 'off'}")
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    _LOG.info("shutdown requested")
    await server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `tether-gpu-worker`."""
    args = build_parser().parse_args(argv)
    try:
        settings = WorkerSettings.from_env(
            os.environ,
            host=args.host,
            port=args.port,
            metrics_port=args.metrics_port,
            engine=args.engine,
            model_path=args.model_path,
            kv_budget_tokens=args.kv_budget_tokens,
            retained_share=args.retained_share,
            speed=args.speed,
            drain_seconds=args.drain_seconds,
            log_format=args.log_format,
            log_level=args.log_level.upper() if args.log_level else None,
        )
        _configure_logging(settings)
    except ValueError as exc:  # SettingsError, or an unknown log level
        print(f"tether-gpu-worker: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(_serve(settings, os.environ))
    except (SettingsError, OSError) as exc:  # torch settings, or the port cannot be bound
        print(f"tether-gpu-worker: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
