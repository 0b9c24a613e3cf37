"""The torch engine behind the real gRPC worker (port 0) and the box's WorkerPool: a turn sends only its
new tokens and the engine prefills only those; DropSession frees the chain's KV."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

torch = pytest.importorskip("torch", reason="the torch extra is not installed (pip install '.[torch]')")

from gpu_worker.client import WorkerPool  # noqa: E402
from gpu_worker.client.types import AgentState, Done, GenerationRequest, Prefill, ToolSpec  # noqa: E402
from gpu_worker.config import WorkerSettings  # noqa: E402
from gpu_worker.engines.torch_engine import TorchEngine, TorchSettings  # noqa: E402
from gpu_worker.engines.torch_model import dummy_model, preset  # noqa: E402
from gpu_worker.server.app import WorkerServer  # noqa: E402
from gpu_worker.wire import chat  # noqa: E402

TOOL = ToolSpec(
    name="read_file",
    parameters_json=json.dumps({"type": "object", "properties": {"path": {"type": "string"}}}),
)
SHORT = {"tether.answer_tokens": "6", "tether.argument_bytes": "30"}


@pytest.fixture
async def served() -> AsyncIterator[tuple[TorchEngine, WorkerPool]]:
    model = dummy_model(preset("tiny"), seed=0, device=torch.device("cpu"), dtype=torch.float32)
    engine = TorchEngine(TorchSettings(preset="tiny", device="cpu", kv_chunk_tokens=32), model=model)
    settings = WorkerSettings(port=0, metrics_port=-1, engine="torch", drain_seconds=5.0)
    server = WorkerServer(settings, engine)
    await server.start()
    pool = WorkerPool([server.address])
    await pool.start()
    try:
        yield engine, pool
    finally:
        await pool.close()
        await server.stop(drain_seconds=0)


async def _turn(pool: WorkerPool, req: GenerationRequest) -> tuple[Prefill, Done]:
    events = [event async for event in pool.generate(req)]
    prefill, done = events[0], events[-1]
    assert isinstance(prefill, Prefill)
    assert isinstance(done, Done)
    return prefill, done


async def test_a_delta_turn_is_prefilled_on_top_of_the_cached_kv(
    served: tuple[TorchEngine, WorkerPool],
) -> None:
    engine, pool = served
    chain = [
        *chat.render_tools([{"name": "read_file"}]),
        *chat.render_message("user", "Read the config. " * 10),
    ]
    first = GenerationRequest("r1", "session-1", chain, tools=(TOOL,), metadata=SHORT)
    _, done = await _turn(pool, first)
    assert done.finish_reason == "tool_call"
    chain = [*chain, *done.output_token_ids]
    assert done.chain_len == len(chain)
    new = chat.render_function_call_output("port = 8080")
    agent = AgentState(tool_calls_since_user_message=1, user_messages=1, last_item_is_tool_output=True)
    second = GenerationRequest(
        "r2",
        "session-1",
        [*chain, *new],
        held_len=done.chain_len,
        held_digest=done.chain_digest,
        tools=(TOOL,),
        agent=agent,
        metadata=SHORT,
    )
    before = engine.stats()
    prefill, _ = await _turn(pool, second)
    after = engine.stats()
    assert prefill.cached_tokens == len(chain)
    assert prefill.computed_tokens == len(new)
    # The engine reused the chain's KV and computed the new tokens plus the never-fed tail of the output.
    computed = after.prompt_tokens_computed - before.prompt_tokens_computed
    assert len(new) <= computed <= len(new) + len(done.output_token_ids)
    assert after.prompt_tokens_reused - before.prompt_tokens_reused == len(chain) + len(new) - computed


async def test_dropping_the_session_frees_the_engine_kv(served: tuple[TorchEngine, WorkerPool]) -> None:
    engine, pool = served
    await _turn(pool, GenerationRequest("r1", "session-2", chat.render_message("user", "hi"), metadata=SHORT))
    assert engine.stats().kv.chains == 1
    assert await pool.drop("session-2")
    assert engine.stats().kv.chains == 0
    assert engine.stats().kv.used_bytes == 0
