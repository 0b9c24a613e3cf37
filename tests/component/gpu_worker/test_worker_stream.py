"""Streaming over a real channel: event order, text, cancellation mid-stream, deadlines."""

from __future__ import annotations

import asyncio

import pytest
from worker_fakes import GatedEngine, PoolFactory, WorkerFactory, first_chain, request, run_turn

from gpu_worker.client import CallDelta, CallStart, Done, Prefill, TextDelta, WorkerPool, WorkerTimeout
from gpu_worker.client.types import AgentState
from gpu_worker.wire import chat


async def test_a_call_streams_prefill_start_argument_deltas_then_done(pool: WorkerPool) -> None:
    turn = await run_turn(pool, request(first_chain(), metadata={"tether.argument_bytes": "120"}))
    kinds = [type(e) for e in turn.events]
    assert kinds[0] is Prefill
    assert kinds[1] is CallStart
    assert set(kinds[2:-1]) == {CallDelta}
    assert kinds[-1] is Done
    start = turn.events[1]
    assert isinstance(start, CallStart)
    arguments = "".join(e.arguments for e in turn.events if isinstance(e, CallDelta))
    assert list(turn.done.output_token_ids) == chat.render_function_call(start.name, arguments)
    assert turn.done.finish_reason == "tool_call"
    assert turn.done.output_tokens == len(turn.done.output_token_ids)
    assert len(arguments.encode()) >= 120


async def test_an_answer_streams_text_that_renders_to_the_output_ids(pool: WorkerPool) -> None:
    req = request(
        first_chain(),
        agent=AgentState(tool_calls_since_user_message=3),
        metadata={"tether.answer_tokens": "40"},
    )
    turn = await run_turn(pool, req)
    assert all(isinstance(e, TextDelta) for e in turn.events[1:-1])
    assert list(turn.done.output_token_ids) == chat.render_message("assistant", turn.text)
    assert turn.done.finish_reason == "stop"
    assert sum(e.tokens for e in turn.events if isinstance(e, TextDelta)) == 40


async def test_max_output_tokens_cuts_the_output(pool: WorkerPool) -> None:
    turn = await run_turn(pool, request(first_chain(), max_output_tokens=5))
    assert (turn.done.finish_reason, turn.done.output_tokens) == ("length", 5)


async def test_cancelling_mid_stream_stops_generation_and_keeps_the_chain(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    engine = GatedEngine()
    engine.gate.set()
    worker = await make_worker(engine=engine)
    pool = await make_pool([worker.address])
    chain = first_chain()
    done = (await run_turn(pool, request(chain))).done
    engine.gate.clear()
    engine.started.clear()
    longer = [*chain, *done.output_token_ids, *chat.render_message("user", "and now?")]
    stream = pool.generate(request(longer, done=done))
    assert isinstance(await anext(stream), Prefill)
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()  # the box gave up on the response
    await asyncio.wait_for(engine.cancelled.wait(), 5)
    await asyncio.wait_for(worker.service.wait_idle(), 5)
    assert worker.registry.get_sample_value("tether_worker_generate_total", {"code": "CANCELLED"}) == 1.0
    entry = worker.cache.get("session-1")
    assert entry is not None
    assert len(entry.tokens) == done.chain_len  # unchanged, not half-updated
    engine.gate.set()
    retry = await run_turn(pool, request(longer, done=done))  # the old prefix still serves a delta
    assert retry.prefill.cached_tokens == done.chain_len
    assert worker.registry.get_sample_value("tether_worker_running_sequences") == 0.0


async def test_cancelling_frees_the_sim_batch_slot(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    worker = await make_worker(speed=1.0)  # real timing: a 2000-token answer takes seconds
    pool = await make_pool([worker.address])
    req = request(first_chain(), agent=AgentState(3, 1), metadata={"tether.answer_tokens": "2000"})
    stream = pool.generate(req)
    assert isinstance(await anext(stream), Prefill)
    assert isinstance(await anext(stream), TextDelta)
    sim = worker.engine
    assert getattr(sim, "running", None) == 1
    await stream.aclose()
    await asyncio.wait_for(worker.service.wait_idle(), 5)
    print(
        "DBG",
        {
            c: worker.registry.get_sample_value("tether_worker_generate_total", {"code": c})
            for c in ("OK", "CANCELLED", "DEADLINE_EXCEEDED", "INTERNAL")
        },
    )
    assert (getattr(sim, "running", None), getattr(sim, "waiting", None)) == (0, 0)
    assert "session-1" not in worker.cache  # it never finished: nothing was committed


async def test_a_deadline_ends_the_call_with_a_timeout_and_the_worker_cleans_up(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    engine = GatedEngine()  # streams its first token, then waits forever: the deadline hits mid-stream
    worker = await make_worker(engine=engine)
    pool = await make_pool([worker.address])
    events: list[object] = []

    async def collect() -> None:
        async for event in pool.generate(request(first_chain(), timeout=1.0)):
            events.append(event)

    with pytest.raises(WorkerTimeout) as exc:
        await collect()
    assert exc.value.code == "DEADLINE_EXCEEDED"
    assert [type(e) for e in events] == [Prefill, TextDelta]
    await asyncio.wait_for(engine.cancelled.wait(), 5)  # the worker stopped generating
    await asyncio.wait_for(worker.service.wait_idle(), 5)
    generate_total = worker.registry.get_sample_value
    assert generate_total("tether_worker_generate_total", {"code": "DEADLINE_EXCEEDED"}) == 1.0
    assert "session-1" not in worker.cache  # nothing half-committed
    assert pool.call_counts == {"error": 1}


async def test_latency_follows_the_timing_model(make_worker: WorkerFactory, make_pool: PoolFactory) -> None:
    worker = await make_worker(speed=1.0)
    pool = await make_pool([worker.address])
    req = request(first_chain(), agent=AgentState(3, 1), metadata={"tether.answer_tokens": "50"})
    loop = asyncio.get_running_loop()
    started = loop.time()
    turn = await run_turn(pool, req)
    elapsed = loop.time() - started
    timing = worker.settings.timing
    expected = (
        timing.request_overhead_seconds
        + timing.step_seconds(0, turn.prefill.computed_tokens)
        + (turn.done.output_tokens - 1) * timing.decode_step_seconds(1)
    )
    assert elapsed >= expected * 0.95  # the delays really happen (sleeps never end early)
    assert elapsed <= expected * 10  # and are not wildly off (loose: CI machines are shared)
