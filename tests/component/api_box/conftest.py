"""Fixtures of the API box's component tests: the app in-process on port 0 with a fake worker pool."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from box_fakes import FakeWorkerPool
from prometheus_client import CollectorRegistry

from api_box.config import Settings
from api_box.io.app import build_app

KEY = "sk-test-alpha"
OTHER_KEY = "sk-test-beta"
AUTH = {"Authorization": f"Bearer {KEY}"}
OTHER_AUTH = {"Authorization": f"Bearer {OTHER_KEY}"}

BoxFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def fake_pool() -> FakeWorkerPool:
    return FakeWorkerPool()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def make_box(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    fake_pool: FakeWorkerPool,
    registry: CollectorRegistry,
    tmp_path: Any,
) -> BoxFactory:
    """Build and start a box; keyword arguments override Settings fields. The first box registers its
    metrics on the `registry` fixture, later ones on fresh registries."""
    registries = iter([registry])

    async def factory(**overrides: Any) -> TestClient[Any, Any]:
        keys = tmp_path / "keys"
        keys.write_text(f"# tenants\nalpha {KEY}\nbeta {OTHER_KEY}\n")
        settings = Settings(
            box_id="box-test", workers=("127.0.0.1:1",), api_keys_file=str(keys), admin_port=-1
        ).replace(**overrides)
        own = next(registries, None) or CollectorRegistry()
        app: web.Application = build_app(settings, registry=own, worker_pool=fake_pool)  # type: ignore[arg-type]
        return await aiohttp_client(app)

    return factory


@pytest.fixture
async def box(make_box: BoxFactory) -> TestClient[Any, Any]:
    return await make_box()


@pytest.fixture
async def start_workers() -> Any:
    """Start in-process gRPC workers (sim engine, no delays unless `speed` says otherwise) on free ports."""
    from gpu_worker.config import WorkerSettings
    from gpu_worker.server.app import WorkerServer, build_engine

    servers: list[Any] = []

    async def start(n: int = 1, speed: float = 0.0) -> list[Any]:
        for _ in range(n):
            settings = WorkerSettings(port=0, metrics_port=-1, speed=speed)
            server = WorkerServer(settings, build_engine(settings, {}))
            await server.start()
            servers.append(server)
        return servers

    yield start
    for server in servers:
        await server.stop(0)


@pytest.fixture
async def real_box(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], start_workers: Any, tmp_path: Any
) -> Any:
    """A box on a real port in front of real in-process workers: (client, workers, pool)."""
    from gpu_worker.client import WorkerPool

    async def factory(workers: int = 1, speed: float = 0.0, **overrides: Any) -> tuple[Any, list[Any], Any]:
        servers = await start_workers(workers, speed)
        targets = tuple(s.address for s in servers)
        keys = tmp_path / "keys"
        keys.write_text(f"alpha {KEY}\nbeta {OTHER_KEY}\n")
        settings = Settings(box_id="box-real", workers=targets, api_keys_file=str(keys), admin_port=-1)
        pool = WorkerPool(targets, connect_timeout=1.0, request_timeout=30.0, down_cooldown=30.0)
        app = build_app(settings.replace(**overrides), registry=CollectorRegistry(), worker_pool=pool)
        return await aiohttp_client(app), servers, pool

    return factory
