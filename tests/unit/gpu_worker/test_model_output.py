"""ModelOutput (gpu_worker/engines/model_output.py), the output both real-model engines share: sampled
ids in; text, call events, the finish reason and the parser's counts out."""

from __future__ import annotations

import re

import pytest

from gpu_worker.engines.base import ArgsChunk, CallStart, EngineEvent, Finished, TextChunk, ToolCallCounts
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
CUT_CALL = '<tool_call>\n{"name": "search", "arguments": {"q": "dé'  # arguments that never close
OTHER_TOOL = '<tool_call>\n{"name": "delete", "arguments": {}}\n</tool_call>'


def _output(**options: object) -> ModelOutput:
    calls = iter(f"call_{i}" for i in range(1, 10))
    return ModelOutput(DESCRIPTION, HfTokenizer(TOKENIZER_JSON), call_id=lambda: next(calls), **options)  # type: ignore[arg-type]


def _feed_one_by_one(output: ModelOutput, ids: list[int], reason: str) -> list[EngineEvent]:
    events: list[EngineEvent] = []
    for token in ids:
        events += output.push([token])
    return events + output.finish(reason)


def _finished(events: list[EngineEvent]) -> Finished:
    assert isinstance(events[-1], Finished)
    return events[-1]


def test_text_streams_whole_characters_and_the_stop_id_is_no_text() -> None:
    ids = [*ids_of("naïve ☕"), IM_END]
    events = _feed_one_by_one(_output(), ids, "stop")
    chunks = [e for e in events if isinstance(e, TextChunk)]
    assert "".join(c.text for c in chunks) == "naïve ☕"
    assert all("\ufffd" not in c.text for c in chunks)  # a character split across ids waits for its end
    assert sum(c.tokens for c in chunks) == len(ids) - 1  # the stop id is counted in no chunk
    assert events[-1] == Finished("stop", tuple(ids))
    assert _finished(events).tool_calls is None  # no tools offered: no parser ran


def test_a_call_becomes_call_events_and_finishes_as_tool_call() -> None:
    ids = [*ids_of("Searching.\n" + CALL), IM_END]
    events = _feed_one_by_one(_output(tool_names=["search"]), ids, "stop")
    assert [e for e in events if isinstance(e, CallStart)] == [CallStart("call_1", "search")]
    assert "".join(e.text for e in events if isinstance(e, ArgsChunk)) == '{"q": "déjà vu"}'
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == "Searching."
    assert events[-1] == Finished("tool_call", tuple(ids))
    assert _finished(events).tool_calls == ToolCallCounts(calls=1)


def test_without_tools_call_text_is_text() -> None:
    output = _output()
    events = output.push(ids_of(CALL)) + output.finish("stop")
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == CALL


@pytest.mark.parametrize(
    ("text", "reason", "finish_reason", "counts"),
    [
        (CALL + CALL, "stop", "tool_call", ToolCallCounts(calls=2)),
        (CUT_CALL, "length", "length", ToolCallCounts(malformed=1)),  # cut by the limit
        (CALL + CUT_CALL, "length", "length", ToolCallCounts(calls=1, malformed=1)),
        (CALL + " and more text", "length", "length", ToolCallCounts(calls=1)),  # cut: incomplete
        (CUT_CALL, "stop", "stop", ToolCallCounts(malformed=1)),  # the model ended inside the arguments
        (OTHER_TOOL, "stop", "stop", ToolCallCounts(text=1)),  # not an offered tool: text
        ("plain text", "stop", "stop", ToolCallCounts()),
    ],
)
def test_the_finish_reason_and_the_parser_counts(
    text: str, reason: str, finish_reason: str, counts: ToolCallCounts
) -> None:
    ids = ids_of(text) + ([IM_END] if reason == "stop" else [])
    finished = _finished(_feed_one_by_one(_output(tool_names=["search"]), ids, reason))
    assert (finished.finish_reason, finished.tool_calls) == (finish_reason, counts)
    assert finished.output_ids == tuple(ids)


def test_tool_choice_none_runs_no_parser() -> None:
    output = _output(tool_names=["search"], tool_choice="none")
    events = output.push([*ids_of(CALL), IM_END]) + output.finish("stop")
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == CALL
    assert _finished(events) == Finished("stop", (*ids_of(CALL), IM_END))
    assert _finished(events).tool_calls is None


def test_a_stop_may_end_plain_text_only() -> None:
    output = _output(tool_names=["search"])
    assert output.stoppable
    output.push(ids_of("Let me see. "))
    assert not output.stoppable  # the parser holds back the space (a call may follow it)
    output.push(ids_of("Fine"))
    assert output.stoppable
    output.push(ids_of("<tool_"))
    assert not output.stoppable  # the start of a tag is held back
    output.push(ids_of('call>\n{"name": "search", "arguments": {'))
    assert not output.stoppable  # a call started
    text = _output()
    text.push(ids_of("ok"))
    text.finish("length")
    assert not text.stoppable  # finished


def test_ids_after_the_stop_id_or_the_finish_and_unknown_reasons_are_refused() -> None:
    output = _output()
    output.push([*ids_of("ok"), IM_END])
    assert output.stopped
    with pytest.raises(ValueError, match="after the stop id"):
        output.push(ids_of("more"))
    with pytest.raises(ValueError, match="finish reason"):
        output.finish("abort")
    output.finish("stop")
    with pytest.raises(ValueError, match="finished"):
        output.finish("stop")
    with pytest.raises(ValueError, match="finished"):
        output.push([1])


def test_call_ids_look_like_the_sim_s() -> None:
    ids = {new_call_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"call_[a-z0-9]{24}", i) for i in ids)
