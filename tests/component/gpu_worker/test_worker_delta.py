"""The delta protocol end to end over a real channel: deltas, preconditions, resends, prefix reuse."""

from __future__ import annotations

from worker_fakes import PoolFactory, WorkerFactory, first_chain, raw_generate, request, run_turn, trailing

from gpu_worker.client import WorkerPool
from gpu_worker.server.app import WorkerServer
from gpu_worker.wire import chat
from gpu_worker.wire._pb import worker_pb2 as pb
from gpu_worker.wire.chain import digest_of


def tool_output(n: int) -> list[int]:
    return chat.render_function_call_output(f"src/fizz.py:{n}: def fizz(n): return n % 3 == 0\n" * 5)


async def test_each_turn_sends_only_new_tokens_and_computes_only_those(pool: WorkerPool) -> None:
    chain = first_chain()
    turn = await run_turn(pool, request(chain))
    assert (turn.prefill.cached_tokens, turn.prefill.computed_tokens) == (0, len(chain))
    for n in range(1, 6):
        done = turn.done
        assert done.chain_len == len(chain) + done.output_tokens
        assert done.chain_digest == digest_of([*chain, *done.output_token_ids])
        chain = [*chain, *done.output_token_ids, *tool_output(n)]
        turn = await run_turn(pool, request(chain, done=done))
        assert turn.prefill.cached_tokens == done.chain_len
        assert turn.prefill.computed_tokens == len(chain) - done.chain_len
    assert pool.call_counts == {"ok": 6}


async def test_a_raw_delta_request_carries_only_the_new_tokens(
    worker: WorkerServer, pool: WorkerPool
) -> None:
    chain = first_chain()
    done = (await run_turn(pool, request(chain))).done
    held = [*chain, *done.output_token_ids]
    new = tool_output(1)
    delta = pb.GenerateRequest(
        request_id="raw", cache_key="session-1", base_len=len(held), base_digest=digest_of(held), tokens=new
    )
    events, error = await raw_generate(worker.address, delta)
    assert error is None
    assert events[0].prefill.prompt_tokens == len(held) + len(new)
    assert events[0].prefill.cached_tokens == len(held)
    assert events[-1].done.chain_len == len(held) + len(new) + events[-1].done.output_tokens


async def test_a_prefix_the_worker_does_not_hold_fails_the_precondition_with_a_reason(
    worker: WorkerServer, pool: WorkerPool
) -> None:
    chain = first_chain()
    done = (await run_turn(pool, request(chain))).done
    held = [*chain, *done.output_token_ids]
    cases = {
        "unknown_cache_key": ("nobody", len(held), digest_of(held)),
        "length_mismatch": ("session-1", len(held) - 1, digest_of(held[:-1])),
        "digest_mismatch": ("session-1", len(held), digest_of([*held[:-1], 7])),
    }
    for reason, (key, base_len, digest) in cases.items():
        req = pb.GenerateRequest(
            request_id=reason, cache_key=key, base_len=base_len, base_digest=digest, tokens=[1]
        )
        events, error = await raw_generate(worker.address, req)
        assert events == []
        assert error is not None
        assert error.code().name == "FAILED_PRECONDITION"
        assert trailing(error)["tether-precondition"] == reason
        assert reason in (error.details() or "")
        assert (
            worker.registry.get_sample_value("tether_worker_precondition_failures_total", {"reason": reason})
            == 1.0
        )


async def test_the_pool_resends_the_whole_chain_once_when_the_worker_lost_it(pool: WorkerPool) -> None:
    chain = first_chain()
    done = (await run_turn(pool, request(chain))).done
    assert await pool.drop("session-1") is True
    assert await pool.drop("session-1") is False  # idempotent
    chain = [*chain, *done.output_token_ids, *tool_output(1)]
    turn = await run_turn(pool, request(chain, done=done))
    assert turn.prefill.cached_tokens == 0
    assert turn.prefill.prompt_tokens == len(chain)
    assert turn.done.chain_len == len(chain) + turn.done.output_tokens
    assert pool.call_counts == {"ok": 1, "resend": 1}


async def test_keyless_full_chains_reuse_the_longest_block_matched_prefix(
    worker: WorkerServer, pool: WorkerPool
) -> None:
    chain = first_chain()
    first = await run_turn(pool, request(chain, key=None))
    assert first.prefill.cached_tokens == 0
    chain = [*chain, *first.done.output_token_ids, *tool_output(1)]
    second = await run_turn(pool, request(chain, key=None))
    held = first.done.chain_len
    assert second.prefill.cached_tokens == held // 64 * 64  # whole blocks, as vLLM's prefix caching
    lookups = {
        r: worker.registry.get_sample_value("tether_worker_prefix_cache_lookups_total", {"result": r})
        for r in ("hit", "miss")
    }
    assert lookups == {"hit": 1.0, "miss": 1.0}
    # the first turn's anonymous chain was superseded by the second's: one chain held, not two
    assert len(worker.cache) == 1


async def test_a_full_resend_of_a_held_chain_reuses_it_token_by_token(pool: WorkerPool) -> None:
    chain = first_chain()
    done = (await run_turn(pool, request(chain))).done
    chain = [*chain, *done.output_token_ids, *tool_output(1)]
    turn = await run_turn(pool, request(chain))  # held_len 0: the whole chain travels
    assert turn.prefill.cached_tokens == done.chain_len


async def test_prefill_only_requests_hold_the_prompt_for_the_next_delta(
    pool: WorkerPool, make_pool: PoolFactory
) -> None:
    chain = first_chain()
    warm = await run_turn(pool, request(chain, generate=False))
    assert [type(e).__name__ for e in warm.events] == ["Prefill", "Done"]
    assert (warm.done.finish_reason, warm.done.output_tokens, warm.done.chain_len) == ("stop", 0, len(chain))
    turn = await run_turn(pool, request([*chain, *chat.render_message("user", "go on")], done=warm.done))
    assert turn.prefill.cached_tokens == len(chain)


async def test_an_engine_that_lost_the_prefix_recomputes_it(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    from worker_fakes import FaultyEngine

    engine = FaultyEngine("forgot")
    worker = await make_worker(engine=engine)
    pool = await make_pool([worker.address])
    chain = first_chain()
    done = (await run_turn(pool, request(chain))).done
    turn = await run_turn(pool, request([*chain, *done.output_token_ids, *tool_output(1)], done=done))
    assert turn.prefill.cached_tokens == 0  # rerun without reuse, within the same call
    assert engine.jobs[-1].reuse_from is None
    assert "session-1" in engine.dropped
    assert pool.call_counts == {"ok": 2}


async def test_long_full_chains_are_hashed_off_the_loop_with_the_same_digest(pool: WorkerPool) -> None:
    chain = [*first_chain(), *range(1000, 11_000)]  # beyond the size hashed on the event loop
    done = (await run_turn(pool, request(chain, max_output_tokens=8))).done
    assert done.chain_digest == digest_of([*chain, *done.output_token_ids])
    follow = [*chain, *done.output_token_ids, *tool_output(1)]
    assert (await run_turn(pool, request(follow, done=done))).prefill.cached_tokens == done.chain_len
