"""The Redis cold store against a real Redis: write-behind, restore round trips, namespacing, TTL, bounds,
Redis down and back (no restart), Redis losing its data, forks across boxes, corrupt records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from api_box.core.chain import AgentCounters
from api_box.core.handoff import ColdKeys, TurnRecord
from api_box.io.metrics import build_metrics
from api_box.io.redis_store import WHOLE_EVERY, RedisColdStore
from tests.redis_fixture import LocalRedis

HEADER = b"\x07" * 16


class CountingRedis(aioredis.Redis):
    """Counts commands sent outside pipelines (each one is a round trip)."""

    commands = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands += 1
        return await super().execute_command(*args, **options)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def whole(rid: str, tokens: list[int], *, tenant: str = "alpha", ck: str = "ck_1") -> TurnRecord:
    return TurnRecord(
        tenant, rid, None, None, 0, ck, HEADER, 2, tuple(tokens), {"call_a": 3}, AgentCounters(1, 1, False),
        1.0, resource=b'{"id":"%s"}' % rid.encode(), input_items=b"[]",
    )  # fmt: skip


def delta(rid: str, base: TurnRecord, base_len: int, tokens: list[int]) -> TurnRecord:
    return TurnRecord(
        base.tenant, rid, base.response_id, base.response_id, base_len, base.cache_key, HEADER, 2,
        tuple(tokens), {f"call_{rid}": base_len + 1}, AgentCounters(0, 2, True), 2.0,
        resource=b'{"id":"%s"}' % rid.encode(), input_items=b'[{"n":1}]',
    )  # fmt: skip


StoreFactory = Callable[..., Awaitable[RedisColdStore]]


@pytest.fixture
async def make_store(redis_prefix: str) -> AsyncIterator[StoreFactory]:
    stores: list[RedisColdStore] = []

    async def factory(url: str, **kwargs: Any) -> RedisColdStore:
        registry = kwargs.pop("registry", None) or CollectorRegistry()
        client = CountingRedis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        kwargs.setdefault("op_timeout", 0.5)
        kwargs.setdefault("flush_timeout", 5.0)
        store = RedisColdStore(
            client, metrics=build_metrics(registry, version="t"), prefix=redis_prefix, **kwargs
        )
        store.registry = registry  # type: ignore[attr-defined]
        stores.append(store)
        await store.start()
        return store

    yield factory
    for store in stores:
        await store.close()


def sample(store: RedisColdStore, name: str, **labels: str) -> float:
    value = store.registry.get_sample_value(name, labels or None)  # type: ignore[attr-defined]
    return 0.0 if value is None else float(value)


async def test_a_chain_of_deltas_restores_whole_in_two_round_trips(
    make_store: StoreFactory, redis_url: str
) -> None:
    store = await make_store(redis_url)
    r1 = whole("resp_1", [1, 2, 3, 4])
    r2 = delta("resp_2", r1, 4, [5, 6])
    r3 = delta("resp_3", r2, 6, [7])
    for turn in (r1, r2, r3):
        await store.append(turn)
    assert await store.flush()
    client: CountingRedis = store._client  # type: ignore[assignment]
    before = client.commands
    snap = await store.restore("alpha", "resp_3")
    assert client.commands - before == 2  # GET the response, LRANGE its chain
    assert snap is not None
    assert snap.tokens == (1, 2, 3, 4, 5, 6, 7)
    assert snap.call_ids == {"call_a": 3, "call_resp_2": 5, "call_resp_3": 7}
    assert (snap.resource, snap.input_items, snap.cache_key) == (b'{"id":"resp_3"}', b'[{"n":1}]', "ck_1")
    before = client.commands
    first = await store.restore("alpha", "resp_1")
    assert client.commands - before == 1  # a whole record is the chain already
    assert first is not None
    assert first.tokens == (1, 2, 3, 4)
    assert sample(store, "tether_box_redis_up") == 1


async def test_keys_are_namespaced_by_tenant_and_expire(
    make_store: StoreFactory, redis_url: str, redis_prefix: str
) -> None:
    store = await make_store(redis_url, ttl_seconds=60)
    await store.append(whole("resp_t", [1], tenant="ten:ant/x"))
    assert await store.flush()
    assert await store.restore("other", "resp_t") is None
    assert await store.restore("ten:ant", "x:r:resp_t") is None  # ids cannot reach across namespaces
    keys = ColdKeys(redis_prefix)
    client = aioredis.Redis.from_url(redis_url)
    try:
        key = keys.response("ten:ant/x", "resp_t")
        assert key == f"{redis_prefix}:ten%3Aant%2Fx:r:resp_t"
        assert 0 < await client.pttl(key) <= 60_000
        assert 0 < await client.pttl(keys.chain("ten:ant/x", "ck_1")) <= 60_000
    finally:
        await client.aclose()
    assert await store.restore("ten:ant/x", "resp_t") is not None


async def test_an_overlong_or_unknown_id_is_a_miss(make_store: StoreFactory, redis_url: str) -> None:
    store = await make_store(redis_url)
    client: CountingRedis = store._client  # type: ignore[assignment]
    before = client.commands
    assert await store.restore("alpha", "r" * 10_000) is None
    assert client.commands == before  # not even asked
    assert await store.restore("alpha", "resp_never") is None


async def test_a_turn_still_queued_here_is_restored_after_its_write(
    make_store: StoreFactory, redis_url: str
) -> None:
    store = await make_store(redis_url)
    await store.append(whole("resp_q", [9, 9]))
    snap = await store.restore("alpha", "resp_q")  # no flush first: the restore waits for the write
    assert snap is not None
    assert snap.tokens == (9, 9)


async def test_siblings_written_by_two_boxes_into_one_chain_list_both_restore(
    make_store: StoreFactory, redis_url: str
) -> None:
    box_a, box_b = await make_store(redis_url), await make_store(redis_url)
    r1 = whole("resp_1", [1, 2])
    r2 = delta("resp_2", r1, 2, [3])
    for turn in (r1, r2):
        await box_a.append(turn)
    assert await box_a.flush()
    assert await box_b.restore("alpha", "resp_2") is not None  # box B owns the chain now
    r3b = delta("resp_3b", r2, 3, [40, 41])
    await box_b.append(r3b)
    r3a = delta("resp_3a", r2, 3, [30])  # box A, still alive, continued the same response
    await box_a.append(r3a)
    await box_b.append(delta("resp_4b", r3b, 5, [42]))
    assert await box_a.flush()
    assert await box_b.flush()
    a = await box_b.restore("alpha", "resp_3a")
    b = await box_a.restore("alpha", "resp_4b")
    assert a is not None
    assert a.tokens == (1, 2, 3, 30)
    assert b is not None
    assert b.tokens == (1, 2, 3, 40, 41, 42)


async def test_a_corrupt_or_foreign_record_is_a_miss(
    make_store: StoreFactory, redis_url: str, redis_prefix: str
) -> None:
    store = await make_store(redis_url)
    keys = ColdKeys(redis_prefix)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set(keys.response("alpha", "resp_bad"), b"TTR1\xff\xff\xff\x7fgarbage")
        await client.set(keys.response("alpha", "resp_v2"), b"TTR2" + b"\x00" * 8)
        other = whole("resp_other", [1])
        await client.set(keys.response("alpha", "resp_alias"), other.to_bytes())
        orphan = delta("resp_orphan", whole("resp_gone", [1]), 1, [2])
        await client.set(keys.response("alpha", "resp_orphan"), orphan.to_bytes())
    finally:
        await client.aclose()
    for rid in ("resp_bad", "resp_v2", "resp_alias", "resp_orphan"):
        assert await store.restore("alpha", rid) is None, rid
    assert sample(store, "tether_box_redis_up") == 1  # Redis answered; the data was bad


async def test_delete_forgets_a_response_but_not_its_descendants(
    make_store: StoreFactory, redis_url: str
) -> None:
    store = await make_store(redis_url)
    r1 = whole("resp_1", [1])
    await store.append(r1)
    await store.append(delta("resp_2", r1, 1, [2]))
    await store.delete("alpha", "resp_1")  # waits for the queued write first: nothing revives it
    assert await store.restore("alpha", "resp_1") is None
    snap = await store.restore("alpha", "resp_2")
    assert snap is not None
    assert snap.tokens == (1, 2)


async def test_the_queue_is_bounded_and_a_dropped_chain_is_written_whole_next(
    local_redis: Callable[[], LocalRedis], make_store: StoreFactory
) -> None:
    server = local_redis()
    clock = Clock()
    store = await make_store(server.url, max_queue=2, clock=clock, flush_timeout=0.2)
    server.stop()
    assert await store.restore("alpha", "resp_0") is None  # the store notices Redis is down
    r1 = whole("resp_1", [1], ck="ck_a")
    await store.append(r1)
    assert not store.needs_whole("ck_a")
    await store.append(delta("resp_2", r1, 1, [2]))
    await store.append(delta("resp_3", r1, 1, [3]))  # over the bound: dropped
    assert store.needs_whole("ck_a")
    assert sample(store, "tether_box_write_behind_dropped_total", reason="redis_down") == 1
    assert sample(store, "tether_box_write_behind_queue_depth") == 2
    clock.now += 4.5
    assert sample(store, "tether_box_write_behind_lag_seconds") == pytest.approx(4.5)
    assert not await store.flush()  # Redis is down: the flush budget runs out
    big = whole("resp_big", [1] * 10_000, ck="ck_b")
    small_store = await make_store(server.url, max_bytes=4096)
    await small_store.append(big)
    assert sample(small_store, "tether_box_write_behind_dropped_total", reason="too_large") == 1


async def test_redis_down_then_back_recovers_without_a_restart(
    local_redis: Callable[[], LocalRedis], make_store: StoreFactory
) -> None:
    server = local_redis()
    store = await make_store(server.url, op_timeout=0.3)
    r1 = whole("resp_1", [1, 2])
    await store.append(r1)
    assert await store.flush()
    server.stop()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await store.restore("alpha", "resp_1") is None  # a miss, fast
    assert loop.time() - started < 1.0
    assert sample(store, "tether_box_redis_up") == 0
    r2 = delta("resp_2", r1, 2, [3])
    await store.append(r2)  # queued while down
    assert store.pending == 1
    server.start()  # back on the same port, empty (in-memory Redis)
    assert await store.flush()  # the writer retried and wrote the queued turn
    assert sample(store, "tether_box_redis_up") == 1
    # It came back empty: the chain's base is gone, so the next turn of every chain is written whole.
    assert await store.restore("alpha", "resp_2") is None
    assert store.needs_whole("ck_1")
    r3 = whole("resp_3", [1, 2, 3, 4])
    await store.append(r3)
    await store.append(delta("resp_4", r3, 4, [5]))
    assert await store.flush()
    snap = await store.restore("alpha", "resp_4")
    assert snap is not None
    assert snap.tokens == (1, 2, 3, 4, 5)


async def test_a_long_chain_is_written_whole_again_every_so_often(
    make_store: StoreFactory, redis_url: str
) -> None:
    store = await make_store(redis_url)
    base = whole("resp_0", [0])
    await store.append(base)
    for i in range(1, WHOLE_EVERY + 1):
        assert not store.needs_whole("ck_1")
        turn = delta(f"resp_{i}", base, i, [i])
        await store.append(turn)
        base = turn
    assert store.needs_whole("ck_1")
    assert await store.flush()
    snap = await store.restore("alpha", f"resp_{WHOLE_EVERY}")
    assert snap is not None
    assert snap.tokens == tuple(range(WHOLE_EVERY + 1))


async def test_close_flushes_and_later_appends_are_dropped(make_store: StoreFactory, redis_url: str) -> None:
    store = await make_store(redis_url)
    await store.append(whole("resp_c", [1]))
    await store.close()
    await store.append(whole("resp_late", [2]))
    assert sample(store, "tether_box_write_behind_dropped_total", reason="shutdown") == 1
    reader = await make_store(redis_url)
    assert await reader.restore("alpha", "resp_c") is not None
    assert await reader.restore("alpha", "resp_late") is None
