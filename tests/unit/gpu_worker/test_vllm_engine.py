"""The vllm engine against a fake of the AsyncLLM surface it calls (tests/fake_vllm.py): no vLLM, no GPU.

What vLLM itself would do with these calls is not tested here (docs/vllm.md says what has been run).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gpu_worker.config import SettingsError, WorkerSettings
from gpu_worker.core.errors import Draining, EngineFailure, InvalidRequest
from gpu_worker.engines.base import (
    ArgsChunk,
    CallStart,
    EngineEvent,
    Finished,
    GenerationJob,
    Prefilled,
    TextChunk,
    ToolSpec,
)
from gpu_worker.engines.vllm_engine import VllmEngine, VllmSettings
from tests.fake_vllm import (
    BLOCK_SIZE,
    EngineDeadError,
    FakeVllm,
    RequestOutputKind,
    Script,
    VLLMValidationError,
)
from tests.tiny_chatml import IM_END, ids_of, write_tiny_chatml

pytest.importorskip("jinja2", reason="describing a ChatML model renders its template (the torch extra)")

TOOL = ToolSpec(name="read_file", parameters_json=json.dumps({"type": "object"}))
CALL_TEXT = '<tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n</tool_call>'


def says(*pieces: str, stop: int | None = IM_END) -> Script:
    """A script that writes `pieces` (one step each), then the stop id in a step of its own."""
    steps = [ids_of(piece) for piece in pieces] + ([[stop]] if stop is not None else [])
    return lambda prompt: [list(step) for step in steps]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_tiny_chatml(tmp_path / "tiny-chat")


def _engine(fake: FakeVllm, model_dir: Path, **settings: object) -> VllmEngine:
    counter = itertools.count(1)
    return VllmEngine(
        VllmSettings(model=str(model_dir), **settings),  # type: ignore[arg-type]
        api=fake.api(),
        metrics_source=fake.registry,
        call_id=lambda: f"call_{next(counter)}",
    )


@pytest.fixture
async def started(model_dir: Path) -> AsyncIterator[Callable[..., object]]:
    engines: list[VllmEngine] = []

    async def start(fake: FakeVllm, **settings: object) -> VllmEngine:
        engine = _engine(fake, model_dir, **settings)
        await engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        await engine.stop()


def _job(prompt: list[int], **fields: object) -> GenerationJob:
    values: dict[str, object] = {
        "request_id": "r1",
        "key": "chain-1",
        "prompt": prompt,
        "reuse_from": None,
        "reuse_len": 0,
        "max_output_tokens": 256,
    }
    values.update(fields)
    return GenerationJob(**values)  # type: ignore[arg-type]


async def _run(engine: VllmEngine, job: GenerationJob) -> list[EngineEvent]:
    return [event async for event in engine.generate(job)]


def _text(events: list[EngineEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextChunk))


PROMPT = [*ids_of("<|im_start|>user\nHello there, how are you today?\n"), IM_END, *ids_of("\n")]


# ------------------------------------------------------------------------------------------ settings
def test_settings_read_the_environment_and_build_engine_args() -> None:
    env = {
        "TETHER_WORKER_VLLM_GPU_MEMORY_UTILIZATION": "0.8",
        "TETHER_WORKER_VLLM_MAX_MODEL_LEN": "8192",
        "TETHER_WORKER_VLLM_TENSOR_PARALLEL_SIZE": "2",
        "TETHER_WORKER_VLLM_DTYPE": "bfloat16",
        "TETHER_WORKER_VLLM_ENFORCE_EAGER": "true",
        "TETHER_WORKER_VLLM_ENGINE_ARGS": '{"max_num_batched_tokens": 4096}',
        "TETHER_WORKER_TORCH_DTYPE": "float16",  # another engine's: ignored
    }
    settings = VllmSettings.from_env(env)
    kwargs = {**settings.engine_kwargs(), "model": "m"}
    assert kwargs["enable_prefix_caching"] is True
    assert kwargs["disable_log_stats"] is False
    assert (kwargs["gpu_memory_utilization"], kwargs["max_model_len"], kwargs["tensor_parallel_size"]) == (
        0.8,
        8192,
        2,
    )
    assert (kwargs["dtype"], kwargs["enforce_eager"], kwargs["max_num_batched_tokens"]) == (
        "bfloat16",
        True,
        4096,
    )
    assert "max_num_seqs" not in kwargs  # 0: vLLM's own default


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TETHER_WORKER_VLLM_GPU_MEMORY_UTILIZATION": "1.5"}, "gpu_memory_utilization"),
        ({"TETHER_WORKER_VLLM_GPU_MEMORY_UTILIZATION": "most"}, "not a valid float"),
        ({"TETHER_WORKER_VLLM_TENSOR_PARALLEL_SIZE": "0"}, "tensor_parallel_size"),
        ({"TETHER_WORKER_VLLM_MAX_MODEL_LEN": "-1"}, "max_model_len"),
        ({"TETHER_WORKER_VLLM_DTYPE": "int4"}, "dtype"),
        ({"TETHER_WORKER_VLLM_ENFORCE_EAGER": "maybe"}, "not a valid bool"),
        ({"TETHER_WORKER_VLLM_MAX_NUM_SEQS": "many"}, "not a valid int"),
        ({"TETHER_WORKER_VLLM_ENGINE_ARGS": "[1]"}, "JSON object"),
        ({"TETHER_WORKER_VLLM_ENGINE_ARGS": "{"}, "not JSON"),
        ({"TETHER_WORKER_VLLM_ENGINE_ARGS": '{"enable_prefix_caching": false}'}, "Tether sets them"),
    ],
)
def test_bad_settings_fail_loudly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VllmSettings.from_env(env)


def test_the_worker_needs_a_model_and_vllm_for_the_vllm_engine() -> None:
    from gpu_worker.server.app import build_engine

    with pytest.raises(SettingsError, match="needs a model path"):
        WorkerSettings(engine="vllm")
    settings = WorkerSettings(engine="vllm", model_path="Qwen/Qwen2.5-0.5B-Instruct")
    if "vllm" in sys.modules or _vllm_installed():
        pytest.skip("vLLM is installed here; the refusal is for machines without it")
    with pytest.raises(SettingsError, match=r"tether\[vllm\]"):
        build_engine(settings, {})


def _vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def test_the_module_imports_without_vllm() -> None:
    import gpu_worker.engines.vllm_engine as module

    assert module.VllmEngine.name == "vllm"
    assert _vllm_installed() or "vllm" not in sys.modules


# ------------------------------------------------------------------------------------- start, describe
async def test_start_creates_the_engine_with_prefix_caching_and_describes_the_model(
    started: Callable[..., object], model_dir: Path
) -> None:
    fake = FakeVllm(says("hi"), max_model_len=2048)
    engine = await started(fake, gpu_memory_utilization=0.5)  # type: ignore[misc]
    args = fake.engine_args
    assert args is not None
    assert (args.model, args.enable_prefix_caching, args.gpu_memory_utilization) == (
        str(model_dir),
        True,
        0.5,
    )
    described = engine.describe()
    assert (described.engine, described.names, described.chat_format) == ("vllm", ("tiny-chat",), "chatml")
    assert described.tool_call_format == "hermes"
    assert described.context_length == 2048  # vLLM's max_model_len, not the checkpoint's
    assert described.vocab_size == 261
    assert described.stop_token_ids[0] == IM_END
    assert described.tokenizer_json == (model_dir / "tokenizer.json").read_text()


async def test_a_model_without_its_tokenizer_is_refused_at_start(tmp_path: Path) -> None:
    bare = write_tiny_chatml(tmp_path / "bare")
    (bare / "tokenizer.json").unlink()
    fake = FakeVllm(says("hi"))
    engine = _engine(fake, bare)
    with pytest.raises(EngineFailure, match=r"no tokenizer\.json"):
        await engine.start()
    assert fake.shut_down


async def test_generate_before_start_and_after_stop_is_draining(
    started: Callable[..., object], model_dir: Path
) -> None:
    fake = FakeVllm(says("hi"))
    with pytest.raises(Draining):
        await _run(_engine(fake, model_dir), _job(PROMPT))
    engine = await started(fake)  # type: ignore[misc]
    await engine.stop()
    assert fake.shut_down
    with pytest.raises(Draining):
        await _run(engine, _job(PROMPT))


# ------------------------------------------------------------------------------------------ generation
async def test_text_streams_and_finished_holds_the_exact_sampled_ids(started: Callable[..., object]) -> None:
    fake = FakeVllm(says("Fine, ", "thanks!"))
    engine = await started(fake)  # type: ignore[misc]
    events = await _run(engine, _job(PROMPT, temperature=0.7, top_p=0.9, seed=42))
    assert isinstance(events[0], Prefilled)
    assert events[0].cached_tokens == 0
    assert events[0].queue_seconds == pytest.approx(0.25)
    assert _text(events) == "Fine, thanks!"
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "stop"
    assert list(finished.output_ids) == [*ids_of("Fine, thanks!"), IM_END]  # the stop id included
    assert sum(e.tokens for e in events if isinstance(e, TextChunk)) == len(ids_of("Fine, thanks!"))
    (request,) = fake.requests
    params = request.params
    assert request.prompt == PROMPT
    assert (params.temperature, params.top_p, params.seed, params.n) == (0.7, 0.9, 42, 1)
    assert params.stop_token_ids == list(engine.describe().stop_token_ids)
    assert params.output_kind is RequestOutputKind.DELTA
    assert params.detokenize is False
    assert params.max_tokens == 256
    assert engine.in_flight == 0


async def test_greedy_requests_send_no_seed(started: Callable[..., object]) -> None:
    fake = FakeVllm(says("ok"))
    engine = await started(fake)  # type: ignore[misc]
    await _run(engine, _job(PROMPT, temperature=0.0, seed=42))
    assert fake.requests[0].params.seed is None


async def test_cached_tokens_are_vllm_s_own_count(started: Callable[..., object]) -> None:
    fake = FakeVllm(says("First answer."))
    engine = await started(fake)  # type: ignore[misc]
    first = await _run(engine, _job(PROMPT))
    chain = [*PROMPT, *first[-1].output_ids]  # type: ignore[union-attr]
    turn = [*chain, *ids_of("\n<|im_start|>user\nAnd then?\n"), IM_END]
    expected = fake.cached_prefix(turn)
    assert expected == len(chain) // BLOCK_SIZE * BLOCK_SIZE > 0  # the full blocks of turn 1
    second = await _run(engine, _job(turn, request_id="r2", reuse_from="chain-1", reuse_len=len(chain)))
    prefilled = second[0]
    assert isinstance(prefilled, Prefilled)
    assert prefilled.cached_tokens == expected  # vLLM's count, not the worker's reuse_len


async def test_a_tool_call_streams_with_a_server_made_call_id(started: Callable[..., object]) -> None:
    fake = FakeVllm(says("Let me look.\n", CALL_TEXT[:30], CALL_TEXT[30:]))
    engine = await started(fake)  # type: ignore[misc]
    events = await _run(engine, _job(PROMPT, tools=(TOOL,)))
    starts = [e for e in events if isinstance(e, CallStart)]
    assert starts == [CallStart(call_id="call_1", name="read_file")]
    assert "".join(e.text for e in events if isinstance(e, ArgsChunk)) == '{"path": "a.txt"}'
    assert _text(events) == "Let me look."
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "tool_call"
    assert list(finished.output_ids) == [*ids_of("Let me look.\n" + CALL_TEXT), IM_END]


async def test_tool_choice_none_leaves_call_text_as_text(started: Callable[..., object]) -> None:
    fake = FakeVllm(says(CALL_TEXT))
    engine = await started(fake)  # type: ignore[misc]
    events = await _run(engine, _job(PROMPT, tools=(TOOL,), tool_choice="none"))
    assert _text(events) == CALL_TEXT


@pytest.mark.parametrize("choice", ["required", "read_file"])
async def test_a_forced_tool_choice_is_refused(started: Callable[..., object], choice: str) -> None:
    engine = await started(FakeVllm(says("x")))  # type: ignore[misc]
    with pytest.raises(InvalidRequest, match="constrained decoding"):
        await _run(engine, _job(PROMPT, tools=(TOOL,), tool_choice=choice))


async def test_the_output_stops_at_max_output_tokens(started: Callable[..., object]) -> None:
    fake = FakeVllm(says("A long answer that goes on"))
    engine = await started(fake)  # type: ignore[misc]
    events = await _run(engine, _job(PROMPT, max_output_tokens=6))
    assert events[-1] == Finished("length", tuple(ids_of("A long")))
    assert _text(events) == "A long"


async def test_max_tokens_is_capped_by_the_context_left(started: Callable[..., object]) -> None:
    fake = FakeVllm(says("ok"), max_model_len=len(PROMPT) + 3)
    engine = await started(fake)  # type: ignore[misc]
    await _run(engine, _job(PROMPT, max_output_tokens=1000))
    assert fake.requests[0].params.max_tokens == 3
    full = [*PROMPT, 1, 2, 3]
    with pytest.raises(InvalidRequest, match="fills the model's context"):
        await _run(engine, _job(full))
    assert len(fake.requests) == 1


async def test_a_prefill_only_turn_warms_the_cache_and_outputs_nothing(
    started: Callable[..., object],
) -> None:
    fake = FakeVllm(says("ignored"))
    engine = await started(fake)  # type: ignore[misc]
    events = await _run(engine, _job(PROMPT, generate=False))
    assert [type(e) for e in events] == [Prefilled, Finished]
    assert events[-1] == Finished("stop", ())
    assert fake.requests[0].params.max_tokens == 1
    assert fake.cached_prefix([*PROMPT, 1]) == len(PROMPT) // BLOCK_SIZE * BLOCK_SIZE


# ------------------------------------------------------------------------------------ cancellation
async def test_a_consumer_that_goes_away_aborts_the_vllm_request(started: Callable[..., object]) -> None:
    fake = FakeVllm(says("one ", "two ", "three"))
    fake.gate = asyncio.Event()
    engine = await started(fake)  # type: ignore[misc]
    stream = engine.generate(_job(PROMPT))
    assert isinstance(await anext(stream), Prefilled)
    assert isinstance(await anext(stream), TextChunk)
    assert engine.in_flight == 1
    await stream.aclose()  # type: ignore[attr-defined]
    (request,) = fake.requests
    assert request.aborted
    assert fake.aborted == [request.request_id]
    assert engine.in_flight == 0


async def test_a_cancelled_generation_aborts_the_vllm_request(started: Callable[..., object]) -> None:
    fake = FakeVllm(says("one ", "two ", "three"))
    fake.gate = asyncio.Event()
    engine = await started(fake)  # type: ignore[misc]
    task = asyncio.create_task(_run(engine, _job(PROMPT)))
    await fake.step_started.wait()  # the first step went out; the second waits at the gate
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.requests[0].aborted
    assert engine.in_flight == 0


async def test_request_ids_are_unique_per_submission(started: Callable[..., object]) -> None:
    fake = FakeVllm(says("ok"))
    engine = await started(fake)  # type: ignore[misc]
    await _run(engine, _job(PROMPT))
    await _run(engine, _job(PROMPT))
    first, second = (r.request_id for r in fake.requests)
    assert first != second
    assert first.startswith("r1-")


# ------------------------------------------------------------------------------------------ errors
async def test_a_request_vllm_refuses_is_invalid(started: Callable[..., object]) -> None:
    fake = FakeVllm(says("ok", "more"))
    engine = await started(fake)  # type: ignore[misc]
    fake.fail_request = VLLMValidationError("top_p must be in (0, 1]")
    with pytest.raises(InvalidRequest, match="top_p"):
        await _run(engine, _job(PROMPT))


async def test_a_failed_generation_is_an_engine_failure_and_the_engine_goes_on(
    started: Callable[..., object],
) -> None:
    fake = FakeVllm(says("ok", "more"))
    engine = await started(fake)  # type: ignore[misc]
    fake.fail_request = RuntimeError("CUDA error: an illegal memory access")
    with pytest.raises(EngineFailure, match="illegal memory access"):
        await _run(engine, _job(PROMPT))
    assert fake.requests[0].aborted
    events = await _run(engine, _job(PROMPT))
    assert isinstance(events[-1], Finished)


async def test_a_dead_engine_fails_this_request_and_the_next(started: Callable[..., object]) -> None:
    fake = FakeVllm(says("ok", "more"))
    engine = await started(fake)  # type: ignore[misc]
    fake.fail_request = EngineDeadError()
    with pytest.raises(EngineFailure, match="died"):
        await _run(engine, _job(PROMPT))
    with pytest.raises(EngineFailure, match="has failed"):
        await _run(engine, _job(PROMPT))


# ------------------------------------------------------------------------------------------ metrics
async def test_vllm_series_are_exported_on_the_worker_registry(started: Callable[..., object]) -> None:
    fake = FakeVllm(says("First answer."))
    engine = await started(fake)  # type: ignore[misc]
    worker_registry = CollectorRegistry()
    engine.register_metrics(worker_registry)
    first = await _run(engine, _job(PROMPT))
    chain = [*PROMPT, *first[-1].output_ids]  # type: ignore[union-attr]
    await _run(engine, _job([*chain, *ids_of("more")]))
    text = generate_latest(worker_registry).decode()
    hits = fake.cached_prefix([*chain, *ids_of("more")])
    assert (
        f'vllm:prefix_cache_hits_total{{engine="0",model_name="{fake.engine_args.model}"}} {float(hits)}'
        in text
    )  # type: ignore[union-attr]
    assert "vllm:num_requests_waiting" in text
    assert "vllm:kv_cache_usage_perc" in text
    assert "tether_" not in text  # only vLLM's families travel


async def test_a_stop_ends_a_text_output_with_the_ids_so_far(started: Callable[..., object]) -> None:
    fake = FakeVllm(says("one ", "two ", "three"))
    fake.gate = asyncio.Event()
    engine = await started(fake)  # type: ignore[misc]
    job = _job(PROMPT)
    stream = engine.generate(job)
    assert isinstance(await anext(stream), Prefilled)
    assert isinstance(await anext(stream), TextChunk)  # "one "
    job.stop.set()  # the box steered the response
    fake.gate.set()
    rest = [event async for event in stream]
    finished = rest[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "length"  # cut as at a limit; the service reports "stopped"
    assert list(finished.output_ids) == ids_of("one ")  # what was sampled before the stop, no stop id
    assert fake.requests[0].aborted  # vLLM stops decoding it
    assert engine.in_flight == 0


async def test_a_stop_does_not_cut_a_tool_call(started: Callable[..., object]) -> None:
    fake = FakeVllm(says(CALL_TEXT[:30], CALL_TEXT[30:]))
    engine = await started(fake)  # type: ignore[misc]
    job = _job(PROMPT, tools=(TOOL,))
    job.stop.set()
    events = await _run(engine, job)
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "tool_call"
    assert list(finished.output_ids) == [*ids_of(CALL_TEXT), IM_END]
