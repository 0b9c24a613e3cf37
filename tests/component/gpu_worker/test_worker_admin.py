"""The admin side: /metrics with the catalog's names, and the entry point's start-up line."""

from __future__ import annotations

import asyncio
import re
from importlib import metadata
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from worker_fakes import PoolFactory, WorkerFactory, first_chain, request, run_turn

from gpu_worker.__main__ import _serve
from gpu_worker.config import WorkerSettings

CATALOG = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"


def catalog_names() -> set[str]:
    section = CATALOG.read_text().split("## gpu_worker", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| (tether_worker_\w+) \|", section, flags=re.MULTILINE))


async def test_metrics_endpoint_exports_every_catalog_name(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    worker = await make_worker(metrics_port=0)
    pool = await make_pool([worker.address])
    await run_turn(pool, request(first_chain()))
    assert worker.metrics_url is not None
    async with aiohttp.ClientSession() as session, session.get(worker.metrics_url) as response:
        assert response.status == 200
        body = await response.text()
    names = catalog_names()
    assert len(names) >= 14  # the catalog parsed (it lists 14 today)
    for name in names:
        assert re.search(rf"^{name}(_total|_bucket|_count)?[{{ ]", body, flags=re.MULTILINE), name
    assert f'tether_build_info{{component="gpu_worker",version="{metadata.version("tether")}"}}' in body
    assert "process_cpu_seconds_total" in body
    assert 'tether_worker_generate_total{code="OK"} 1.0' in body


async def test_the_entry_point_announces_its_address_and_serves_health() -> None:
    settings = WorkerSettings(port=0, metrics_port=-1, speed=0.0)
    stop = asyncio.Event()
    announced: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(_serve(settings, {}, stop=stop, announce=announced.set_result))
    line = await asyncio.wait_for(announced, 30)
    match = re.fullmatch(r"tether-gpu-worker serving 127\.0\.0\.1:(\d+) metrics off", line)
    assert match is not None, line
    async with grpc.aio.insecure_channel(f"127.0.0.1:{match.group(1)}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stop.set()
    assert await asyncio.wait_for(serving, 10) == 0
