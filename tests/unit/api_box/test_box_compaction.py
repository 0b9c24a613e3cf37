"""Model-free compaction keeps the messages a continuation needs and drops tool traffic; the compacted
window is sealed for its tenant and expanded back in place; images become a counted placeholder."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from api_box.core import errors
from api_box.core.compaction import (
    aead_key,
    compact_for_turn,
    compact_items,
    expand,
    open_items,
    parse_key,
    seal_items,
)
from api_box.core.protocol import (
    IMAGE_PLACEHOLDER,
    CompactionRef,
    FunctionCallItem,
    FunctionCallOutputItem,
    Limits,
    MessageItem,
    parse_create,
)


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


KEY = aead_key(b"k" * 32)
NONCE = b"n" * 12
WINDOW = [
    MessageItem("system", "rules"),
    MessageItem("user", "the secret plan"),
    MessageItem("assistant", "ok"),
]


def test_a_sealed_window_opens_for_its_tenant_only_and_shows_nothing() -> None:
    content = seal_items(WINDOW, tenant="alpha", key=KEY, nonce=NONCE)
    assert open_items(content, tenant="alpha", key=KEY, max_bytes=1 << 20) == tuple(WINDOW)
    raw = base64.urlsafe_b64decode(content + "=" * (-len(content) % 4))
    assert b"secret" not in raw
    assert b"rules" not in raw
    with pytest.raises(ValueError, match="authenticate"):
        open_items(content, tenant="beta", key=KEY, max_bytes=1 << 20)
    with pytest.raises(ValueError, match="authenticate"):
        open_items(content, tenant="alpha", key=aead_key(b"o" * 32), max_bytes=1 << 20)


@pytest.mark.parametrize(
    "damage",
    [
        lambda c: c[:-4],
        lambda c: c[:10],
        lambda c: c[:20] + ("A" if c[20] != "A" else "B") + c[21:],
        lambda c: "%%%" + c,
        lambda c: "",
    ],
)
def test_damaged_content_does_not_open(damage: Any) -> None:
    content = seal_items(WINDOW, tenant="alpha", key=KEY, nonce=NONCE)
    with pytest.raises(ValueError):  # noqa: PT011 - each damage has its own reason
        open_items(damage(content), tenant="alpha", key=KEY, max_bytes=1 << 20)


def test_the_inflated_size_is_bounded() -> None:
    big = [MessageItem("user", "x" * 100_000)]
    content = seal_items(big, tenant="alpha", key=KEY, nonce=NONCE)
    assert len(content) < 2_000
    with pytest.raises(ValueError, match="more than"):
        open_items(content, tenant="alpha", key=KEY, max_bytes=10_000)


def test_expand_puts_the_window_in_place_of_the_item_and_what_came_before_it() -> None:
    content = seal_items(WINDOW, tenant="alpha", key=KEY, nonce=NONCE)
    create = parse_create(
        orjson.dumps(
            {
                "model": "m",
                "input": [
                    {"role": "user", "content": "before"},
                    {"type": "compaction", "id": "cmp_1", "encrypted_content": content},
                    {"type": "reasoning", "summary": []},
                    {"role": "user", "content": "after"},
                ],
            }
        ),
        Limits(),
        websocket=False,
    )
    assert create.compactions == (CompactionRef(1, content, "input[1]"),)

    def opener(text: str) -> tuple[MessageItem, ...]:
        return open_items(text, tenant="alpha", key=KEY, max_bytes=1 << 20)

    expanded = expand(create, opener, Limits())
    # "before" is history the compaction item stands for (a client that appends a response's output to
    # its whole history sends it too); "after" is new.
    assert expanded.input == (*WINDOW, MessageItem("user", "after"))
    assert expanded.compactions == ()
    with pytest.raises(errors.TooManyItems):
        expand(create, opener, Limits(max_items=3))

    def stranger(text: str) -> tuple[MessageItem, ...]:
        return open_items(text, tenant="beta", key=KEY, max_bytes=1 << 20)

    with pytest.raises(errors.InvalidValue) as refused:
        expand(create, stranger, Limits())
    assert refused.value.param == "input[1].encrypted_content"


def test_the_compaction_key_setting_is_base64_of_32_bytes() -> None:
    key = bytes(range(32))
    assert parse_key(base64.b64encode(key).decode()) == key
    assert parse_key(base64.urlsafe_b64encode(key).decode().rstrip("=")) == key
    for bad in ("", "abc", base64.b64encode(b"short").decode(), "!" * 44):
        with pytest.raises(ValueError, match="32 bytes"):
            parse_key(bad)


def test_images_become_the_placeholder_and_are_counted() -> None:
    image = {"type": "input_image", "image_url": "data:image/png;base64,iVBOR", "detail": "low"}
    create = parse_create(
        orjson.dumps(
            {
                "model": "m",
                "input": [
                    {"role": "user", "content": [{"type": "input_text", "text": "What is it? "}, image]},
                    {"type": "function_call", "call_id": "c", "name": "shot", "arguments": "{}"},
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image", "file_id": "f"}],
                    },
                ],
            }
        ),
        Limits(),
        websocket=False,
    )
    assert create.input[0] == MessageItem("user", "What is it? " + IMAGE_PLACEHOLDER)
    assert create.input[2] == FunctionCallOutputItem("c", IMAGE_PLACEHOLDER)
    assert create.images_replaced == 2


def test_every_item_kind_round_trips_through_a_seal() -> None:
    items = [
        MessageItem("developer", "be brief"),
        FunctionCallItem("c1", "read", '{"path": "a"}', namespace="fs"),
        FunctionCallItem("c2", "apply_patch", "*** Begin Patch", kind="custom"),
        FunctionCallOutputItem("c1", "text"),
        FunctionCallOutputItem("c2", "done", kind="custom"),
    ]
    content = seal_items(items, tenant="alpha", key=KEY, nonce=NONCE)
    assert open_items(content, tenant="alpha", key=KEY, max_bytes=1 << 20) == tuple(items)


def test_compaction_inside_a_response_keeps_the_last_round_of_tool_calls() -> None:
    call = [FunctionCallItem("c1", "f", "{}"), FunctionCallOutputItem("c1", "x" * 100)]
    last = [
        FunctionCallItem("c2", "f", "{}"),
        FunctionCallItem("c3", "g", "{}"),
        FunctionCallOutputItem("c2", "y"),
        FunctionCallOutputItem("c3", "z"),
    ]
    items = [MessageItem("user", "fix it"), *call, *last]
    assert compact_for_turn(items) == [MessageItem("user", "fix it"), *last]
    # An input that ends with a message has no round in progress: everything is compacted.
    assert compact_for_turn([*items, MessageItem("user", "thanks")]) == [
        MessageItem("user", "fix it"),
        MessageItem("user", "thanks"),
    ]
    assert compact_for_turn([FunctionCallOutputItem("c1", "orphan")]) == []
