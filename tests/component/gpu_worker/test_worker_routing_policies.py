"""Worker selection policies through real workers: round-robin keeps the delta protocol whole (a keyed
chain that lands on a worker without it is resent in full on that same worker, and counted), and
least-loaded reads the pool's own in-flight calls."""

from __future__ import annotations

import pytest
from worker_fakes import GatedEngine, PoolFactory, WorkerFactory, first_chain, request, run_turn

from gpu_worker.client import Prefill
from gpu_worker.wire import chat


async def test_round_robin_resends_a_keyed_chain_on_the_worker_it_picked(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    a, b = await make_worker(), await make_worker()
    pool = await make_pool([a.address, b.address], routing="round-robin")
    assert pool.routing == "round-robin"
    chain = first_chain()
    first = await run_turn(pool, request(chain))
    assert (first.prefill.worker, first.prefill.cached_tokens) == (a.address, 0)

    chain = [*chain, *first.done.output_token_ids, *chat.render_message("user", "next")]
    second = await run_turn(pool, request(chain, done=first.done))  # a delta, but b never held it
    assert second.prefill.worker == b.address
    assert second.done.worker == b.address  # resent in full there, not moved back to a
    assert second.prefill.cached_tokens == 0
    assert pool.call_counts == {"ok": 1, "resend": 1}

    chain = [*chain, *second.done.output_token_ids, *chat.render_message("user", "again")]
    third = await run_turn(pool, request(chain, done=second.done))  # back on a, which holds turn one
    assert third.prefill.worker == a.address
    assert third.prefill.cached_tokens == first.done.chain_len  # a's prefix cache serves what it held
    assert pool.call_counts == {"ok": 1, "resend": 2}

    assert await pool.drop("session-1") is True  # both workers hold a copy: the drop reaches both...
    assert await pool.drop("session-1") is False  # ...so neither holds it any more


async def test_affinity_keeps_a_chain_on_one_worker_without_resends(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    a, b = await make_worker(), await make_worker()
    pool = await make_pool([a.address, b.address])
    assert pool.routing == "affinity"
    chain = first_chain()
    done = (await run_turn(pool, request(chain))).done
    for word in ("one", "two", "three"):
        chain = [*chain, *done.output_token_ids, *chat.render_message("user", word)]
        turn = await run_turn(pool, request(chain, done=done))
        assert turn.prefill.worker == pool.owner("session-1")
        assert turn.prefill.cached_tokens == done.chain_len
        done = turn.done
    assert pool.call_counts == {"ok": 4}


async def test_least_loaded_avoids_the_worker_with_a_call_in_flight(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    engine = GatedEngine()
    busy, idle = await make_worker(engine=engine), await make_worker()
    pool = await make_pool([busy.address, idle.address], routing="least-loaded")
    held = pool.generate(request(first_chain(), key="long"))
    assert isinstance(await anext(held), Prefill)  # the first call went to the first worker in turn
    await engine.started.wait()
    assert pool.in_flight == {busy.address: 1}
    for key in ("k1", "k2", "k3"):  # the turn would alternate; the load sends them all to the idle one
        turn = await run_turn(pool, request(first_chain(), key=key))
        assert turn.prefill.worker == idle.address
    engine.gate.set()
    async for _ in held:
        pass
    assert pool.in_flight == {}


async def test_an_unknown_routing_is_refused(make_pool: PoolFactory) -> None:
    with pytest.raises(ValueError, match="unknown worker routing"):
        await make_pool(["127.0.0.1:1"], routing="random")
