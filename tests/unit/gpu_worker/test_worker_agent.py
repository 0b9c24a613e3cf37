"""The agent policy: what the engines' "model" does next."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_worker.core import agent
from gpu_worker.core.agent import AgentSettings, Answer, CallTool, answer_pieces, answer_text, decide
from gpu_worker.core.errors import InvalidRequest
from gpu_worker.engines.base import AgentState, GenerationJob, ToolSpec
from gpu_worker.wire import tokenizer

GREP = ToolSpec(
    "grep",
    "search files",
    json.dumps(
        {
            "type": "object",
            "properties": {
                "pattern": {"type": "string"},
                "path": {"type": "string"},
                "max_results": {"type": "integer", "minimum": 1, "maximum": 50},
                "ratio": {"type": "number"},
                "ignore_case": {"type": "boolean"},
                "mode": {"enum": ["fast", "exact"]},
                "globs": {"type": "array", "items": {"type": "string"}},
                "options": {"type": "object", "properties": {"context": {"type": "integer"}}},
                "maybe": {"type": ["null", "string"]},
            },
            "required": ["pattern"],
        }
    ),
)
READ = ToolSpec("read_file", "", json.dumps({"type": "object", "properties": {"path": {"type": "string"}}}))


def job(
    *,
    tools: tuple[ToolSpec, ...] = (GREP, READ),
    choice: str = "auto",
    calls: int = 0,
    seed: int = 7,
    key: str = "chain-1",
    metadata: dict[str, str] | None = None,
) -> GenerationJob:
    return GenerationJob(
        request_id="r",
        key=key,
        prompt=[1, 2, 3],
        reuse_from=None,
        reuse_len=0,
        max_output_tokens=512,
        tools=tools,
        tool_choice=choice,
        agent=AgentState(tool_calls_since_user_message=calls, user_messages=1),
        metadata=metadata or {},
        seed=seed,
    )


def test_auto_calls_tools_until_the_per_message_budget_then_answers() -> None:
    s = AgentSettings(tool_calls_per_message=2, answer_tokens=17)
    assert isinstance(decide(job(calls=0), s), CallTool)
    assert isinstance(decide(job(calls=1), s), CallTool)
    assert decide(job(calls=2), s) == Answer(max_tokens=17)


def test_none_and_no_tools_answer_required_and_named_force_a_call() -> None:
    s = AgentSettings(tool_calls_per_message=0)
    assert isinstance(decide(job(choice="none"), AgentSettings()), Answer)
    assert isinstance(decide(job(tools=()), AgentSettings()), Answer)
    assert isinstance(decide(job(choice="required", calls=99), s), CallTool)
    forced = decide(job(choice="read_file", calls=99), s)
    assert isinstance(forced, CallTool)
    assert forced.name == "read_file"


@pytest.mark.parametrize(("tools", "choice"), [((GREP,), "write_file"), ((), "required"), ((), "grep")])
def test_a_choice_that_cannot_be_honoured_is_invalid(tools: tuple[ToolSpec, ...], choice: str) -> None:
    with pytest.raises(InvalidRequest):
        decide(job(tools=tools, choice=choice), AgentSettings())


def test_decisions_are_deterministic_per_seed_prompt_and_state() -> None:
    s = AgentSettings()
    assert decide(job(), s) == decide(job(), s)
    assert decide(job(key="a"), s) == decide(job(key="b"), s)  # the same run under another key (or none)
    by_seed = {str(decide(job(seed=n), s)) for n in range(8)}
    by_prompt = {str(decide(replace(job(), prompt=[n, 2, 3]), s)) for n in range(8)}
    by_state = {str(decide(replace(job(), agent=AgentState(user_messages=n)), s)) for n in range(8)}
    assert min(len(by_seed), len(by_prompt), len(by_state)) == 8


def test_arguments_are_json_that_fill_the_schema_to_about_the_target_size() -> None:
    call = decide(job(choice="grep"), AgentSettings(argument_bytes=300))
    assert isinstance(call, CallTool)
    args = json.loads(call.arguments)
    assert set(args) == {
        "pattern",
        "path",
        "max_results",
        "ratio",
        "ignore_case",
        "mode",
        "globs",
        "options",
        "maybe",
    }
    assert isinstance(args["pattern"], str)
    assert args["path"].startswith("src/")
    assert " " not in args["path"]
    assert 1 <= args["max_results"] <= 50
    assert isinstance(args["ratio"], float)
    assert isinstance(args["ignore_case"], bool)
    assert args["mode"] in ("fast", "exact")
    assert isinstance(args["globs"], list)
    assert isinstance(args["options"]["context"], int)
    assert 300 <= len(call.arguments.encode()) <= 360
    assert call.call_id.startswith("call_")
    assert len(call.call_id) == 29


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=2, max_value=4000), st.integers(min_value=0, max_value=2**32))
def test_argument_size_tracks_the_setting(target: int, seed: int) -> None:
    text = agent.make_arguments(READ, target, random.Random(seed))
    assert json.loads(text)["path"]
    assert len(text.encode()) >= min(target, 20)
    assert len(text.encode()) <= max(target, 40) + 20


def test_tools_without_properties_get_an_empty_object() -> None:
    bare = ToolSpec("ping", "", "{}")
    assert agent.make_arguments(bare, 500, random.Random(1)) == "{}"


@pytest.mark.parametrize("schema", ["not json", "[1, 2]", '"text"'])
def test_a_schema_that_is_not_a_json_object_is_invalid(schema: str) -> None:
    with pytest.raises(InvalidRequest):
        agent.tool_schema(ToolSpec("bad", "", schema))


def test_metadata_overrides_the_defaults_from_the_class_or_an_instance() -> None:
    md = {agent.METADATA_TOOL_CALLS: "0", agent.METADATA_ANSWER_TOKENS: " 9 ", "other": "ignored"}
    assert AgentSettings.from_metadata(md) == AgentSettings(tool_calls_per_message=0, answer_tokens=9)
    base = AgentSettings(argument_bytes=500)
    assert base.from_metadata(md) == AgentSettings(
        tool_calls_per_message=0, answer_tokens=9, argument_bytes=500
    )
    assert base.from_metadata({}) is base


@pytest.mark.parametrize(
    "md",
    [
        {agent.METADATA_TOOL_CALLS: "three"},
        {agent.METADATA_TOOL_CALLS: "-1"},
        {agent.METADATA_ANSWER_TOKENS: "0"},
        {agent.METADATA_ANSWER_TOKENS: "1e9"},
        {agent.METADATA_ARGUMENT_BYTES: "99999999"},
    ],
)
def test_bad_metadata_values_are_invalid_requests(md: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest, match="metadata tether"):
        AgentSettings.from_metadata(md)


def test_settings_reject_out_of_range_defaults() -> None:
    with pytest.raises(ValueError, match="answer_tokens"):
        AgentSettings(answer_tokens=0)


def test_every_word_of_the_bank_is_one_token() -> None:
    for word in agent._WORDS:
        assert tokenizer.count(" " + word) == 1, word
    for starter in agent._STARTERS:
        assert tokenizer.count(starter) == 1, starter
        assert tokenizer.count(" " + starter) == 1, starter


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 60, 333])
def test_answer_text_has_exactly_n_tokens_and_re_encodes_to_the_same_ids(n: int) -> None:
    pieces = answer_pieces(job(), n)
    text = answer_text(job(), n)
    assert "".join(pieces) == text
    ids = tokenizer.encode(text)
    assert len(ids) == n
    assert tokenizer.encode(tokenizer.decode(ids)) == ids
    if n >= 2:
        assert text.endswith(".")
    assert answer_text(job(), n) == text  # deterministic
