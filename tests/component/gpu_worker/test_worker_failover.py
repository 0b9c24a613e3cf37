"""Failover between workers: a dead owner's chains go to the next worker in hash order, in full."""

from __future__ import annotations

import pytest
from worker_fakes import PoolFactory, WorkerFactory, first_chain, request, run_turn

from gpu_worker.client import Prefill, TextDelta, WorkerTimeout, WorkerUnavailable
from gpu_worker.client.rendezvous import rank
from gpu_worker.client.types import AgentState
from gpu_worker.wire import chat


async def test_an_unreachable_owner_is_skipped_and_the_chain_resent_in_full(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    a, b = await make_worker(), await make_worker()
    targets = [a.address, b.address]
    key = next(k for k in (f"chain-{i}" for i in range(100)) if rank(k, targets)[0] == a.address)
    pool = await make_pool(targets, connect_timeout=1.0)
    assert pool.owner(key) == a.address
    chain = first_chain()
    done = (await run_turn(pool, request(chain, key=key))).done
    assert done.worker == a.address

    await a.stop(drain_seconds=0)
    chain = [*chain, *done.output_token_ids, *chat.render_message("user", "next")]
    turn = await run_turn(pool, request(chain, key=key, done=done))
    assert turn.prefill.worker == b.address
    assert turn.prefill.cached_tokens == 0  # b never held it: the whole chain went
    assert turn.done.chain_len == len(chain) + turn.done.output_tokens
    assert pool.call_counts == {"ok": 1, "failover": 1}
    assert pool.owner(key) == b.address  # a is marked down for the cooldown

    chain = [*chain, *turn.done.output_token_ids, *chat.render_message("user", "again")]
    follow = await run_turn(pool, request(chain, key=key, done=turn.done))  # b holds it now: a delta
    assert follow.prefill.cached_tokens == turn.done.chain_len


async def test_a_worker_that_dies_mid_stream_fails_the_response(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    worker = await make_worker(speed=1.0)
    pool = await make_pool([worker.address])
    req = request(first_chain(), agent=AgentState(3, 1), metadata={"tether.answer_tokens": "2000"})
    stream = pool.generate(req)
    assert isinstance(await anext(stream), Prefill)
    assert isinstance(await anext(stream), TextDelta)
    await worker.stop(drain_seconds=0)
    with pytest.raises(WorkerUnavailable, match="mid-stream"):
        async for _ in stream:
            pass
    assert pool.call_counts == {"error": 1}


async def test_no_reachable_worker_is_unavailable(make_pool: PoolFactory, make_worker: WorkerFactory) -> None:
    worker = await make_worker()
    address = worker.address
    await worker.stop(drain_seconds=0)
    pool = await make_pool([address], connect_timeout=0.5)
    with pytest.raises(WorkerUnavailable, match="no worker reachable"):
        await run_turn(pool, request(first_chain()))


async def test_a_deadline_that_runs_out_while_connecting_is_a_timeout(
    make_pool: PoolFactory, make_worker: WorkerFactory
) -> None:
    dead, alive = await make_worker(), await make_worker()
    targets = [dead.address, alive.address]
    key = next(k for k in (f"chain-{i}" for i in range(100)) if rank(k, targets)[0] == dead.address)
    await dead.stop(drain_seconds=0)
    pool = await make_pool(targets, connect_timeout=5.0)
    with pytest.raises(WorkerTimeout):
        await run_turn(pool, request(first_chain(), key=key, timeout=0.3))
    assert pool.owner(key) == dead.address  # not blamed for the call's own short deadline
    assert pool.call_counts == {"error": 1}
