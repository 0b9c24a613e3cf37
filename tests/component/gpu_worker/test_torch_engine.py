"""The torch engine in-process on a tiny model: KV reuse across turns, the chat-format output, batching,
eviction and the precondition path, cancellation, a stop (a steered response), and bad requests."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch", reason="the torch extra is not installed (pip install '.[torch]')")

from gpu_worker.core.errors import (  # noqa: E402
    Draining,
    EngineFailure,
    InvalidRequest,
    OverBudget,
    PreconditionFailed,
    QueueFull,
)
from gpu_worker.engines.base import (  # noqa: E402
    AgentState,
    ArgsChunk,
    CallStart,
    Engine,
    EngineEvent,
    Finished,
    GenerationJob,
    Prefilled,
    TextChunk,
    ToolSpec,
)
from gpu_worker.engines.torch_engine import TorchEngine, TorchSettings  # noqa: E402
from gpu_worker.engines.torch_model import Transformer, dummy_model, preset  # noqa: E402
from gpu_worker.wire import chat, tokenizer  # noqa: E402

CHUNK = 32
PER_TOKEN = preset("tiny").kv_bytes_per_token(torch.float32)
SETTINGS = TorchSettings(preset="tiny", device="cpu", kv_chunk_tokens=CHUNK, max_batch=4, max_queue=8)
SEARCH = ToolSpec(
    name="search",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}}}
    ),
)
# Short answers keep the tests fast on shared CPUs.
SHORT = {"tether.answer_tokens": "8", "tether.argument_bytes": "40"}


@pytest.fixture(scope="module")
def model() -> Transformer:
    return dummy_model(preset("tiny"), seed=0, device=torch.device("cpu"), dtype=torch.float32)


async def _engine(model: Transformer, **changes: int) -> TorchEngine:
    engine = TorchEngine(replace(SETTINGS, **changes), model=model)
    await engine.start()
    return engine


@pytest.fixture
async def engine(model: Transformer) -> AsyncIterator[TorchEngine]:
    engine = await _engine(model)
    yield engine
    await engine.stop()


def _job(
    key: str, prompt: list[int], reuse_from: str | None = None, reuse_len: int = 0, **kw: object
) -> GenerationJob:
    fields: dict[str, object] = {"max_output_tokens": 256, "metadata": SHORT, **kw}
    return GenerationJob(
        request_id=f"r-{key}-{len(prompt)}",
        key=key,
        prompt=prompt,
        reuse_from=reuse_from,
        reuse_len=reuse_len,
        **fields,
    )  # type: ignore[arg-type]


def _user(text: str) -> list[int]:
    return chat.render_message("user", text)


async def _run(engine: TorchEngine, job: GenerationJob) -> list[EngineEvent]:
    return [event async for event in engine.generate(job)]


def _finished(events: list[EngineEvent]) -> Finished:
    last = events[-1]
    assert isinstance(last, Finished)
    return last


def test_the_engine_implements_the_protocol(engine: TorchEngine) -> None:
    assert isinstance(engine, Engine)


async def test_an_answer_is_the_chat_rendering_of_the_streamed_text(engine: TorchEngine) -> None:
    events = await _run(engine, _job("a", _user("Say something.")))
    assert isinstance(events[0], Prefilled)
    assert sum(isinstance(e, Prefilled) for e in events) == 1
    finished = _finished(events)
    text = "".join(e.text for e in events if isinstance(e, TextChunk))
    assert finished.finish_reason == "stop"
    assert list(finished.output_ids) == chat.render_message("assistant", text)


async def test_a_call_has_valid_json_arguments_generated_by_the_model(engine: TorchEngine) -> None:
    events = await _run(engine, _job("a", _user("Find it."), tools=(SEARCH,)))
    finished = _finished(events)
    starts = [e for e in events if isinstance(e, CallStart)]
    assert len(starts) == 1
    assert starts[0].name == "search"
    assert events.index(starts[0]) < min(i for i, e in enumerate(events) if isinstance(e, ArgsChunk))
    arguments = "".join(e.text for e in events if isinstance(e, ArgsChunk))
    assert set(json.loads(arguments)) == {"query", "limit"}
    assert finished.finish_reason == "tool_call"
    assert list(finished.output_ids) == chat.render_function_call("search", arguments)


def _next_turn(prompt: list[int], output: Finished, tool_output: str) -> list[int]:
    return [*prompt, *output.output_ids, *chat.render_function_call_output(tool_output)]


async def test_a_continuation_prefills_only_what_the_cache_does_not_hold(engine: TorchEngine) -> None:
    first = _user("Look at the repository and find the failing test. " * 12)
    out = _finished(await _run(engine, _job("a", first, tools=(SEARCH,))))
    held = engine.stats().kv.tokens
    assert len(first) <= held <= len(first) + len(out.output_ids)
    second = _next_turn(first, out, "tests/test_x.py fails")
    before = engine.stats()
    agent = AgentState(tool_calls_since_user_message=1, user_messages=1, last_item_is_tool_output=True)
    await _run(engine, _job("a", second, "a", len(first) + len(out.output_ids), tools=(SEARCH,), agent=agent))
    after = engine.stats()
    assert after.prompt_tokens_reused - before.prompt_tokens_reused == held
    assert after.prompt_tokens_computed - before.prompt_tokens_computed == len(second) - held
    assert len(second) - held < len(second) // 4


async def test_output_with_kv_reuse_equals_output_computed_from_scratch(engine: TorchEngine) -> None:
    first = _user("Plan the change.")
    out = _finished(await _run(engine, _job("a", first, tools=(SEARCH,))))
    second = _next_turn(first, out, "three files match")
    agent = AgentState(tool_calls_since_user_message=3, user_messages=1, last_item_is_tool_output=True)
    reused = await _run(engine, _job("a", second, "a", len(first) + len(out.output_ids), agent=agent))
    scratch = await _run(engine, _job("b", second, agent=agent))
    assert _finished(reused).output_ids == _finished(scratch).output_ids
    assert [e for e in reused if not isinstance(e, Prefilled)] == [
        e for e in scratch if not isinstance(e, Prefilled)
    ]


async def test_a_prefix_hit_on_another_chain_copies_its_prefix(engine: TorchEngine) -> None:
    shared = _user("The same long system context. " * 6)
    await _run(engine, _job("a", shared, generate=False))
    before = engine.stats()
    prompt = [*shared, *_user("A different question.")]
    await _run(engine, _job("b", prompt, "a", len(shared)))
    assert engine.stats().prompt_tokens_reused - before.prompt_tokens_reused == len(shared)
    # chain a is intact: continuing it still reuses everything it held
    await _run(engine, _job("a", [*shared, *_user("Go on.")], "a", len(shared)))
    assert engine.stats().prompt_tokens_reused - before.prompt_tokens_reused == 2 * len(shared)


async def test_generate_false_only_prefills(engine: TorchEngine) -> None:
    prompt = _user("Warm this up.")
    events = await _run(engine, _job("a", prompt, generate=False))
    assert len(events) == 2
    assert isinstance(events[0], Prefilled)
    assert events[1] == Finished("stop", ())
    assert engine.stats().kv.tokens == len(prompt)


async def test_concurrent_sequences_are_batched_and_match_running_alone(engine: TorchEngine) -> None:
    jobs = [
        _job(f"k{i}", _user(f"Question number {i}. " * (i + 1)), tools=(SEARCH,) * (i % 2)) for i in range(4)
    ]
    alone = [_finished(await _run(engine, job)).output_ids for job in jobs]
    for job in jobs:
        engine.drop(job.key)
    batch_sizes: list[int] = []
    compute = engine._compute

    def recording(work: list) -> list[int | None]:  # type: ignore[type-arg]
        batch_sizes.append(len(work))
        return compute(work)

    engine._compute = recording  # type: ignore[method-assign]
    together = await asyncio.gather(*(_run(engine, job) for job in jobs))
    assert [_finished(events).output_ids for events in together] == alone
    assert max(batch_sizes) == 4


async def test_sampling_is_reproducible_from_the_seed(engine: TorchEngine) -> None:
    prompt = _user("Tell a story.")
    runs = [
        _finished(await _run(engine, _job(f"s{i}", prompt, temperature=1.0, seed=seed))).output_ids
        for i, seed in enumerate((5, 5, 6))
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


async def test_evicted_chain_is_a_failed_precondition_then_a_full_resend_works(model: Transformer) -> None:
    engine = await _engine(model, kv_budget_bytes=3 * CHUNK * PER_TOKEN)
    try:
        prompts = {key: _user(f"Chain {key}.") for key in "abcd"}
        outputs = {
            key: _finished(await _run(engine, _job(key, p, generate=False))) for key, p in prompts.items()
        }
        assert engine.stats().kv.chains == 3
        assert engine.stats().kv.evictions == 1
        with pytest.raises(PreconditionFailed) as info:
            await _run(engine, _job("a", [*prompts["a"], *_user("more")], "a", len(prompts["a"])))
        assert info.value.reason == "unknown_cache_key"
        resend = await _run(engine, _job("a", [*prompts["a"], *_user("more")]))
        assert _finished(resend).finish_reason == "stop"
        assert outputs["d"].output_ids == ()
    finally:
        await engine.stop()


async def test_cancelling_frees_the_slot_and_leaves_the_chain_as_it_was(engine: TorchEngine) -> None:
    first = _user("Start here.")
    out = _finished(await _run(engine, _job("a", first)))
    chain_before = engine.stats().kv.tokens
    second = [*first, *out.output_ids, *_user("And then?")]
    job = _job("a", second, "a", len(first) + len(out.output_ids), metadata={"tether.answer_tokens": "500"})
    stream = engine.generate(job)
    assert isinstance(await anext(stream), Prefilled)
    assert isinstance(await anext(stream), TextChunk)
    await stream.aclose()
    async with asyncio.timeout(10):
        while engine.stats().running:  # the slot is freed at the next step boundary
            await asyncio.sleep(0.005)
    assert engine.stats().kv.tokens == chain_before
    # The chain still serves the continuation it held before.
    before = engine.stats()
    await _run(engine, _job("a", second, "a", len(first) + len(out.output_ids)))
    assert engine.stats().prompt_tokens_reused - before.prompt_tokens_reused == chain_before


async def test_a_stop_ends_an_answer_at_the_next_step_and_the_chain_holds_it(engine: TorchEngine) -> None:
    first = _user("Write at length.")
    job = _job("a", first, metadata={"tether.answer_tokens": "500"})
    stream = engine.generate(job)
    events = [await anext(stream), await anext(stream)]
    assert isinstance(events[0], Prefilled)
    assert isinstance(events[1], TextChunk)
    job.stop.set()  # the box steered the response
    events += [event async for event in stream]
    out = _finished(events)
    assert out.finish_reason == "length"  # cut as at a limit; the worker reports "stopped"
    text = "".join(e.text for e in events if isinstance(e, TextChunk))
    assert list(out.output_ids) == chat.render_message("assistant", text)[:-1]  # no [END]
    assert len(out.output_ids) < 50  # far fewer than the 500 tokens it was to write
    assert engine.stats().running == 0
    # The chain is held as at a length limit: the next turn prefills only its delta.
    held = engine.stats().kv.tokens
    assert len(first) < held <= len(first) + len(out.output_ids)
    second = [*first, *out.output_ids, tokenizer.Special.END, *_user("Stop there.")]
    before = engine.stats()
    await _run(engine, _job("a", second, "a", len(first) + len(out.output_ids)))
    assert engine.stats().prompt_tokens_reused - before.prompt_tokens_reused == held


async def test_a_stop_does_not_cut_a_call(engine: TorchEngine) -> None:
    job = _job("a", _user("Find it."), tools=(SEARCH,))
    job.stop.set()
    events = await _run(engine, job)
    assert _finished(events).finish_reason == "tool_call"
    arguments = "".join(e.text for e in events if isinstance(e, ArgsChunk))
    assert list(_finished(events).output_ids) == chat.render_function_call("search", arguments)


async def test_cancelling_a_queued_generation_removes_it(model: Transformer) -> None:
    engine = await _engine(model, max_batch=1)
    try:
        running = engine.generate(_job("a", _user("first"), metadata={"tether.answer_tokens": "200"}))
        assert isinstance(await anext(running), Prefilled)
        queued = asyncio.create_task(_run(engine, _job("b", _user("second"))))
        async with asyncio.timeout(10):
            while not engine.stats().waiting:
                await asyncio.sleep(0)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert engine.stats().waiting == 0
        await running.aclose()
    finally:
        await engine.stop()


async def test_a_full_queue_is_refused(model: Transformer) -> None:
    engine = await _engine(model, max_batch=1, max_queue=1)
    gate = threading.Event()
    compute = engine._compute

    def gated(work: list) -> list[int | None]:  # type: ignore[type-arg]
        gate.wait(30)  # holds the running sequence in its step
        return compute(work)

    engine._compute = gated  # type: ignore[method-assign]
    try:
        running = asyncio.create_task(_run(engine, _job("a", _user("a"))))
        async with asyncio.timeout(10):
            while not engine.stats().running:
                await asyncio.sleep(0)
        queued = asyncio.create_task(_run(engine, _job("b", _user("b"))))
        async with asyncio.timeout(10):
            while not engine.stats().waiting:
                await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await _run(engine, _job("c", _user("c")))
        gate.set()
        for events in await asyncio.gather(running, queued):
            assert isinstance(events[-1], Finished)
    finally:
        gate.set()
        await engine.stop()


@pytest.mark.parametrize(
    ("prompt", "changes", "error"),
    [
        ([], {}, InvalidRequest),
        ([tokenizer.VOCAB_SIZE], {}, InvalidRequest),
        ([1] * 9000, {}, InvalidRequest),  # beyond the model's 8192 positions
        ([1, 2], {"reuse_len": 3}, InvalidRequest),
        ([1] * 100, {"kv_budget": 2}, OverBudget),
    ],
)
async def test_bad_requests_are_refused_before_any_event(
    model: Transformer, prompt: list[int], changes: dict[str, int], error: type[Exception]
) -> None:
    budget = changes.get("kv_budget", 1000) * CHUNK * PER_TOKEN
    engine = await _engine(model, kv_budget_bytes=budget)
    try:
        with pytest.raises(error):
            await _run(engine, _job("a", prompt, reuse_len=changes.get("reuse_len", 0)))
        assert engine.stats().running == engine.stats().waiting == 0
    finally:
        await engine.stop()


async def test_a_failed_step_fails_its_generations_and_the_engine_goes_on(engine: TorchEngine) -> None:
    compute = engine._compute

    def broken(work: list) -> list[int | None]:  # type: ignore[type-arg]
        raise RuntimeError("CUDA out of memory (simulated)")

    engine._compute = broken  # type: ignore[method-assign]
    with pytest.raises(EngineFailure):
        await _run(engine, _job("a", _user("boom")))
    assert engine.stats().running == 0
    engine._compute = compute  # type: ignore[method-assign]
    assert isinstance((await _run(engine, _job("a", _user("again"))))[-1], Finished)


async def test_a_stopped_engine_refuses_work(model: Transformer) -> None:
    engine = await _engine(model)
    await engine.stop()
    with pytest.raises(Draining):
        await _run(engine, _job("a", _user("late")))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (runs wherever one exists)")
async def test_the_engine_runs_on_cuda_greedy_and_sampled() -> None:
    engine = TorchEngine(replace(SETTINGS, device="cuda"))
    await engine.start()
    try:
        assert engine.device.type == "cuda"
        first = _user("On the GPU.")
        out = _finished(await _run(engine, _job("a", first, tools=(SEARCH,))))
        second = _next_turn(first, out, "ok")
        sampled = await _run(
            engine, _job("a", second, "a", len(first) + len(out.output_ids), temperature=0.8, seed=3)
        )
        assert _finished(sampled).output_ids
        assert engine.stats().prompt_tokens_reused >= len(first)
    finally:
        await engine.stop()
