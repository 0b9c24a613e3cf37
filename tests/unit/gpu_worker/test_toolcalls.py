"""The streaming tool-call parsers (gpu_worker/core/toolcalls.py): any split of the text, same items."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_worker.core.toolcalls import (
    CallArgs,
    CallBegin,
    CallEnd,
    HermesParser,
    Llama3JsonParser,
    TextOut,
    parser_for,
)

pytestmark = pytest.mark.unit
TOOLS = ("get_weather", "search")


def _items(parser, pieces):
    """Collapse events into items: ("text", str) | ("call", name, args, valid)."""
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    events += parser.finish()
    items: list = []
    for event in events:
        if isinstance(event, TextOut):
            if items and items[-1][0] == "text":
                items[-1] = ("text", items[-1][1] + event.text)
            else:
                items.append(("text", event.text))
        elif isinstance(event, CallBegin):
            items.append(["call", event.name, "", None])
        elif isinstance(event, CallArgs):
            items[-1][2] += event.text
        else:
            assert isinstance(event, CallEnd)
            items[-1][3] = event.valid
            items[-1] = tuple(items[-1])
    return items


def _splits(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(text[last:p])
        last = p
    pieces.append(text[last:])
    return pieces


CALLS = (
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "note": "a } \\" {"}}'
    '\n</tool_call>\n<tool_call>\n{"name": "search", "arguments": {"pattern": "TODO"}}\n</tool_call>'
)


def test_hermes_text_then_two_calls() -> None:
    items = _items(HermesParser(TOOLS), [CALLS])
    assert items == [
        ("text", "Let me check."),
        ("call", "get_weather", '{"city": "Paris", "note": "a } \\" {"}', True),
        ("call", "search", '{"pattern": "TODO"}', True),
    ]
    assert json.loads(items[1][2]) == {"city": "Paris", "note": 'a } " {'}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_hermes_any_split_gives_the_same_items(cuts) -> None:
    whole = _items(HermesParser(TOOLS), [CALLS])
    assert _items(HermesParser(TOOLS), _splits(CALLS, cuts)) == whole


def test_hermes_arguments_stream_before_the_call_closes() -> None:
    parser = HermesParser(TOOLS)
    events = parser.feed('<tool_call>\n{"name": "search", "arguments": {"pattern": "TO')
    assert events[0] == CallBegin("search")
    assert "".join(e.text for e in events if isinstance(e, CallArgs)) == '{"pattern": "TO'


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>',  # not an offered tool
        "<tool_call>\nnot json at all\n</tool_call>",
        "Use <tool_call> tags like this.",
    ],
)
def test_hermes_blocks_that_are_not_calls_stay_text(text) -> None:
    parser = HermesParser(TOOLS)
    assert _items(parser, [text]) == [("text", text)]
    assert parser.stats.calls == 0
    assert parser.stats.rejected_blocks == 1


def test_hermes_call_cut_at_the_length_limit_is_malformed() -> None:
    parser = HermesParser(TOOLS)
    items = _items(parser, ['<tool_call>\n{"name": "search", "arguments": {"pattern": "TO'])
    assert items == [("call", "search", '{"pattern": "TO', False)]
    assert parser.stats.malformed_calls == 1


def test_hermes_plain_text_passes_through_with_its_whitespace() -> None:
    assert _items(HermesParser(TOOLS), ["Hello,\n", "world <b>", " ok\n"]) == [
        ("text", "Hello,\nworld <b> ok\n")
    ]


def test_llama3_json_call_and_text() -> None:
    call = '{"name": "get_weather", "parameters": {"city": "Oslo"}}'
    assert _items(Llama3JsonParser(TOOLS), _splits(call, [3, 17])) == [
        ("call", "get_weather", '{"city": "Oslo"}', True)
    ]
    assert _items(Llama3JsonParser(TOOLS), ["<|python_tag|>", call]) == [
        ("call", "get_weather", '{"city": "Oslo"}', True)
    ]
    assert _items(Llama3JsonParser(TOOLS), ["It is ", "sunny."]) == [("text", "It is sunny.")]
    bad = '{"name": "nope", "parameters": {}}'
    assert _items(Llama3JsonParser(TOOLS), [bad]) == [("text", bad)]


def test_parser_for_knows_the_formats() -> None:
    assert isinstance(parser_for("hermes", TOOLS), HermesParser)
    assert isinstance(parser_for("llama3_json", TOOLS), Llama3JsonParser)
    with pytest.raises(ValueError, match="tether"):
        parser_for("tether", TOOLS)
