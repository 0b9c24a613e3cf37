"""`tether-api-box`: run one API box.

On start it prints exactly one line to stdout (a launcher parses it):

    tether-api-box serving http://<host>:<port> metrics <http://host:port/metrics | off>

Settings come from TETHER_BOX_* (api_box/config.py); these flags override them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from api_box.config import Settings
from api_box.io.app import build_admin_app, build_app
from api_box.io.drain import drain
from api_box.io.logctx import ContextFilter, QuietProbesAccessLogger
from gpu_worker.client import ROUTINGS, WorkerPool
from gpu_worker.wire import tokenizer
from tether_runtime.logs import configure_logging

_LOG = logging.getLogger("api_box")
_CLEANUP_SECONDS = 3.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tether-api-box", description="Tether API box (Responses API server).")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port; 0 picks a free one (default 8080)")
    p.add_argument("--admin-port", type=int, help="/metrics port; 0 picks a free one, -1 turns it off")
    p.add_argument("--workers", help="worker targets host:port,host:port")
    p.add_argument(
        "--worker-routing", choices=ROUTINGS, help="how a generation picks its worker (default affinity)"
    )
    p.add_argument("--box-id", help="name of this box (X-Tether-Box header; default the host name)")
    p.add_argument(
        "--api-key", action="append", dest="api_keys", help="an API key of tenant 'default' (repeat)"
    )
    p.add_argument("--api-keys-file", help="file of 'tenant key' lines (key or sha256:<hex>)")
    p.add_argument("--dev", action="store_true", default=None, help="also accept the key tether-dev-key")
    p.add_argument("--session-store-bytes", type=int, help="memory budget of the store:true session store")
    p.add_argument(
        "--connection-max-seconds", type=float, help="WebSocket connection lifetime (default 3600)"
    )
    p.add_argument("--redis-url", help="cold store for handoff, redis://host:port/db (default: none)")
    p.add_argument("--log-format", choices=["text", "json"])
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ...")
    return p


def settings_from(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """Settings from the environment with the command line on top."""
    args = _parser().parse_args(argv)
    changes: dict[str, Any] = vars(args)
    if args.workers is not None:
        changes["workers"] = tuple(w.strip() for w in args.workers.split(",") if w.strip())
    if args.api_keys is not None:
        changes["api_keys"] = tuple(args.api_keys)
    return Settings.from_env(env).replace(**changes)


def _configure_logging(settings: Settings) -> None:
    configure_logging("api_box", settings.log_format, settings.log_level, filters=(ContextFilter(),))


async def _serve(settings: Settings) -> None:
    registry = CollectorRegistry()
    pool = WorkerPool(
        targets=settings.workers,
        connect_timeout=settings.worker_connect_timeout,
        request_timeout=settings.worker_request_timeout,
        routing=settings.worker_routing,
    )
    app = build_app(settings, registry=registry, worker_pool=pool)
    # The drain waits for in-flight responses; cleanup's own wait only covers what the drain left over.
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=_CLEANUP_SECONDS,
        access_log_class=QuietProbesAccessLogger,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    port = runner.addresses[0][1]
    admin_runner, metrics_url = await _start_admin(settings, registry, app)
    print(f"tether-api-box serving http://{settings.host}:{port} metrics {metrics_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    _LOG.info("draining")
    await drain(app, runner)
    await runner.cleanup()
    if admin_runner is not None:
        await admin_runner.cleanup()


async def _start_admin(
    settings: Settings, registry: CollectorRegistry, app: web.Application
) -> tuple[web.AppRunner | None, str]:
    if settings.admin_port < 0:
        return None, "off"
    admin = web.AppRunner(
        build_admin_app(registry, app), handle_signals=False, access_log_class=QuietProbesAccessLogger
    )
    await admin.setup()
    await web.TCPSite(admin, settings.host, settings.admin_port).start()
    return admin, f"http://{settings.host}:{admin.addresses[0][1]}/metrics"


def _run(main_coro: Coroutine[Any, Any, None]) -> None:
    """uvloop when installed (faster sockets and timers), else the default loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coro)
        return
    uvloop.run(main_coro)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point `tether-api-box`."""
    try:
        settings = settings_from(sys.argv[1:] if argv is None else argv, os.environ)
    except ValueError as exc:
        print(f"tether-api-box: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    _configure_logging(settings)
    tokenizer.warm()
    try:
        _run(_serve(settings))
    except (ValueError, OSError) as exc:  # a bad keys file, a port that cannot be bound
        print(f"tether-api-box: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
