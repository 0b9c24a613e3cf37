"""`POST /v1/responses/compact`: a deterministic, model-free compaction of an item list.

The box has no summarising model, so compaction keeps what a continuation needs and drops the bulk of an
agent's history: every user, system and developer message in order, and the last assistant message; every
function call and function call output is dropped (they are what makes agent histories long). The output
is plain message items, so it can be sent as the `input` of a new chain as-is, without
`previous_response_id`, as the Responses API tells clients to use a compacted `output`.
"""

from __future__ import annotations

from collections.abc import Sequence

from api_box.core.protocol import InputItem, MessageItem


def compact_items(items: Sequence[InputItem]) -> list[MessageItem]:
    """The compacted items (see the module docstring)."""
    last_assistant = max(
        (i for i, item in enumerate(items) if isinstance(item, MessageItem) and item.role == "assistant"),
        default=-1,
    )
    return [
        item
        for i, item in enumerate(items)
        if isinstance(item, MessageItem) and (item.role != "assistant" or i == last_assistant)
    ]
