"""HTTP failure paths found in review: an SSE client that stops reading or goes away, a request the
worker refuses, and DELETE of a response that lives only in the shared cold store."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from box_fakes import FakeWorkerPool, MemoryColdStore
from conftest import AUTH, KEY, OTHER_KEY, BoxFactory
from prometheus_client import CollectorRegistry

from api_box.config import Settings
from api_box.core.errors import ModelOverloaded, RejectedByModel, StoreUnavailable
from api_box.io.app import build_app
from api_box.io.drain import INFLIGHT
from api_box.io.errors import as_box_error
from gpu_worker.client import WorkerRejected


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def _sse_request(port: int) -> socket.socket:
    """A raw client that sends a streamed create (reading is up to the caller; a tiny receive buffer)."""
    body = orjson.dumps({"model": "m", "input": "hi", "stream": True, "store": False})
    head = (
        f"POST /v1/responses HTTP/1.1\r\nHost: t\r\nAuthorization: {AUTH['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, head + body)
    return sock


async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.05)


async def test_an_sse_client_that_stops_reading_is_dropped_after_the_send_timeout(
    make_box: BoxFactory, fake_pool: FakeWorkerPool, registry: CollectorRegistry
) -> None:
    fake_pool.delta_repeat = 20_000  # far more than the socket buffers hold
    box = await make_box(send_timeout_seconds=0.5)
    inflight = box.server.app[INFLIGHT]  # type: ignore[union-attr]
    sock = await _sse_request(box.port)  # never read
    try:
        await _until(lambda: inflight.count == 1)
        await _until(lambda: inflight.count == 0)  # without the timeout: held until the client leaves
    finally:
        sock.close()
    assert sample(registry, "tether_box_errors_total", code="server_error") == 0


async def test_an_sse_client_that_goes_away_is_not_a_server_error(
    make_box: BoxFactory, fake_pool: FakeWorkerPool, registry: CollectorRegistry
) -> None:
    fake_pool.delta_repeat = 20_000
    box = await make_box()
    inflight = box.server.app[INFLIGHT]  # type: ignore[union-attr]
    sock = await _sse_request(box.port)
    try:
        async with asyncio.timeout(10):
            first = await asyncio.get_running_loop().sock_recv(sock, 4096)
    finally:
        sock.close()
    assert first.startswith(b"HTTP/1.1 200")
    await _until(lambda: inflight.count == 0)
    assert sample(registry, "tether_box_errors_total", code="server_error") == 0
    assert sample(registry, "tether_box_responses_total", mode="sse", status="failed") == 0


def test_worker_refusals_map_to_client_errors_with_the_reason() -> None:
    invalid = as_box_error(WorkerRejected("INVALID_ARGUMENT", "max_output_tokens 50000 is above 32768"))
    assert isinstance(invalid, RejectedByModel)
    assert (invalid.status, invalid.code) == (400, "request_rejected_by_model")
    assert "50000" in invalid.message
    busy = as_box_error(WorkerRejected("RESOURCE_EXHAUSTED", "the admission queue is full"))
    assert isinstance(busy, ModelOverloaded)
    assert (busy.status, busy.code) == (503, "model_overloaded")


async def test_a_request_above_the_workers_limits_is_a_400_not_a_500(real_box: Any) -> None:
    client, _, _ = await real_box()
    response = await client.post(
        "/v1/responses",
        headers=AUTH,
        json={"model": "tether-sim", "input": "hi", "max_output_tokens": 50_000},
    )
    body = await response.json()
    assert response.status == 400
    assert body["error"]["code"] == "request_rejected_by_model"
    assert "max_output_tokens" in body["error"]["message"]


async def test_a_model_no_worker_serves_is_a_404_and_models_lists_what_workers_serve(real_box: Any) -> None:
    client, _, _ = await real_box()
    response = await client.post("/v1/responses", headers=AUTH, json={"model": "gpt-nope", "input": "hi"})
    body = await response.json()
    assert response.status == 404
    assert body["error"]["code"] == "model_not_found"
    assert body["error"]["param"] == "model"
    listed = await (await client.get("/v1/models", headers=AUTH)).json()
    assert [m["id"] for m in listed["data"]] == ["tether-sim"]
    ok = await client.post("/v1/responses", headers=AUTH, json={"model": "tether-sim", "input": "hi"})
    assert ok.status == 200


@pytest.fixture
async def two_boxes(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], tmp_path: Any
) -> tuple[TestClient[Any, Any], TestClient[Any, Any], MemoryColdStore]:
    cold, pool = MemoryColdStore(), FakeWorkerPool()
    keys = tmp_path / "keys"
    keys.write_text(f"alpha {KEY}\nbeta {OTHER_KEY}\n")
    clients = []
    for name in ("box-a", "box-b"):
        settings = Settings(box_id=name, workers=("127.0.0.1:1",), api_keys_file=str(keys), admin_port=-1)
        app = build_app(settings, registry=CollectorRegistry(), worker_pool=pool, cold_store=cold)  # type: ignore[arg-type]
        clients.append(await aiohttp_client(app))
    return clients[0], clients[1], cold


async def test_delete_on_another_box_finds_the_response_in_the_cold_store(
    two_boxes: tuple[TestClient[Any, Any], TestClient[Any, Any], MemoryColdStore],
) -> None:
    box_a, box_b, cold = two_boxes
    created = await (
        await box_a.post("/v1/responses", headers=AUTH, json={"model": "m", "input": "hi"})
    ).json()
    await _until(lambda: ("alpha", created["id"]) in cold.turns)
    deleted = await box_b.delete(f"/v1/responses/{created['id']}", headers=AUTH)
    assert deleted.status == 200
    assert (await deleted.json())["deleted"] is True
    assert ("alpha", created["id"]) not in cold.turns
    again = await box_b.delete(f"/v1/responses/{created['id']}", headers=AUTH)
    assert again.status == 404


async def test_delete_with_the_cold_store_down_is_a_503_and_safe_to_retry(
    two_boxes: tuple[TestClient[Any, Any], TestClient[Any, Any], MemoryColdStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box_a, _, cold = two_boxes
    created = await (
        await box_a.post("/v1/responses", headers=AUTH, json={"model": "m", "input": "hi"})
    ).json()

    async def down(tenant: str, response_id: str) -> bool:
        raise StoreUnavailable("The response store is unavailable; retry the delete.")

    monkeypatch.setattr(cold, "delete", down)
    failed = await box_a.delete(f"/v1/responses/{created['id']}", headers=AUTH)
    assert failed.status == 503
    assert (await failed.json())["error"]["code"] == "store_unavailable"
    monkeypatch.undo()
    retried = await box_a.delete(f"/v1/responses/{created['id']}", headers=AUTH)
    assert retried.status == 200  # the copy in Redis is gone now, though memory's went first
