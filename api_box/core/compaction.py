"""Compaction: `POST /v1/responses/compact`, the `compaction` items it returns, and compaction inside a
response (`context_management`). Pure.

The box has no summarising model, so compaction is deterministic and model-free: it keeps what a
continuation needs and drops the bulk of an agent's history: every user, system and developer message in
order, and the last assistant message; every function call and function call output is dropped (they are
what makes agent histories long). Inside a response (`compact_for_turn`) the last round of tool calls and
their outputs, which the model is working on, is kept too.

The compacted window goes back to the client as one item of type `compaction` whose `encrypted_content`
is opaque: the kept items (JSON, zlib-compressed), sealed with AES-256-GCM under a random 96-bit nonce,
with associated data binding the tenant and the format version, under a key derived from the box's
`compaction_key` setting (BLAKE2b under its own personalisation, so the setting is never the AEAD key
itself). Layout: base64url (no padding) of `TCP1` + nonce (12 bytes) + ciphertext and tag. Nothing in it is
readable, and only a box with the same key, answering the same tenant, can open it.

The client sends the item back as input: after `/compact`, as the base of a new chain (the Responses API
tells clients to use a compacted `output` as the next `input`); after a compaction inside a response,
appended to its history with the rest of that response's output. `expand` replaces the last compaction
item of an input by the items it holds and drops what comes before it (the history it stands for). A
compaction item that does not open (another deployment's key, another tenant's, tampered, truncated) is an
invalid_value error naming it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from api_box.core.errors import InvalidValue, TooManyItems
from api_box.core.protocol import (
    ROLES,
    CreateRequest,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputItem,
    Limits,
    MessageItem,
)

KEY_BYTES = 32
NONCE_BYTES = 12
FORMAT_VERSION = 1
_MAGIC = b"TCP1"
_PERSON = b"tether-cmp-v1"
_MIN_BLOB = len(_MAGIC) + NONCE_BYTES + 16

Opener = Callable[[str], Sequence[InputItem]]


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


def parse_key(text: str) -> bytes:
    """The 32 bytes of a `compaction_key` setting: base64, standard or URL-safe, padding optional.
    ValueError for anything else."""
    raw = text.strip()
    try:
        padded = raw.replace("+", "-").replace("/", "_") + "=" * (-len(raw) % 4)
        key = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the compaction key must be base64 of 32 bytes") from None
    if len(key) != KEY_BYTES:
        raise ValueError("the compaction key must be base64 of 32 bytes")
    return key


def aead_key(secret: bytes) -> bytes:
    """The AES-256-GCM key of compaction items under the box's configured secret."""
    return hashlib.blake2b(b"compaction", key=secret, digest_size=KEY_BYTES, person=_PERSON).digest()


def _associated_data(tenant: str) -> bytes:
    return b"\0".join([_MAGIC, tenant.encode("utf-8", "surrogatepass"), str(FORMAT_VERSION).encode()])


def seal_items(items: Sequence[InputItem], *, tenant: str, key: bytes, nonce: bytes) -> str:
    """The `encrypted_content` of a compaction item holding `items` (`key`: from `aead_key`; `nonce`: 12
    fresh random bytes, never reused under a key)."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError("the nonce must be 12 bytes")
    body = orjson.dumps({"v": FORMAT_VERSION, "items": [_packed(item) for item in items]})
    sealed = AESGCM(key).encrypt(nonce, zlib.compress(body), _associated_data(tenant))
    return base64.urlsafe_b64encode(_MAGIC + nonce + sealed).rstrip(b"=").decode()


def open_items(content: str, *, tenant: str, key: bytes, max_bytes: int) -> tuple[InputItem, ...]:
    """The messages sealed in a compaction item's `encrypted_content`; ValueError when it is not this
    tenant's under this key, is damaged, or would inflate past `max_bytes`."""
    try:
        blob = base64.b64decode(content + "=" * (-len(content) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if len(blob) < _MIN_BLOB or blob[: len(_MAGIC)] != _MAGIC:
        raise ValueError("not a compaction item of this format")
    nonce, sealed = blob[len(_MAGIC) : len(_MAGIC) + NONCE_BYTES], blob[len(_MAGIC) + NONCE_BYTES :]
    try:
        packed = AESGCM(key).decrypt(nonce, sealed, _associated_data(tenant))
    except InvalidTag:
        raise ValueError("does not authenticate (another deployment's or tenant's, or altered)") from None
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(packed, max_bytes)
    except zlib.error:
        raise ValueError("damaged") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError(f"holds more than {max_bytes} bytes")
    return _messages(orjson.loads(body))


def _packed(item: InputItem) -> list[str | None]:
    if isinstance(item, MessageItem):
        return ["message", item.role, item.text]
    if isinstance(item, FunctionCallItem):
        return ["function_call", item.call_id, item.name, item.arguments, item.namespace, item.kind]
    return ["function_call_output", item.call_id, item.output, item.kind]


def _messages(value: object) -> tuple[InputItem, ...]:
    if (
        not isinstance(value, dict)
        or value.get("v") != FORMAT_VERSION
        or not isinstance(value.get("items"), list)
    ):
        raise ValueError("unknown content")
    return tuple(_unpacked(entry) for entry in value["items"])


def _unpacked(entry: object) -> InputItem:
    match entry:
        case ["message", str(role), str(text)] if role in ROLES:
            return MessageItem(role, text)
        case [
            "function_call",
            str(call_id),
            str(name),
            str(arguments),
            namespace,
            "function" | "custom" as kind,
        ]:
            if namespace is None or isinstance(namespace, str):
                return FunctionCallItem(call_id, name, arguments, namespace=namespace, kind=kind)
        case ["function_call_output", str(call_id), str(output), "function" | "custom" as kind]:
            return FunctionCallOutputItem(call_id, output, kind=kind)
    raise ValueError("unknown content")


def compact_for_turn(items: Sequence[InputItem]) -> list[InputItem]:
    """Compaction inside a response (context_management): the last round of tool calls and their outputs,
    which the model is working on, is kept as it is; everything before it is compacted (compact_items)."""
    start = len(items)
    while start > 0 and isinstance(items[start - 1], FunctionCallOutputItem):
        start -= 1
    while start > 0 and isinstance(items[start - 1], FunctionCallItem):
        start -= 1
    if start == len(items) or not isinstance(items[start], FunctionCallItem):
        start = len(items)  # the input does not end with a round of tool calls
    return [*compact_items(items[:start]), *items[start:]]


def expand(create: CreateRequest, opener: Opener, limits: Limits) -> CreateRequest:
    """`create` with its last compaction item replaced by the items it holds and the items before it
    dropped (it stands for them: a client that keeps its whole history and appends a response's output
    sends them too). InvalidValue names an item that does not open (every one is checked); TooManyItems
    when the expanded input is over the limit."""
    if not create.compactions:
        return create
    windows = []
    for ref in create.compactions:
        try:
            windows.append(opener(ref.encrypted_content))
        except ValueError as exc:
            raise InvalidValue(
                f"'{ref.param}.encrypted_content' is not a compaction item made for you here: {exc}.",
                param=f"{ref.param}.encrypted_content",
            ) from None
    last = create.compactions[-1]
    items = [*windows[-1], *create.input[last.index :]]
    if len(items) > limits.max_items:
        raise TooManyItems(
            f"'input' holds more than {limits.max_items} items once its compaction items are expanded.",
            param="input",
        )
    return replace(create, input=tuple(items), compactions=())
