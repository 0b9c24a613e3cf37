"""Graceful shutdown: health NOT_SERVING, new work refused, in-flight streams finish within the budget."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from worker_fakes import GatedEngine, PoolFactory, WorkerFactory, first_chain, request, run_turn

from gpu_worker.client import Prefill, TextDelta, WorkerUnavailable
from gpu_worker.server.app import SERVICE_NAME

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_reports_serving_for_the_server_and_the_service(make_worker: WorkerFactory) -> None:
    worker = await make_worker()
    async with grpc.aio.insecure_channel(worker.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == SERVING
    assert worker.registry.get_sample_value("tether_worker_serving") == 1.0


async def test_drain_flips_health_refuses_new_work_and_lets_streams_finish(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    engine = GatedEngine()
    worker = await make_worker(engine=engine)
    pool = await make_pool([worker.address])
    stream = pool.generate(request(first_chain(), key="in-flight"))
    assert isinstance(await anext(stream), Prefill)
    async with grpc.aio.insecure_channel(worker.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert (await watch.read()).status == SERVING
        stopping = asyncio.create_task(worker.stop(drain_seconds=10))
        assert (await asyncio.wait_for(watch.read(), 5)).status == NOT_SERVING
        watch.cancel()
    assert worker.registry.get_sample_value("tether_worker_serving") == 0.0

    with pytest.raises(WorkerUnavailable):  # a new request is refused (the box moves to the next worker)
        await run_turn(pool, request(first_chain(), key="late"))
    assert not stopping.done()  # still waiting for the in-flight stream

    engine.gate.set()
    rest = [event async for event in stream]
    assert rest[-1].finish_reason == "stop"  # type: ignore[union-attr]
    await asyncio.wait_for(stopping, 5)
    assert not engine.cancelled.is_set()


async def test_streams_still_running_when_the_budget_is_spent_are_cut(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    engine = GatedEngine()
    worker = await make_worker(engine=engine)
    pool = await make_pool([worker.address])
    stream = pool.generate(request(first_chain()))
    assert isinstance(await anext(stream), Prefill)
    assert isinstance(await anext(stream), TextDelta)
    await worker.stop(drain_seconds=0.1)
    with pytest.raises(WorkerUnavailable, match="mid-stream"):
        await anext(stream)
    await asyncio.wait_for(engine.cancelled.wait(), 5)  # the generation was stopped, not leaked
    assert "session-1" not in worker.cache
