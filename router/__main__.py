"""`tether-router`: the edge router's command line.

Prints exactly one line to stdout once it serves (a launcher parses it):
    tether-router serving http://<host>:<port> metrics <metrics-url-or-off>
then logs to stderr. SIGTERM/SIGINT: readiness fails, relayed connections get `drain_timeout` to finish,
the rest are dropped, and the process exits 0. Flags override `TETHER_ROUTER_*` environment variables.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from router.app import start_router
from router.config import Settings
from router.core.errors import ConfigError
from tether_runtime import logs as runtime_logs

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tether-router",
        description="Edge router: consistent hash on the session key, raw byte relay to the API boxes.",
        epilog="Every flag has an environment variable TETHER_ROUTER_<FLAG> (dashes as underscores).",
    )
    add = parser.add_argument
    add("--host", help="listen address (default 127.0.0.1)")
    add("--port", type=int, help="listen port, 0 = a free one (default 8080)")
    add("--admin-host", help="admin listen address (default: --host)")
    add(
        "--admin-port",
        type=int,
        help="admin port for /metrics, /debug/ring, /livez, /readyz; 0 = free, -1 = off",
    )
    source = parser.add_argument_group("membership (exactly one)")
    source.add_argument("--boxes", help="static list name=host:port[@weight],...")
    source.add_argument("--dns", help="NAME:PORT of a headless Service whose A/AAAA records are the boxes")
    source.add_argument("--k8s-service", help="watch the EndpointSlices of this Service")
    add("--k8s-namespace", help="namespace of --k8s-service (default: the pod's own)")
    add("--k8s-port-name", help="port name in the EndpointSlices (default: the first port)")
    add("--k8s-api-url", help="Kubernetes API URL (e.g. kubectl proxy); default: in-cluster or kubeconfig")
    add(
        "--routing-keys",
        help="where the routing key is read from, first found wins: header:NAME and query:NAME, "
        "comma-separated (default: the session headers of Codex, OpenCode, Claude Code and Tether, "
        "then query:session_id)",
    )
    add("--bounded-load", type=float, help="bounded-load factor c > 1 (default: off)")
    add("--connect-timeout", type=float, help="seconds to connect to a box (default 2)")
    add("--head-timeout", type=float, help="seconds to receive a request head (default 10)")
    add("--max-head-bytes", type=int, help="largest request head (default 32768)")
    add("--drain-timeout", type=float, help="seconds relayed connections get on SIGTERM (default 30)")
    add("--log-format", choices=("text", "json"), help="log line format (default text)")
    add("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    return parser


def configure_logging(settings: Settings) -> None:
    """Log to stderr in the configured format (stdout carries only the serving line; docs/logging.md)."""
    runtime_logs.configure_logging("router", settings.log_format, settings.log_level)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain and stop."""
    running = await start_router(settings)
    # Everything allocated so far (modules, settings, the first ring) lives as long as the process: move it
    # out of the collector's reach, so that a full collection walks only live connections (a full pass over
    # the ~40k startup objects costs tens of ms: a p99 latency spike for every relayed message in flight).
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(running.banner(), flush=True)
    await stop.wait()
    logging.getLogger("router").info("stopping: draining for up to %.0f s", settings.drain_timeout)
    await running.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `tether-router`."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ, **vars(args))
        if settings.k8s_service is not None and importlib.util.find_spec("kubernetes") is None:
            raise ConfigError("--k8s-service needs the Kubernetes client: pip install 'tether[k8s]'")
    except ConfigError as exc:
        print(f"tether-router: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        _run(serve(settings))
    except OSError as exc:  # a port that cannot be bound: one line, not a traceback
        print(f"tether-router: {exc}", file=sys.stderr)
        return 2
    return 0


def _run(main_coro: Coroutine[Any, Any, None]) -> None:
    """uvloop when installed, else the default loop."""
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux
        asyncio.run(main_coro)
    else:
        uvloop.run(main_coro)


if __name__ == "__main__":
    sys.exit(main())
