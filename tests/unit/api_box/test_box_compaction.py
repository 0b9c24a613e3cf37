"""Model-free compaction keeps the messages a continuation needs and drops tool traffic."""

from __future__ import annotations

from api_box.core.compaction import compact_items
from api_box.core.protocol import FunctionCallItem, FunctionCallOutputItem, MessageItem


def test_keeps_user_system_messages_and_the_last_assistant_message() -> None:
    items = [
        MessageItem("system", "rules"),
        MessageItem("user", "do it"),
        MessageItem("assistant", "first"),
        FunctionCallItem("c1", "f", "{}"),
        FunctionCallOutputItem("c1", "x" * 1000),
        MessageItem("assistant", "last"),
        MessageItem("user", "and now?"),
    ]
    assert compact_items(items) == [
        MessageItem("system", "rules"),
        MessageItem("user", "do it"),
        MessageItem("assistant", "last"),
        MessageItem("user", "and now?"),
    ]
    assert compact_items([]) == []
