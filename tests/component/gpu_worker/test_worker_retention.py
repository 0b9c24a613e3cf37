"""Retention seen from the client: `retain_seconds` keeps a chain through the eviction that takes the
others, within the worker's retained share; prewarm (generate: false) leaves a retained, chainable chain;
the metrics say what was retained, refused and evicted."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import CollectorRegistry
from worker_fakes import PoolFactory, WorkerFactory, first_chain, raw_generate, request, run_turn

from gpu_worker.client import Done, WorkerPool
from gpu_worker.config import SettingsError, WorkerSettings
from gpu_worker.core.agent import AgentSettings
from gpu_worker.core.cache import ChainCache
from gpu_worker.core.timing import TimingModel
from gpu_worker.core.validation import WorkRequest
from gpu_worker.engines.sim import SimEngine
from gpu_worker.server.app import WorkerServer
from gpu_worker.server.metrics import WorkerMetrics
from gpu_worker.server.service import WorkerService
from gpu_worker.wire import chat
from gpu_worker.wire._pb import worker_pb2 as pb

HALF_HOUR = 1_800


def metric(worker: WorkerServer, name: str, **labels: str) -> float | None:
    return worker.registry.get_sample_value(name, labels)


async def fill(pool: WorkerPool, keys: str, retain: int = 0) -> dict[str, Done]:
    """One ~210-token chain per key, in order; their Done events."""
    dones = {}
    for key in keys:
        req = request(first_chain(f"task {key}"), key=key, max_output_tokens=100, retain_seconds=retain)
        dones[key] = (await run_turn(pool, req)).done
    return dones


async def test_a_retained_chain_survives_the_traffic_that_evicts_an_unretained_one(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    worker = await make_worker(kv_budget_tokens=700)  # three chains fit; the share is 350 tokens
    pool = await make_pool([worker.address])
    first = await run_turn(
        pool, request(first_chain("task a"), key="a", max_output_tokens=100, retain_seconds=HALF_HOUR)
    )
    assert first.done.retained_seconds == HALF_HOUR
    await fill(pool, "bcd")  # the fourth chain must evict one: b, the oldest unretained, not a
    assert "a" in worker.cache
    assert "b" not in worker.cache
    assert metric(worker, "tether_worker_kv_cache_retained_tokens") == first.done.chain_len
    assert metric(worker, "tether_worker_retention_requests_total", result="granted") == 1.0
    assert metric(worker, "tether_worker_kv_cache_retained_evictions_total") == 0.0

    # after the tool pause, a's next turn is a delta on the held chain: everything before it is cached
    chain = [*first_chain("task a"), *first.done.output_token_ids, *chat.render_message("user", "more")]
    turn = await run_turn(pool, request(chain, key="a", done=first.done, max_output_tokens=100))
    assert turn.prefill.cached_tokens == first.done.chain_len
    assert turn.done.retained_seconds > 0  # the half-hour mark of turn 1 still holds
    assert pool.call_counts == {"ok": 5}


async def test_retention_beyond_the_share_is_refused_and_counted(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    worker = await make_worker(kv_budget_tokens=700, retained_share=0.5)
    pool = await make_pool([worker.address])
    dones = await fill(pool, "ab", retain=HALF_HOUR)
    assert [d.retained_seconds for d in dones.values()] == [HALF_HOUR, 0]
    assert metric(worker, "tether_worker_retention_requests_total", result="denied") == 1.0
    assert metric(worker, "tether_worker_kv_cache_retained_budget_tokens") == 350.0
    assert worker.cache.retained_keys(0) == ["a"]


async def test_retained_chains_are_evicted_last_the_first_to_expire_first(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    worker = await make_worker(kv_budget_tokens=700, retained_share=1.0)
    pool = await make_pool([worker.address])
    await fill(pool, "a", retain=HALF_HOUR)
    await fill(pool, "b", retain=60)
    await fill(pool, "c", retain=HALF_HOUR)
    await fill(pool, "d")  # nothing unretained is left to evict: b expires first
    assert set(worker.cache) == {"a", "c", "d"}
    assert metric(worker, "tether_worker_kv_cache_retained_evictions_total") == 1.0
    assert metric(worker, "tether_worker_kv_cache_evictions_total") == 1.0


async def test_prewarm_prefills_a_retained_chain_that_the_next_turn_builds_on(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    worker = await make_worker(kv_budget_tokens=700)
    pool = await make_pool([worker.address])
    prompt = first_chain("task a")
    warm = await run_turn(pool, request(prompt, key="a", generate=False, retain_seconds=HALF_HOUR))
    assert (warm.done.output_tokens, warm.done.chain_len) == (0, len(prompt))
    assert warm.done.retained_seconds == HALF_HOUR
    await fill(pool, "bcd")
    chain = [*prompt, *chat.render_message("user", "go")]
    turn = await run_turn(pool, request(chain, key="a", done=warm.done, max_output_tokens=100))
    assert turn.prefill.cached_tokens == len(prompt)


async def test_retain_seconds_beyond_the_limit_is_invalid(worker: WorkerServer) -> None:
    req = pb.GenerateRequest(request_id="r", cache_key="k", tokens=first_chain(), retain_seconds=43_201)
    events, error = await raw_generate(worker.address, req)
    assert events == []
    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "retain_seconds=43201 exceeds the limit 43200" in (error.details() or "")


async def test_the_retained_gauges_follow_the_clock_between_commits() -> None:
    now = [100.0]
    engine = SimEngine(TimingModel(), AgentSettings(), speed=0.0)
    metrics = WorkerMetrics(CollectorRegistry(), budget_tokens=10_000, process=False)
    service = WorkerService(engine, ChainCache(10_000), metrics, clock=lambda: now[0])
    service.kv_bytes_per_token = 4_096
    await engine.start()
    try:
        work = WorkRequest("r", "k", 0, b"", first_chain(), max_output_tokens=20, retain_seconds=30)
        events = [event async for event in service.generate(work)]
    finally:
        await engine.stop()
    held = events[-1].done.chain_len
    assert events[-1].done.retained_seconds == 30
    registry = metrics.registry
    assert registry.get_sample_value("tether_worker_kv_cache_retained_tokens") == held
    assert registry.get_sample_value("tether_worker_kv_cache_retained_bytes") == held * 4_096
    now[0] = 129.5
    service.refresh_gauges()
    assert registry.get_sample_value("tether_worker_kv_cache_retained_tokens") == held
    now[0] = 130.0  # the mark has expired; the chain is still held, as plain LRU
    service.refresh_gauges()
    assert registry.get_sample_value("tether_worker_kv_cache_retained_tokens") == 0
    assert registry.get_sample_value("tether_worker_kv_cache_retained_bytes") == 0
    assert registry.get_sample_value("tether_worker_kv_cache_tokens") == held


@pytest.mark.parametrize("share", ["-0.5", "1.01", "half"])
def test_a_bad_retained_share_fails_start_up_with_its_name(share: str) -> None:
    with pytest.raises(SettingsError, match=r"RETAINED_SHARE|retained_share"):
        WorkerSettings.from_env({"TETHER_WORKER_RETAINED_SHARE": share})
