"""Constrained decoding of a tool call: the steps that make the model write a call valid for its schema.

With `tool_choice` "required" or a named function, the torch engine does not let the model choose
whether to call: it writes the call for it, token by token, and lets the model fill in only what the
schema leaves open. A call is a program of steps (a Python generator, so arrays and optional commas
branch naturally), run by gpu_worker/engines/model_plan.py:

- `Text` / `Marker`: forced; the call syntax, keys, braces, `true`/`null` constants (a marker is the
  format's special token when the tokenizer has it, as the chat renderers write it);
- `StringBody`: a JSON string's characters, sampled from tokens that cannot break the string (no quote,
  backslash, control character or partial UTF-8), until the model samples the closing quote (or the
  length cap forces it);
- `Number`: digits (no leading zero), an optional minus, a fraction for `number`, ended by the model
  sampling the character that follows the value (`,` `}` `]`, given in `follows`);
- `Choice`: one of several JSON texts (an enum, a boolean, a tool name), token by token along a trie (an
  option whose ids are all a prefix of another option's cannot be chosen: enum [1, 10] yields 10; JSON
  strings end with their quote, so string options never hit this);
- `Branch`: one of a few single characters (an array's `,` or `]`).

Values by schema: `enum`/`const` -> Choice; string -> `"` StringBody; integer/number -> Number;
boolean -> Choice(true, false); null -> Text; object -> its `required` properties in the schema's
order (all properties when it lists none); array -> 1 to min(maxItems, 4) items; a union type or
`anyOf`/`oneOf` -> its first non-null alternative; anything else (no type, `$ref`) -> a string.

Call syntax per tool-call format (the shape the format's parser and renderer use):

    hermes       <tool_call>\\n{"name": NAME, "arguments": ARGS}\\n</tool_call>   then <|im_end|>
    llama3_json  {"name": NAME, "parameters": ARGS}                             then <|eot_id|>
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CALL_SYNTAX",
    "Branch",
    "CallSyntax",
    "Choice",
    "Marker",
    "Number",
    "Step",
    "StringBody",
    "Text",
    "call_program",
]

STRING_CAP_TOKENS = 48  # most tokens one string value gets (then the closing quote is forced)
NUMBER_CAP_TOKENS = 12
ARRAY_CAP_ITEMS = 4
DEPTH_CAP = 6


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Marker:
    marker: str  # a structural marker: its special id when the tokenizer has one, else its text


@dataclass(frozen=True, slots=True)
class StringBody:
    cap_tokens: int = STRING_CAP_TOKENS


@dataclass(frozen=True, slots=True)
class Number:
    integer: bool
    follows: tuple[str, ...]  # the characters that may end it; the program receives the one sampled


@dataclass(frozen=True, slots=True)
class Choice:
    options: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Branch:
    chars: tuple[str, ...]  # the program receives the one sampled


Step = Text | Marker | StringBody | Number | Choice | Branch
Program = Generator[Step, Any, None]
_Value = Generator[Step, Any, str | None]  # returns the follow character a Number consumed, if any


@dataclass(frozen=True, slots=True)
class CallSyntax:
    """How a tool-call format writes one call."""

    head: tuple[Step, ...]  # before the name
    arguments_key: str
    tail: tuple[Step, ...]  # after the arguments object
    end_tokens: tuple[str, ...]  # the end-of-turn token that closes the output, first one present


CALL_SYNTAX: dict[str, CallSyntax] = {
    "hermes": CallSyntax(
        head=(Marker("<tool_call>"), Text('\n{"name": ')),
        arguments_key="arguments",
        tail=(Text("}\n"), Marker("</tool_call>")),
        end_tokens=("<|im_end|>",),
    ),
    "llama3_json": CallSyntax(
        head=(Text('{"name": '),),
        arguments_key="parameters",
        tail=(Text("}"),),
        end_tokens=("<|eot_id|>", "<|eom_id|>"),
    ),
}


def call_program(syntax: CallSyntax, tools: Mapping[str, Mapping[str, Any]]) -> Program:
    """One call of one of `tools` (name -> parameters schema): name chosen by the model unless only one."""
    yield from syntax.head
    names = [json.dumps(name, ensure_ascii=False) for name in tools]
    if len(names) == 1:
        yield Text(names[0])
        name = next(iter(tools))
    else:
        index = yield Choice(tuple(names))
        name = list(tools)[index]
    yield Text(f', "{syntax.arguments_key}": ')
    yield from _object(tools[name], 0)
    yield from syntax.tail


def _kind(schema: Mapping[str, Any]) -> str:
    if "enum" in schema or "const" in schema:
        return "choice"
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return "union"
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return kind if kind in ("string", "integer", "number", "boolean", "null", "object", "array") else "string"


def _value(schema: Mapping[str, Any], follows: tuple[str, ...], depth: int) -> _Value:
    kind = _kind(schema)
    if kind == "union":
        options = schema.get("anyOf") or schema.get("oneOf") or []
        first = next((o for o in options if isinstance(o, dict) and o.get("type") != "null"), options[0])
        return (yield from _value(first if isinstance(first, dict) else {}, follows, depth))
    if kind == "choice":
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        texts = tuple(dict.fromkeys(json.dumps(v, ensure_ascii=False) for v in values))
        if len(texts) == 1:
            yield Text(texts[0])
        else:
            yield Choice(texts)
        return None
    if kind == "boolean":
        yield Choice(("true", "false"))
        return None
    if kind == "null":
        yield Text("null")
        return None
    if kind in ("integer", "number"):
        consumed: str = yield Number(integer=kind == "integer", follows=follows)
        return consumed
    if depth >= DEPTH_CAP:
        kind = "string"
    if kind == "object":
        return (yield from _object(schema, depth + 1))
    if kind == "array":
        return (yield from _array(schema, depth + 1))
    yield Text('"')
    yield StringBody()
    return None


def _properties(schema: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return []
    required = schema.get("required")
    names: Sequence[str] = list(properties)
    if isinstance(required, list) and required:
        names = [n for n in properties if n in required]
    return [(n, properties[n] if isinstance(properties[n], dict) else {}) for n in names]


def _object(schema: Mapping[str, Any], depth: int) -> _Value:
    """`{...}`: its own closing brace ends it, so it never hands a follow character back."""
    properties = _properties(schema)
    if not properties:
        yield Text("{}")
        return None
    consumed: str | None = None
    for i, (key, sub) in enumerate(properties):
        last = i == len(properties) - 1
        separator = "" if i == 0 else (" " if consumed == "," else ", ")
        yield Text(("{" if i == 0 else separator) + json.dumps(key, ensure_ascii=False) + ": ")
        consumed = yield from _value(sub, ("}",) if last else (",",), depth)
    if consumed != "}":
        yield Text("}")
    return None


def _array(schema: Mapping[str, Any], depth: int) -> _Value:
    items = schema.get("items")
    item = items if isinstance(items, dict) else {}
    low = max(1, int(schema.get("minItems", 1) or 1))
    high = max(low, min(int(schema.get("maxItems", ARRAY_CAP_ITEMS) or ARRAY_CAP_ITEMS), ARRAY_CAP_ITEMS))
    yield Text("[")
    count = 0
    while True:
        count += 1
        ends = tuple(c for c, ok in ((",", count < high), ("]", count >= low)) if ok)
        consumed = yield from _value(item, ends, depth)
        if consumed is None:
            consumed = (yield Branch(ends)) if len(ends) > 1 else ends[0]
            if len(ends) == 1:
                yield Text(consumed)
        if consumed == "]":
            return None
        yield Text(" ")
