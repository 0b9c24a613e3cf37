"""Output plans of the torch engine: what is force-fed, what is sampled, and the item's final ids."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_worker.core.agent import Answer, CallTool
from gpu_worker.engines.base import ArgsChunk, CallStart, Finished, TextChunk
from gpu_worker.engines.torch_output import (
    PLAIN_VOCAB,
    AnswerPlan,
    CallPlan,
    common_prefix,
    plan_for,
    split_arguments,
)
from gpu_worker.wire import tokenizer
from gpu_worker.wire.chat import render_function_call, render_message
from gpu_worker.wire.tokenizer import Special, encode

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
# The first example loads the tokenizer tables, and CI cores are shared: no per-example deadline.
no_deadline = settings(deadline=None)
plain_ids = st.integers(min_value=0, max_value=PLAIN_VOCAB - 1)


def _fill(segments: list[str | int], text: str) -> str:
    return "".join(s if isinstance(s, str) else json.dumps(text * s)[1:-1] for s in segments)


@no_deadline
@given(json_values, st.text(max_size=3))
def test_arguments_stay_valid_json_whatever_text_fills_the_holes(value: object, text: str) -> None:
    segments = split_arguments(json.dumps(value))
    assert isinstance(segments[0], str)
    assert isinstance(segments[-1], str)
    filled = json.loads(_fill(segments, text))
    assert type(filled) is type(value)
    if isinstance(value, dict):
        assert set(filled) == set(value)


def test_a_hole_is_as_long_in_tokens_as_the_policy_value() -> None:
    value = "find the file that has the error"
    assert split_arguments(json.dumps({"q": value, "n": 3})) == ['{"q": "', len(encode(value)), '", "n": 3}']


def test_arguments_that_are_not_json_stay_one_literal() -> None:
    assert split_arguments("{oops") == ["{oops"]


def _run(plan: AnswerPlan | CallPlan, tokens: list[int]) -> tuple[list[object], list[int]]:
    """Drive a plan as the engine does: the ids fed after the prompt and the events."""
    start = plan.start()
    events: list[object] = list(start.events)
    fed = list(start.feed)
    done = start.done
    it = iter(tokens)
    while not done:
        token = next(it)
        step = plan.sampled(token)
        events += step.events
        done = step.done
        if not done:
            fed += [token, *step.feed]
    return events, fed


@no_deadline
@given(st.lists(plain_ids, min_size=1, max_size=20))
def test_an_answer_renders_the_generated_text_as_an_assistant_message(tokens: list[int]) -> None:
    plan = AnswerPlan(tokens=len(tokens), limit=100)
    events, fed = _run(plan, tokens)
    finished = plan.finish()
    text = "".join(e.text for e in events if isinstance(e, TextChunk))
    assert text == tokenizer.decode(tokens)
    assert all(e.text for e in events if isinstance(e, TextChunk))
    assert list(finished.output_ids) == render_message("assistant", text)
    assert finished.finish_reason == "stop"
    assert fed == [Special.ASSISTANT, *tokens[:-1]]


def test_text_is_decoded_incrementally_across_a_split_character() -> None:
    # "é" alone is one token; as two byte tokens it must still stream as "é", once.
    byte_tokens = [tokenizer._encoding().encode_single_token(bytes([b])) for b in "é".encode()]
    plan = AnswerPlan(tokens=2, limit=100)
    events, _ = _run(plan, byte_tokens)
    assert events == [TextChunk(text="é", tokens=1)]


def test_an_answer_cut_by_max_output_tokens_ends_without_end_marker_like_the_sim() -> None:
    plan = plan_for(Answer(max_tokens=60), max_output_tokens=10)
    assert isinstance(plan, AnswerPlan)
    assert plan.tokens == 9
    _run(plan, [1729] * 9)
    finished = plan.finish()
    assert finished.finish_reason == "length"
    assert len(finished.output_ids) <= 10
    assert finished.output_ids[0] == Special.ASSISTANT
    assert Special.END not in finished.output_ids


@pytest.mark.parametrize(
    ("limit", "ids", "reason"),
    [(1, [Special.ASSISTANT], "length"), (2, [Special.ASSISTANT, Special.END], "stop")],
)
def test_an_empty_answer_samples_nothing(limit: int, ids: list[int], reason: str) -> None:
    plan = plan_for(Answer(max_tokens=0 if limit == 2 else 5), max_output_tokens=limit)
    assert plan.start().done
    assert list(plan.finish().output_ids) == ids
    assert plan.finish().finish_reason == reason


def test_a_call_longer_than_max_output_tokens_is_cut() -> None:
    plan = plan_for(CallTool(call_id="c", name="tick", arguments='{"n": 1}'), max_output_tokens=4)
    plan.start()
    finished = plan.finish()
    assert finished == Finished("length", tuple(render_function_call("tick", '{"n": 1}')[:4]))


@no_deadline
@given(st.lists(plain_ids, min_size=40, max_size=40))
def test_a_call_has_valid_json_arguments_made_of_sampled_text(tokens: list[int]) -> None:
    call = CallTool(
        call_id="call_1", name="search", arguments='{"query": "the file", "limit": 5, "deep": true}'
    )
    plan = CallPlan(call, limit=100)
    events, fed = _run(plan, tokens)
    finished = plan.finish()
    arguments = plan.arguments()
    parsed = json.loads(arguments)
    assert set(parsed) == {"query", "limit", "deep"}
    assert parsed["limit"] == 5
    hole = len(encode("the file"))
    assert parsed["query"] == tokenizer.decode(tokens[:hole])
    assert events[0] == CallStart(call_id="call_1", name="search")
    assert "".join(e.text for e in events if isinstance(e, ArgsChunk)) == arguments
    assert list(finished.output_ids) == render_function_call("search", arguments)
    assert finished.finish_reason == "tool_call"
    assert fed[: 2 + len(encode("search"))] == [Special.CALL, *encode("search"), Special.ARGS]
    assert len(fed) + 2 <= plan.fed_bound()  # the last sampled token and [END] are never fed


def test_a_call_without_string_values_is_all_forced() -> None:
    plan = CallPlan(CallTool(call_id="c", name="tick", arguments='{"n": 1}'), limit=100)
    start = plan.start()
    assert start.done
    assert list(start.feed) == render_function_call("tick", '{"n": 1}')
    assert plan.arguments() == '{"n": 1}'


@no_deadline
@given(st.lists(st.integers(0, 3), max_size=8), st.lists(st.integers(0, 3), max_size=8))
def test_common_prefix(a: list[int], b: list[int]) -> None:
    n = common_prefix(a, b)
    assert a[:n] == b[:n]
    assert n == min(len(a), len(b)) or a[n] != b[n]
