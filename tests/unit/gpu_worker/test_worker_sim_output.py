"""The sim's output plan: exactly the chat-format rendering of the decided item."""

from __future__ import annotations

import json

from gpu_worker.core.agent import AgentSettings
from gpu_worker.engines.base import AgentState, ArgsChunk, CallStart, GenerationJob, TextChunk, ToolSpec
from gpu_worker.engines.sim import plan_output
from gpu_worker.wire import chat, tokenizer

TOOL = ToolSpec("read_file", "", json.dumps({"type": "object", "properties": {"path": {"type": "string"}}}))


def job(*, calls: int = 0, max_output: int = 1000, generate: bool = True) -> GenerationJob:
    return GenerationJob(
        request_id="r",
        key="k",
        prompt=[1],
        reuse_from=None,
        reuse_len=0,
        max_output_tokens=max_output,
        tools=(TOOL,),
        agent=AgentState(tool_calls_since_user_message=calls),
        generate=generate,
    )


def test_a_call_renders_as_a_function_call_item() -> None:
    out = plan_output(job(), AgentSettings())
    assert out.finish_reason == "tool_call"
    events = [e for group in out.per_token for e in group]
    start = events[0]
    assert isinstance(start, CallStart)
    assert start.name == "read_file"
    arguments = "".join(e.text for e in events if isinstance(e, ArgsChunk))
    assert json.loads(arguments)["path"]
    assert list(out.ids) == chat.render_function_call("read_file", arguments)
    assert len(out.per_token) == len(out.ids)


def test_an_answer_renders_as_an_assistant_message() -> None:
    out = plan_output(job(calls=3), AgentSettings(answer_tokens=25))
    text = "".join(e.text for group in out.per_token for e in group if isinstance(e, TextChunk))
    assert out.finish_reason == "stop"
    assert list(out.ids) == chat.render_message("assistant", text)
    assert tokenizer.count(text) == 25


def test_output_is_cut_at_max_output_tokens() -> None:
    out = plan_output(job(calls=3, max_output=10), AgentSettings(answer_tokens=25))
    assert out.finish_reason == "length"
    assert len(out.ids) == 10 == len(out.per_token)


def test_metadata_steers_the_plan_and_prefill_only_has_no_output() -> None:
    answer_now = plan_output(
        GenerationJob("r", "k", [1], None, 0, 100, tools=(TOOL,), metadata={"tether.tool_calls": "0"}),
        AgentSettings(),
    )
    assert answer_now.finish_reason == "stop"
    assert plan_output(job(generate=False), AgentSettings()).ids == ()
