"""ModelOutput (gpu_worker/engines/model_output.py): sampled ids in, text and call events out."""

from __future__ import annotations

import re

import pytest

from gpu_worker.engines.base import ArgsChunk, CallStart, EngineEvent, Finished, TextChunk
from gpu_worker.engines.model_output import ModelOutput, new_call_id
from gpu_worker.wire.model import ModelDescription
from gpu_worker.wire.tokenizer import HfTokenizer
from tests.tiny_chatml import ENDOFTEXT, IM_END, VOCAB_SIZE, ids_of, tokenizer_json

TOKENIZER_JSON = tokenizer_json()
DESCRIPTION = ModelDescription(
    names=("tiny",),
    engine="vllm",
    tokenizer_kind="hf",
    tokenizer_json=TOKENIZER_JSON,
    chat_format="chatml",
    tool_call_format="hermes",
    vocab_size=VOCAB_SIZE,
    context_length=4096,
    stop_token_ids=(IM_END, ENDOFTEXT),
)
CALL = '<tool_call>\n{"name": "search", "arguments": {"q": "déjà vu"}}\n</tool_call>'


def _output(**options: object) -> ModelOutput:
    calls = iter(f"call_{i}" for i in range(1, 10))
    return ModelOutput(DESCRIPTION, HfTokenizer(TOKENIZER_JSON), call_id=lambda: next(calls), **options)  # type: ignore[arg-type]


def _feed_one_by_one(output: ModelOutput, ids: list[int], reason: str) -> list[EngineEvent]:
    events: list[EngineEvent] = []
    for token in ids:
        events += output.push([token])
    return events + output.finish(reason)


def test_text_streams_whole_characters_and_the_stop_id_is_no_text() -> None:
    ids = [*ids_of("naïve ☕"), IM_END]
    events = _feed_one_by_one(_output(), ids, "stop")
    chunks = [e for e in events if isinstance(e, TextChunk)]
    assert "".join(c.text for c in chunks) == "naïve ☕"
    assert all("\ufffd" not in c.text for c in chunks)  # a character split across ids waits for its end
    assert sum(c.tokens for c in chunks) == len(ids) - 1  # the stop id is counted in no chunk
    assert events[-1] == Finished("stop", tuple(ids))


def test_a_call_becomes_call_events_and_finishes_as_tool_call() -> None:
    ids = [*ids_of("Searching.\n" + CALL), IM_END]
    events = _feed_one_by_one(_output(tool_names=["search"]), ids, "stop")
    assert [e for e in events if isinstance(e, CallStart)] == [CallStart("call_1", "search")]
    assert "".join(e.text for e in events if isinstance(e, ArgsChunk)) == '{"q": "déjà vu"}'
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == "Searching."
    assert events[-1] == Finished("tool_call", tuple(ids))


def test_without_tools_call_text_is_text() -> None:
    events = _output().push(ids_of(CALL)) + _output().finish("stop")
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == CALL


def test_a_call_cut_by_the_length_limit_finishes_as_length() -> None:
    ids = ids_of(CALL)[:40]
    output = _output(tool_names=["search"])
    events = output.push(ids) + output.finish("length")
    assert any(isinstance(e, CallStart) for e in events)
    assert events[-1] == Finished("length", tuple(ids))


def test_ids_after_the_stop_id_and_unknown_reasons_are_refused() -> None:
    output = _output()
    output.push([*ids_of("ok"), IM_END])
    assert output.stopped
    with pytest.raises(ValueError, match="after the stop id"):
        output.push(ids_of("more"))
    with pytest.raises(ValueError, match="finish reason"):
        output.finish("abort")


def test_call_ids_look_like_the_sim_s() -> None:
    ids = {new_call_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"call_[a-z0-9]{24}", i) for i in ids)
