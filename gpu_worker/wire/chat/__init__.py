"""Chat formats: how Responses items become a model's own token ids, one append-only renderer per format.

- `tether`: Tether's own markers on o200k ids (the `sim` engine and dummy weights).
- `chatml`: ChatML with Hermes-style tools (SmolLM2, Qwen, Hermes).
- `llama3`: Llama 3.x with JSON tool calls.

`renderer_for(description)` binds a model's format to its tokenizer (one per description fingerprint).
The functions re-exported from `tether` are the Tether format's item renderers, which the sim and the
tests use directly.
"""

from __future__ import annotations

from collections import OrderedDict

from gpu_worker.wire.chat.base import (
    ChatItem,
    ChatTool,
    Message,
    Renderer,
    SegmentBuilder,
    ToolCall,
    ToolOutput,
)
from gpu_worker.wire.chat.chatml import ChatMLRenderer
from gpu_worker.wire.chat.llama3 import Llama3Renderer
from gpu_worker.wire.chat.tether import (
    TetherRenderer,
    canonical_tools_json,
    render_function_call,
    render_function_call_output,
    render_instructions,
    render_message,
    render_tools,
)
from gpu_worker.wire.model import ModelDescription
from gpu_worker.wire.tokenizer import tokenizer_for

__all__ = [
    "ChatItem",
    "ChatMLRenderer",
    "ChatTool",
    "Llama3Renderer",
    "Message",
    "Renderer",
    "SegmentBuilder",
    "TetherRenderer",
    "ToolCall",
    "ToolOutput",
    "canonical_tools_json",
    "render_function_call",
    "render_function_call_output",
    "render_instructions",
    "render_message",
    "render_tools",
    "renderer_for",
]

_BUILT: OrderedDict[tuple[str, str, tuple[tuple[str, str], ...]], Renderer] = OrderedDict()
_MAX_BUILT = 8


def renderer_for(description: ModelDescription) -> Renderer:
    """The renderer of a model's chat format on its tokenizer (built once per description)."""
    key = (description.fingerprint, description.chat_format, tuple(sorted(description.chat_options.items())))
    found = _BUILT.get(key)
    if found is not None:
        _BUILT.move_to_end(key)
        return found
    tokenizer = tokenizer_for(description)
    renderer: Renderer
    if description.chat_format == "chatml":
        renderer = ChatMLRenderer(tokenizer, description.chat_options)
    elif description.chat_format == "llama3":
        renderer = Llama3Renderer(tokenizer, description.chat_options)
    else:
        renderer = TetherRenderer(tokenizer)
    _BUILT[key] = renderer
    while len(_BUILT) > _MAX_BUILT:
        _BUILT.popitem(last=False)
    return renderer
