"""Render canonical conversations with a model's own Jinja chat template, as Hugging Face does.

The append-only renderers are proved against this: for each conversation, the chain built turn by turn
(header, then per turn `closing + items + generation_prompt` and the model's output ids) must equal the
template's rendering of the whole conversation, tokenized by the model's tokenizer with its added tokens
parsed. Workers run the same check on load (the result goes into their model description), tests run
it on the real SmolLM2 template and on reference templates of each format.

Needs `jinja2` (the torch extra and the test extra install it); imported lazily.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpu_worker.wire.chat.base import ChatItem, ChatTool, Message, Renderer, ToolCall, ToolOutput, tool_object

__all__ = ["Conversation", "Turn", "build_chain", "canonical_conversations", "render_template", "to_messages"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn: the client's new items, then what the model answered (text and/or calls)."""

    items: tuple[ChatItem, ...]
    answer: tuple[Message | ToolCall, ...]


@dataclass(frozen=True, slots=True)
class Conversation:
    name: str
    instructions: str | None
    tools: tuple[ChatTool, ...]
    turns: tuple[Turn, ...]


def to_messages(
    instructions: str | None, items: Sequence[ChatItem], *, calls_in_one_message: bool = True
) -> list[dict[str, Any]]:
    """The HF `messages` list of a conversation (instructions first as the system message)."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        if isinstance(item, Message):
            role = "system" if item.role == "developer" else item.role
            messages.append({"role": role, "content": item.text})
        elif isinstance(item, ToolCall):
            call = {"type": "function", "function": {"name": item.name, "arguments": _args(item.arguments)}}
            last = messages[-1] if messages else None
            if calls_in_one_message and last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        else:
            messages.append({"role": "tool", "content": item.output, "tool_call_id": item.call_id})
    return messages


def _args(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def render_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[ChatTool] = (),
    add_generation_prompt: bool = False,
    variables: Mapping[str, Any] | None = None,
) -> str:
    """The template's text for `messages`, rendered the way transformers' apply_chat_template does."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kw: Any) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kw)

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    tool_dicts = [tool_object(t) for t in tools]
    text: str = env.from_string(template).render(
        messages=list(messages),
        tools=tool_dicts or None,
        add_generation_prompt=add_generation_prompt,
        **(variables or {}),
    )
    return text


def build_chain(
    renderer: Renderer, conversation: Conversation, answer_ids: Any
) -> tuple[list[int], list[list[int]]]:
    """The chain a conversation builds turn by turn, and the prompt sent at each turn.

    `answer_ids(answer)` gives the ids the model sampled for a turn's answer (stop token included).
    """
    chain = renderer.header(conversation.instructions, conversation.tools)
    prompts: list[list[int]] = []
    for turn in conversation.turns:
        chain += renderer.closing(chain) + renderer.items(turn.items) + renderer.generation_prompt()
        prompts.append(list(chain))
        chain += answer_ids(turn.answer)
    chain += renderer.closing(chain)
    return chain, prompts


_WEATHER = ChatTool(
    "get_weather",
    "Current weather for a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
    },
)
_SEARCH = ChatTool(
    "search_files",
    "Search the repository for a pattern.",
    {"type": "object", "properties": {"pattern": {"type": "string"}}, "required": ["pattern"]},
)


def canonical_conversations(*, tools: bool) -> list[Conversation]:
    """The conversations every format is checked on (with tool calls only when `tools`)."""
    convs = [
        Conversation(
            "plain",
            None,
            (),
            (Turn((Message("user", "Hello there!"),), (Message("assistant", "Hi. How can I help?"),)),),
        ),
        Conversation(
            "system-developer-several-turns",
            "You are a terse assistant.",
            (),
            (
                Turn(
                    (Message("developer", "Answer in one line."), Message("user", "What is 2 + 2?")),
                    (Message("assistant", "4."),),
                ),
                Turn((Message("user", "And times 3, déjà vu? 日本"),), (Message("assistant", "12."),)),
                Turn((Message("user", "Thanks, bye"),), (Message("assistant", "Bye!"),)),
            ),
        ),
    ]
    if tools:
        convs += [
            Conversation(
                "tool-call-and-output",
                "You help with the weather.",
                (_WEATHER, _SEARCH),
                (
                    Turn(
                        (Message("user", "Weather in Paris?"),),
                        (ToolCall("call_1", "get_weather", '{"city":"Paris","unit":"c"}'),),
                    ),
                    Turn(
                        (ToolOutput("call_1", '{"temp": 21, "sky": "clear"}', "get_weather"),),
                        (Message("assistant", "It is 21 °C and clear in Paris."),),
                    ),
                    Turn(
                        (Message("user", "Find TODOs."),),
                        (ToolCall("call_2", "search_files", '{"pattern": "TODO"}'),),
                    ),
                    Turn(
                        (ToolOutput("call_2", "a.py:3: # TODO fix\nb.py:9: # TODO test", "search_files"),),
                        (Message("assistant", "Two TODOs: a.py:3 and b.py:9."),),
                    ),
                ),
            ),
            Conversation(
                "tools-no-instructions",
                None,
                (_WEATHER,),
                (
                    Turn(
                        (Message("user", "Weather in Oslo and Rome?"),),
                        (ToolCall("call_a", "get_weather", '{"city": "Oslo"}'),),
                    ),
                    Turn(
                        (ToolOutput("call_a", "-3 C", "get_weather"),),
                        (Message("assistant", "Oslo is at -3 C."),),
                    ),
                ),
            ),
        ]
    return convs
