"""The store:false handoff across a drain (api_box/io/sealed.py), in-process: two boxes on a real Redis.
A store:false socket that sent X-Tether-Handoff-Key continues warm on another box after a drain; the
sealed blob is one-use, holds no plaintext, expires, and is never written or read without a key."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from box_fakes import FakeWorkerPool, ws_turn
from conftest import AUTH
from test_redis_drain import SERVICE_RESTART, Boxes, closed_with, make_box

from api_box.core.handoff import ColdKeys
from api_box.core.sealed import HANDOFF_KEY_HEADER, derive
from api_box.io.drain import drain
from tests.redis_fixture import LocalRedis

__all__ = ["make_box"]  # the two-box fixture of test_redis_drain.py
SECRET = "the launch code is pineapple-42"


def new_key() -> tuple[str, bytes]:
    raw = os.urandom(32)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), raw


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def keys_under(client: aioredis.Redis, prefix: str) -> list[bytes]:
    return [key async for key in client.scan_iter(match=f"{prefix}:*")]


async def first_turn(box: TestClient[Any, Any], headers: dict[str, str]) -> tuple[Any, dict[str, Any]]:
    ws = await box.ws_connect("/v1/responses", headers=headers)
    done = (await ws_turn(ws, {"input": SECRET, "store": False}))[-1]
    assert done["type"] == "response.completed"
    return ws, done["response"]  # type: ignore[return-value]


async def drained(box: TestClient[Any, Any], ws: Any) -> None:
    draining = asyncio.ensure_future(drain(box.app, box.server.runner))  # type: ignore[arg-type]
    assert (await closed_with(ws))[0] == SERVICE_RESTART
    await draining


async def continuation(box: TestClient[Any, Any], headers: dict[str, str], previous: str) -> dict[str, Any]:
    async with box.ws_connect("/v1/responses", headers=headers) as ws:
        events = await ws_turn(ws, {"input": "and now?", "store": False, "previous_response_id": previous})
    return events[-1]


async def test_a_drained_store_false_socket_continues_on_another_box_once(
    make_box: Boxes, redis_url: str, redis_prefix: str, raw_redis: aioredis.Redis, fake_pool: FakeWorkerPool
) -> None:
    box, peer = await make_box(redis_url, "box-a"), await make_box(redis_url, "box-b")
    key, raw = new_key()
    headers = {**AUTH, HANDOFF_KEY_HEADER: key}
    ws, first = await first_turn(box, headers)
    first_chain, cache_key = fake_pool.sent[-1].chain, fake_pool.sent[-1].request.cache_key
    await drained(box, ws)
    assert box.registry.get_sample_value("tether_box_sealed_handoffs_total", {"result": "sealed"}) == 1  # type: ignore[attr-defined]
    assert cache_key not in fake_pool.dropped  # the worker keeps the sealed chain's KV for the next box

    # Redis holds ciphertext only, under the derived slot, with the short TTL.
    slot_key = ColdKeys(redis_prefix).sealed("alpha", derive(raw).slot)
    assert await keys_under(raw_redis, redis_prefix) == [slot_key.encode()]
    blob = await raw_redis.get(slot_key)
    assert blob is not None
    assert 0 < await raw_redis.pttl(slot_key) <= 60_000
    for plain in (SECRET.encode(), first["id"].encode(), b"ck_", key.encode(), raw, raw.hex().encode()):
        assert plain not in blob
    token_bytes = b"".join(t.to_bytes(4, "little") for t in first_chain[:8])
    assert token_bytes not in blob

    # A new socket with the same key on another box continues the chain warm, with store:false.
    done = await continuation(peer, headers, first["id"])
    assert done["type"] == "response.completed", done
    assert done["response"]["previous_response_id"] == first["id"]
    continued = fake_pool.sent[-1].chain
    assert fake_pool.sent[-1].request.cache_key == cache_key  # the same chain, so the same worker entry
    assert continued[: len(first_chain)] == first_chain  # the whole earlier chain went to the worker
    assert len(continued) > len(first_chain)
    peer_count = peer.registry.get_sample_value  # type: ignore[attr-defined]
    assert peer_count("tether_box_sealed_handoffs_total", {"result": "restored"}) == 1
    assert await keys_under(raw_redis, redis_prefix) == []  # taken: one use, nothing left at rest

    # The same key a second time: nothing to take, the continuation is previous_response_not_found.
    again = await continuation(peer, headers, first["id"])
    assert again["type"] == "error"
    assert again["error"]["code"] == "previous_response_not_found"
    assert peer_count("tether_box_sealed_handoffs_total", {"result": "missing"}) == 1


async def test_a_blob_moved_to_another_tenant_is_rejected(
    make_box: Boxes, redis_url: str, redis_prefix: str, raw_redis: aioredis.Redis, tmp_path: Any
) -> None:
    box = await make_box(redis_url, "box-a")
    key, raw = new_key()
    ws, first = await first_turn(box, {**AUTH, HANDOFF_KEY_HEADER: key})
    await drained(box, ws)
    keys, slot = ColdKeys(redis_prefix), derive(raw).slot
    # Someone with write access to Redis copies alpha's blob into beta's namespace: the AEAD refuses it.
    await raw_redis.rename(keys.sealed("alpha", slot), keys.sealed("beta", slot))
    (tmp_path / "keys").write_text("beta sk-test-beta\n")
    peer = await make_box(redis_url, "box-b")
    beta = {"Authorization": "Bearer sk-test-beta", HANDOFF_KEY_HEADER: key}
    done = await continuation(peer, beta, first["id"])
    assert done["error"]["code"] == "previous_response_not_found"  # type: ignore[index]
    assert peer.registry.get_sample_value("tether_box_sealed_handoffs_total", {"result": "rejected"}) == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["short", base64.b64encode(os.urandom(32)).decode(), "x" * 43])
async def test_a_malformed_key_is_refused_with_400_before_the_upgrade(
    make_box: Boxes, redis_url: str, value: str
) -> None:
    box = await make_box(redis_url, "box-a")
    upgrade = {
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }  # fmt: skip
    answer = await box.get("/v1/responses", headers={**AUTH, **upgrade, HANDOFF_KEY_HEADER: value})
    assert answer.status == 400
    error = (await answer.json())["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "invalid_value",
        HANDOFF_KEY_HEADER,
    )
    assert value not in error["message"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await box.ws_connect("/v1/responses", headers={**AUTH, HANDOFF_KEY_HEADER: value})
    assert caught.value.status == 400


async def test_without_a_key_nothing_is_written_or_read(
    make_box: Boxes, redis_url: str, redis_prefix: str, raw_redis: aioredis.Redis
) -> None:
    box = await make_box(redis_url, "box-a")
    ws, _ = await first_turn(box, AUTH)
    await drained(box, ws)
    assert await keys_under(raw_redis, redis_prefix) == []
    count = box.registry.get_sample_value  # type: ignore[attr-defined]
    assert all(count("tether_box_sealed_handoffs_total", {"result": r}) == 0 for r in ("sealed", "missing"))


async def test_the_feature_off_or_a_chain_over_the_bound_writes_nothing(
    make_box: Boxes, redis_url: str, redis_prefix: str, raw_redis: aioredis.Redis, fake_pool: FakeWorkerPool
) -> None:
    key, _ = new_key()
    off = await make_box(redis_url, "box-off", sealed_handoff=False)
    ws, _ = await first_turn(off, {**AUTH, HANDOFF_KEY_HEADER: key})
    await drained(off, ws)
    small = await make_box(redis_url, "box-small", sealed_handoff_max_bytes=1024)
    ws, _ = await first_turn(small, {**AUTH, HANDOFF_KEY_HEADER: key})
    await drained(small, ws)
    assert await keys_under(raw_redis, redis_prefix) == []
    # Nothing was handed off, so the worker may free both chains as for any closed store:false socket.
    await asyncio.sleep(0.05)  # DropSession calls are fire-and-forget tasks
    assert {sent.request.cache_key for sent in fake_pool.sent} <= set(fake_pool.dropped)
    assert small.registry.get_sample_value("tether_box_sealed_handoffs_total", {"result": "skipped"}) == 1  # type: ignore[attr-defined]


async def test_redis_down_at_connect_is_an_empty_connection_not_a_failed_upgrade(
    local_redis: Callable[[], LocalRedis], make_box: Boxes, caplog: pytest.LogCaptureFixture
) -> None:
    server = local_redis()
    box = await make_box(server.url, "box-a")
    server.stop()
    key, _ = new_key()
    done = await continuation(box, {**AUTH, HANDOFF_KEY_HEADER: key}, "resp_from_before")
    assert done["error"]["code"] == "previous_response_not_found"  # type: ignore[index]
    assert box.registry.get_sample_value("tether_box_sealed_handoffs_total", {"result": "missing"}) == 1  # type: ignore[attr-defined]
    assert "sealed handoff not read" in caplog.text
    assert key not in caplog.text
