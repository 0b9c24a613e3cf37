"""Composition root of a worker: engine + cache + service + grpc.aio server + health + /metrics.

Lifecycle: `start()` serves (health SERVING for "" and tether.worker.v1.Worker); `stop()` is the
graceful shutdown: health NOT_SERVING (permanently), new Generate calls get UNAVAILABLE, in-flight
generations get up to `drain_seconds` to finish, then the server stops (cancelling what is left), then
the engine and the metrics port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gpu_worker.config import SettingsError, WorkerSettings
from gpu_worker.core.cache import ChainCache
from gpu_worker.core.errors import WorkerError
from gpu_worker.engines.base import Engine
from gpu_worker.server.metrics import WorkerMetrics
from gpu_worker.server.service import WorkerService
from gpu_worker.server.servicer import WorkerServicer
from gpu_worker.wire import tokenizer
from gpu_worker.wire._pb import worker_pb2_grpc as pb_grpc
from gpu_worker.wire.model import tether_description

__all__ = ["SERVICE_NAME", "WorkerServer", "build_engine", "server_options"]

SERVICE_NAME = "tether.worker.v1.Worker"
_LOG = logging.getLogger("gpu_worker.server")
_STOP_GRACE = 0.5  # after the drain: what is left gets this long before grpc cancels it


def server_options(settings: WorkerSettings) -> list[tuple[str, Any]]:
    """grpc server channel args: keepalive matched with gpu_worker.client.CHANNEL_OPTIONS (clients ping
    every 10 s; we accept pings 5 s apart), message limits, and no SO_REUSEPORT (so a second worker
    cannot silently bind the same port)."""
    return [
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


def build_engine(settings: WorkerSettings, environ: Mapping[str, str]) -> Engine:
    """The configured engine; the torch and vllm engines are imported only when asked for."""
    if settings.engine == "sim":
        from gpu_worker.engines.sim import SimEngine

        return SimEngine(settings.timing, settings.agent, speed=settings.speed)
    if settings.engine == "vllm":
        return _build_vllm_engine(settings, environ)
    try:
        from gpu_worker.engines import torch_engine
    except ImportError as exc:
        raise SettingsError(f"the torch engine needs PyTorch (pip install 'tether[torch]'): {exc}") from None
    try:
        torch_settings = torch_engine.TorchSettings.from_env(environ)
    except ValueError as exc:
        raise SettingsError(f"torch engine settings: {exc}") from None
    if settings.model_path:
        torch_settings = replace(torch_settings, checkpoint=settings.model_path)
    engine: Engine = torch_engine.TorchEngine(torch_settings, agent=settings.agent, names=_names(settings))
    return engine


def _build_vllm_engine(settings: WorkerSettings, environ: Mapping[str, str]) -> Engine:
    from gpu_worker.engines import vllm_engine

    try:
        vllm_settings = vllm_engine.VllmSettings.from_env(environ)
        vllm_settings = replace(vllm_settings, model=settings.model_path)
    except ValueError as exc:
        raise SettingsError(f"vllm engine settings: {exc}") from None
    try:
        api = vllm_engine.load_vllm()
    except ImportError as exc:
        raise SettingsError(f"the vllm engine needs vLLM (pip install 'tether[vllm]'): {exc}") from None
    engine: Engine = vllm_engine.VllmEngine(vllm_settings, api=api, names=_names(settings))
    return engine


def _names(settings: WorkerSettings) -> tuple[str, ...]:
    """A name set on purpose replaces the model's own (or the dummy weights' default) name."""
    return () if settings.model_name == WorkerSettings().model_name else (settings.model_name,)


def _kv_bytes_per_token(engine: Engine) -> int:
    """Bytes of KV one token takes in the engine (the torch engine reports it; 0: no real KV, the sim)."""
    stats = getattr(engine, "stats", None)
    try:
        return int(stats().kv.bytes_per_token) if stats is not None else 0
    except (AttributeError, TypeError, WorkerError):
        return 0


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class WorkerServer:
    """One worker: build it, `await start()`, later `await stop()`."""

    def __init__(
        self, settings: WorkerSettings, engine: Engine, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry, budget_tokens=settings.kv_budget_tokens)
        register_engine_metrics = getattr(engine, "register_metrics", None)
        if register_engine_metrics is not None:  # an engine with series of its own (vLLM's)
            register_engine_metrics(self.registry)
        self.cache = ChainCache(settings.kv_budget_tokens, retained_share=settings.retained_share)
        self.service = WorkerService(
            engine, self.cache, self.metrics, limits=settings.limits, agent=settings.agent
        )
        self.health = HealthServicer()
        self.port = 0
        self.metrics_url: str | None = None
        self._server: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._stopped = asyncio.Event()

    @property
    def address(self) -> str:
        """host:port the gRPC server listens on."""
        return _address(self.settings.host, self.port)

    async def start(self) -> None:
        """Warm the tokenizer, start the engine, serve gRPC and /metrics, report SERVING."""
        await asyncio.to_thread(tokenizer.warm)
        await self.engine.start()
        describe = getattr(self.engine, "describe", None)
        self.service.description = (
            describe()
            if describe is not None
            else tether_description(
                (self.settings.model_name,),
                engine=self.engine.name,
                context_length=self.settings.limits.max_prompt_tokens,
            )
        )
        self.service.kv_bytes_per_token = _kv_bytes_per_token(self.engine)
        server = grpc.aio.server(
            options=server_options(self.settings), maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs
        )
        servicer = WorkerServicer(self.service, self.metrics)
        pb_grpc.add_WorkerServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        try:
            self.port = server.add_insecure_port(_address(self.settings.host, self.settings.port))
        except RuntimeError as exc:
            await self.engine.stop()
            raise OSError(f"cannot bind {_address(self.settings.host, self.settings.port)}: {exc}") from None
        self._server = server
        await server.start()
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.metrics.serving.set(1)
        if self.settings.metrics_enabled():
            await self._start_metrics()
        _LOG.info(
            "serving %s (engine %s, kv budget %d tokens)",
            self.address,
            self.engine.name,
            self.cache.budget_tokens,
        )

    async def _start_metrics(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.metrics_port)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        self.metrics_url = f"http://{_address(self.settings.host, port)}/metrics"

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        self.service.refresh_gauges()  # retention marks expire with time, not only at commits
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def stop(self, drain_seconds: float | None = None) -> None:
        """Graceful shutdown (see the module docstring). Safe to call twice."""
        if self._stopped.is_set():
            return
        budget = self.settings.drain_seconds if drain_seconds is None else drain_seconds
        await self.health.enter_graceful_shutdown()
        self.metrics.serving.set(0)
        self.service.draining = True
        _LOG.info("draining: %d generation(s) in flight, budget %.1fs", self.service.active, budget)
        if self.service.active:
            try:
                await asyncio.wait_for(self.service.wait_idle(), budget)
            except TimeoutError:
                _LOG.warning("drain budget spent; cancelling %d generation(s)", self.service.active)
        if self._server is not None:
            await self._server.stop(_STOP_GRACE)
        if self.service.active:  # cancelled handlers unwind after stop() returns; let them, briefly
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.service.wait_idle(), _STOP_GRACE)
        await self.engine.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        self._stopped.set()
        _LOG.info("stopped")

    async def wait_stopped(self) -> None:
        """Return once `stop()` has finished."""
        await self._stopped.wait()
