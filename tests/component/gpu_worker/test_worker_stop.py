"""Stop (a steered response) over a real channel with the sim engine: a text output ends early with Done
"stopped", what was generated is committed as the chain, and the next turn is a delta on it; a call runs
to its end; an unknown request id is not stopping."""

from __future__ import annotations

import grpc
import pytest
from worker_fakes import PoolFactory, WorkerFactory, first_chain, request

from gpu_worker.client import Done, TextDelta, WorkerPool
from gpu_worker.client.types import AgentState, WorkerEvent
from gpu_worker.server.app import WorkerServer
from gpu_worker.wire import chat
from gpu_worker.wire._pb import worker_pb2 as pb
from gpu_worker.wire._pb import worker_pb2_grpc as pb_grpc
from gpu_worker.wire.tokenizer import Special


async def slow_pool(make_worker: WorkerFactory, make_pool: PoolFactory) -> WorkerPool:
    worker = await make_worker(speed=1.0)  # the H100 timing model: tokens arrive over milliseconds
    return await make_pool([worker.address])


async def stop_after_first_delta(pool: WorkerPool, req: object) -> tuple[list[WorkerEvent], bool]:
    events: list[WorkerEvent] = []
    stopping = False
    async for event in pool.generate(req):  # type: ignore[arg-type]
        events.append(event)
        if isinstance(event, TextDelta) and not stopping:
            stopping = await pool.stop("req")
    return events, stopping


async def test_a_stopped_answer_ends_early_and_its_tokens_are_the_chain(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    pool = await slow_pool(make_worker, make_pool)
    chain = first_chain()
    answer = {"tether.answer_tokens": "400"}
    req = request(chain, agent=AgentState(tool_calls_since_user_message=3), metadata=answer)
    events, stopping = await stop_after_first_delta(pool, req)
    assert stopping
    done = events[-1]
    assert isinstance(done, Done)
    assert done.finish_reason == "stopped"
    assert 1 < done.output_tokens < 100  # far fewer than the 400 it would have written
    assert done.output_token_ids[0] == Special.ASSISTANT
    assert Special.END not in done.output_token_ids  # cut as at a length limit
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert chat.render_message("assistant", text)[:-1] == list(done.output_token_ids)
    assert done.chain_len == len(chain) + done.output_tokens
    # The worker holds prompt + output: the next turn is a delta on it.
    nxt = [*chain, *done.output_token_ids, Special.END, *chat.render_message("user", "stop there")]
    again = [e async for e in pool.generate(request(nxt, done=done, max_output_tokens=8))]
    assert again[-1].cached_tokens == done.chain_len  # type: ignore[union-attr]
    assert pool.call_counts.get("resend", 0) == 0


async def test_a_tool_call_is_not_cut(make_worker: WorkerFactory, make_pool: PoolFactory) -> None:
    pool = await slow_pool(make_worker, make_pool)
    events: list[WorkerEvent] = []
    req = request(first_chain(), metadata={"tether.argument_bytes": "2000"})
    async for event in pool.generate(req):
        events.append(event)
        if len(events) == 3:
            assert await pool.stop("req")
    done = events[-1]
    assert isinstance(done, Done)
    assert done.finish_reason == "tool_call"
    assert done.output_token_ids[-1] == Special.END


async def test_stop_names_a_running_request_or_nothing(worker: WorkerServer, pool: WorkerPool) -> None:
    assert not await pool.stop("never-sent")
    async with grpc.aio.insecure_channel(worker.address) as channel:
        stub = pb_grpc.WorkerStub(channel)
        reply = await stub.Stop(pb.StopRequest(request_id="nothing-runs"), timeout=5)
        assert not reply.stopping
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Stop(pb.StopRequest(request_id=""), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
