"""What a real model writes in the torch engine, without the model: `ModelPlan` on SmolLM2's tokenizer,
fed scripted or random ids. Free output stops at a stop id, at the limit or at a stop (a steered
response); a forced call (constrained decoding) is valid JSON for its schema whatever the model picks
among the allowed ids. The text, calls and finish reasons themselves are ModelOutput's
(tests/unit/gpu_worker/test_model_output.py)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("tokenizers", reason="the torch extra (tokenizers) is not installed")

from gpu_worker.engines.base import ArgsChunk, CallStart, EngineEvent, Finished, TextChunk, ToolCallCounts
from gpu_worker.engines.constrained import CALL_SYNTAX, call_program
from gpu_worker.engines.model_output import ModelOutput
from gpu_worker.engines.model_plan import ModelPlan, TokenTable
from gpu_worker.wire.model import ModelDescription
from gpu_worker.wire.tokenizer import HfTokenizer

IM_END, ENDOFTEXT = 2, 0
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city"],
}
EVERYTHING = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"},
        "ratio": {"type": "number"},
        "exact": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "scores": {"type": "array", "items": {"type": "number"}, "minItems": 2},
        "where": {
            "type": "object",
            "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
            "required": ["lat", "lon"],
        },
        "note": {"type": ["string", "null"]},
        "mode": {"const": "fast"},
        "nothing": {"type": "null"},
        "anything": {},
        "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "empty": {"type": "object"},
        "last": {"type": "integer"},
    },
}


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_json: str) -> HfTokenizer:
    return HfTokenizer(smollm2_tokenizer_json)


@pytest.fixture(scope="module")
def table(tokenizer: HfTokenizer) -> TokenTable:
    return TokenTable(tokenizer, 49152, range(17))


@pytest.fixture(scope="module")
def description(smollm2_tokenizer_json: str) -> ModelDescription:
    return ModelDescription(
        names=("smollm2",),
        engine="torch",
        tokenizer_kind="hf",
        tokenizer_json=smollm2_tokenizer_json,
        chat_format="chatml",
        tool_call_format="hermes",
        vocab_size=49152,
        context_length=8192,
        stop_token_ids=(IM_END, ENDOFTEXT),
    )


def _free(description: ModelDescription, tokenizer: HfTokenizer, limit: int) -> ModelPlan:
    return ModelPlan(ModelOutput(description, tokenizer), limit)


def _run(plan: ModelPlan, ids: list[int]) -> list[EngineEvent]:
    events = list(plan.start().events)
    for token in ids:
        advance = plan.sampled(token)
        events += advance.events
        if advance.done:
            break
    return [*events, plan.finish()]


def _text(events: list[EngineEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextChunk))


def _arguments(events: list[EngineEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ArgsChunk))


def _finished(events: list[EngineEvent]) -> Finished:
    assert isinstance(events[-1], Finished)
    return events[-1]


# ------------------------------------------------------------------------------------- free output
def test_free_output_stops_at_a_stop_id_which_it_keeps(
    description: ModelDescription, tokenizer: HfTokenizer
) -> None:
    ids = [*tokenizer.encode("The capital of France is Paris."), IM_END]
    events = _run(_free(description, tokenizer, 50), [*ids, 7, 8])
    assert _text(events) == "The capital of France is Paris."
    assert _finished(events) == Finished("stop", tuple(ids))  # exactly the sampled ids, stop included


def test_free_output_is_cut_at_the_limit(description: ModelDescription, tokenizer: HfTokenizer) -> None:
    ids = tokenizer.encode("one two three four five six")
    events = _run(_free(description, tokenizer, 4), ids)
    assert _finished(events) == Finished("length", tuple(ids[:4]))
    assert _text(events) == tokenizer.decode(ids[:4])


def test_a_stop_ends_free_text_with_the_ids_so_far(
    description: ModelDescription, tokenizer: HfTokenizer
) -> None:
    plan = _free(description, tokenizer, 50)
    ids = tokenizer.encode("Paris is the capital")
    events = [e for token in ids for e in plan.sampled(token).events]
    assert plan.stoppable
    events += plan.stop()
    assert not plan.stoppable
    assert _text(events) == "Paris is the capital"
    assert plan.finish() == Finished("length", tuple(ids))  # cut as at a limit, no stop id


# ------------------------------------------------------------------------------------- forced calls
def _forced(
    description: ModelDescription,
    tokenizer: HfTokenizer,
    table: TokenTable,
    tools: dict[str, Any],
    fmt: str = "hermes",
    limit: int = 2000,
) -> ModelPlan:
    output = ModelOutput(replace(description, tool_call_format=fmt), tokenizer, tool_names=list(tools))
    return ModelPlan(output, limit, program=call_program(CALL_SYNTAX[fmt], tools), table=table, end_id=IM_END)


def _random_model(plan: ModelPlan, table: TokenTable, rng: random.Random) -> list[EngineEvent]:
    """Drive the plan like a model that picks any allowed id (preferring the few explicit ones, so that
    strings and numbers end before their caps now and then)."""
    advance = plan.start()
    events = list(advance.events)
    while not advance.done:
        constraint = plan.constraint()
        assert constraint is not None
        pool = list(constraint.ids) if constraint.ids and rng.random() < 0.3 else []
        if not pool:
            pool = [*constraint.ids, *(i for name in constraint.classes for i in table.classes[name])]
        advance = plan.sampled(rng.choice(pool))
        events += advance.events
    return [*events, plan.finish()]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rng=st.randoms(use_true_random=False))
def test_a_forced_call_is_valid_for_its_schema_whatever_the_model_picks(
    description: ModelDescription, tokenizer: HfTokenizer, table: TokenTable, rng: random.Random
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    events = _random_model(_forced(description, tokenizer, table, {"report": EVERYTHING}), table, rng)
    arguments = json.loads(_arguments(events))
    jsonschema.validate(arguments, EVERYTHING)
    assert list(arguments) == list(EVERYTHING["properties"])  # no `required`: every property, in order
    finished = _finished(events)
    assert finished.finish_reason == "tool_call"
    assert finished.tool_calls == ToolCallCounts(calls=1)
    assert finished.output_ids[-1] == IM_END
    rendered = tokenizer.decode(finished.output_ids)
    assert rendered.startswith('<tool_call>\n{"name": "report", "arguments": {')
    assert rendered.endswith("}}\n</tool_call><|im_end|>")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rng=st.randoms(use_true_random=False))
def test_tool_choice_required_lets_the_model_pick_the_tool(
    description: ModelDescription, tokenizer: HfTokenizer, table: TokenTable, rng: random.Random
) -> None:
    tools = {"get_weather": WEATHER, "get_time": {"type": "object", "properties": {}}, "get_wind": WEATHER}
    events = _random_model(_forced(description, tokenizer, table, tools), table, rng)
    (start,) = [e for e in events if isinstance(e, CallStart)]
    assert start.name in tools
    arguments = json.loads(_arguments(events))
    assert set(arguments) == set(tools[start.name].get("required", []))


def test_a_llama3_json_call_has_its_shape(
    description: ModelDescription, tokenizer: HfTokenizer, table: TokenTable
) -> None:
    events = _random_model(
        _forced(description, tokenizer, table, {"get_weather": WEATHER}, "llama3_json"),
        table,
        random.Random(3),
    )
    assert [e.name for e in events if isinstance(e, CallStart)] == ["get_weather"]
    assert set(json.loads(_arguments(events))) == {"city"}
    assert tokenizer.decode(_finished(events).output_ids).startswith(
        '{"name": "get_weather", "parameters": {'
    )


def test_a_forced_call_without_arguments_needs_no_sample(
    description: ModelDescription, tokenizer: HfTokenizer, table: TokenTable
) -> None:
    plan = _forced(description, tokenizer, table, {"now": {"type": "object"}})
    assert not plan.stoppable  # a forced output is a call: a stop never cuts it
    advance = plan.start()
    assert advance.done
    assert tokenizer.decode(plan.finish().output_ids) == (
        '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call><|im_end|>'
    )


def test_a_forced_call_longer_than_the_limit_is_cut(
    description: ModelDescription, tokenizer: HfTokenizer, table: TokenTable
) -> None:
    events = _random_model(
        _forced(description, tokenizer, table, {"report": EVERYTHING}, limit=30), table, random.Random(1)
    )
    finished = _finished(events)
    assert finished.finish_reason == "length"
    assert finished.tool_calls == ToolCallCounts(malformed=1)
    assert len(finished.output_ids) == 30


def test_the_token_table_classes(tokenizer: HfTokenizer, table: TokenTable) -> None:
    assert table.can_constrain
    assert {table.texts[i] for i in table.classes["digits"]} == set("0123456789")
    assert "0" not in {table.texts[i] for i in table.classes["digits_nonzero"]}
    string = set(table.classes["string"])
    assert tokenizer.encode(" Paris")[0] in string
    assert not string & set(range(17))  # special tokens never stand inside a string
    assert all('"' not in table.texts[i] and "\\" not in table.texts[i] for i in string)
