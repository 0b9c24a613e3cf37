"""Eviction under the token budget, seen from the client."""

from __future__ import annotations

from worker_fakes import PoolFactory, WorkerFactory, first_chain, request, run_turn

from gpu_worker.wire import chat


async def test_least_recently_used_chains_are_evicted_and_resent_in_full(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    worker = await make_worker(kv_budget_tokens=700)
    pool = await make_pool([worker.address])
    dones = {}
    for key in ("a", "b", "c", "d"):  # each chain is about 210 tokens: the fourth evicts the first
        req = request(first_chain(f"task {key}"), key=key, max_output_tokens=100)
        dones[key] = (await run_turn(pool, req)).done
    assert worker.cache.tokens_held <= 700
    assert "a" not in worker.cache
    assert {"b", "c", "d"} <= set(worker.cache)
    evicted = worker.registry.get_sample_value("tether_worker_kv_cache_evictions_total")
    assert evicted == 1.0
    assert (
        worker.registry.get_sample_value("tether_worker_kv_cache_evicted_tokens_total")
        == dones["a"].chain_len
    )
    assert worker.registry.get_sample_value("tether_worker_kv_cache_tokens") == worker.cache.tokens_held

    # the box still believes "a" is held: the delta fails its precondition and the pool resends it all
    chain = [*first_chain("task a"), *dones["a"].output_token_ids, *chat.render_message("user", "more")]
    turn = await run_turn(pool, request(chain, key="a", done=dones["a"], max_output_tokens=100))
    assert turn.prefill.cached_tokens < dones["a"].chain_len
    assert pool.call_counts == {"ok": 4, "resend": 1}
    assert (
        worker.registry.get_sample_value(
            "tether_worker_precondition_failures_total", {"reason": "unknown_cache_key"}
        )
        == 1.0
    )
    assert worker.cache.tokens_held <= 700
