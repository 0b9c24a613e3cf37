"""Fixtures of the worker's component tests: in-process servers on port 0 and real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from worker_fakes import PoolFactory, WorkerFactory

from gpu_worker.client import WorkerPool
from gpu_worker.config import WorkerSettings
from gpu_worker.engines.base import Engine
from gpu_worker.engines.sim import SimEngine
from gpu_worker.server.app import WorkerServer


@pytest.fixture
async def make_worker() -> AsyncIterator[WorkerFactory]:
    """`await make_worker(engine=None, **settings)`: a started worker on 127.0.0.1:0 (sim, speed 0)."""
    servers: list[WorkerServer] = []

    async def make(engine: Engine | None = None, **overrides: Any) -> WorkerServer:
        values: dict[str, Any] = {"port": 0, "metrics_port": -1, "speed": 0.0, "drain_seconds": 5.0}
        values.update(overrides)
        settings = WorkerSettings(**values)
        server = WorkerServer(
            settings, engine or SimEngine(settings.timing, settings.agent, speed=settings.speed)
        )
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop(drain_seconds=0)


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    """`await make_pool(targets, **options)`: a started WorkerPool."""
    pools: list[WorkerPool] = []

    async def make(targets: list[str], **options: Any) -> WorkerPool:
        pool = WorkerPool(targets, **options)
        await pool.start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


@pytest.fixture
async def worker(make_worker: WorkerFactory) -> WorkerServer:
    return await make_worker()


@pytest.fixture
async def pool(make_pool: PoolFactory, worker: WorkerServer) -> WorkerPool:
    return await make_pool([worker.address])
