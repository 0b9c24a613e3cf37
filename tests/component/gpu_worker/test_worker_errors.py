"""Bad input and failures over a real channel, each with its gRPC status."""

from __future__ import annotations

import json

import pytest
from worker_fakes import GREP, FaultyEngine, PoolFactory, WorkerFactory, first_chain, request, run_turn

from gpu_worker.client import ToolSpec, WorkerError, WorkerPool, WorkerRejected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chain": []}, "tokens is empty"),
        ({"chain": [1] * 200_000}, "the limit is 131072"),
        ({"chain": [250_000]}, "outside the vocabulary"),
        ({"max_output_tokens": 10**6}, "max_output_tokens"),
        ({"tools": (ToolSpec("grep", "", "{not json"),)}, "not valid JSON"),
        ({"tool_choice": "delete_everything"}, "tool_choice"),
        ({"metadata": {"tether.tool_calls": "lots"}}, "not an integer"),
        ({"temperature": 9.0}, "temperature"),
    ],
)
async def test_bad_requests_are_rejected_as_invalid_argument(
    pool: WorkerPool, change: dict[str, object], message: str
) -> None:
    values = {"chain": first_chain(), **change}
    chain = values.pop("chain")
    with pytest.raises(WorkerRejected, match=message) as exc:
        await run_turn(pool, request(chain, **values))  # type: ignore[arg-type]
    assert exc.value.code == "INVALID_ARGUMENT"
    assert pool.call_counts == {"error": 1}


async def test_a_request_larger_than_the_whole_budget_is_resource_exhausted(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    worker = await make_worker(kv_budget_tokens=2_000)
    pool = await make_pool([worker.address])
    with pytest.raises(WorkerRejected, match="budget") as exc:
        await run_turn(pool, request(first_chain(), max_output_tokens=2_000))
    assert exc.value.code == "RESOURCE_EXHAUSTED"


async def test_a_full_admission_queue_is_resource_exhausted(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    worker = await make_worker(engine=FaultyEngine("queue_full"))
    pool = await make_pool([worker.address])
    with pytest.raises(WorkerRejected, match="queue full") as exc:
        await run_turn(pool, request(first_chain()))
    assert exc.value.code == "RESOURCE_EXHAUSTED"


async def test_a_message_over_the_size_limit_is_refused_by_the_transport(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    worker = await make_worker(max_message_bytes=64 * 1024)
    pool = await make_pool([worker.address])
    with pytest.raises(WorkerRejected) as exc:
        await run_turn(pool, request(list(range(1000, 100_000))))
    assert exc.value.code == "RESOURCE_EXHAUSTED"


async def test_an_engine_crash_is_internal_and_drops_the_chain(
    make_worker: WorkerFactory, make_pool: PoolFactory
) -> None:
    engine = FaultyEngine("crash")
    worker = await make_worker(engine=engine)
    pool = await make_pool([worker.address])
    with pytest.raises(WorkerError) as exc:
        await run_turn(pool, request(first_chain()))
    assert exc.value.code == "INTERNAL"
    assert "crashed" not in exc.value.message  # no internals leak
    assert "session-1" in engine.dropped
    assert worker.registry.get_sample_value("tether_worker_generate_total", {"code": "INTERNAL"}) == 1.0


async def test_tools_are_offered_to_the_agent_as_sent(pool: WorkerPool) -> None:
    schema = {"type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]}}}
    weather = ToolSpec("weather", "", json.dumps(schema))
    turn = await run_turn(pool, request(first_chain(), tools=(GREP, weather), tool_choice="weather"))
    arguments = "".join(getattr(e, "arguments", "") for e in turn.events)
    assert json.loads(arguments)["city"] in ("Paris", "Oslo")
