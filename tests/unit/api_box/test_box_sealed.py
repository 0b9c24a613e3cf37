"""The sealed store:false handoff (api_box/core/sealed.py): key parsing, derivation, seal and open."""

from __future__ import annotations

import base64
import os

import pytest

from api_box.core.chain import HeaderCache, begin_turn, commit_turn
from api_box.core.errors import InvalidValue
from api_box.core.protocol import MessageItem
from api_box.core.sealed import (
    HANDOFF_KEY_HEADER,
    HandoffKey,
    derive,
    open_sealed,
    parse_handoff_key,
    seal,
)
from api_box.core.store import ResponseRecord
from gpu_worker.wire import chat
from gpu_worker.wire.chain import digest_of

HEADER = HeaderCache().header("sys", ())
NONCE = b"\x07" * 12


def encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def live_record(tenant: str = "alpha", text: str = "secret plans") -> ResponseRecord:
    turn = begin_turn(None, HEADER, (MessageItem("user", text),), new_cache_key="ck_1", max_tokens=10**6)
    output = chat.render_message("assistant", "ok")
    chain = [*turn.chain.tokens, *output]
    ref = commit_turn(turn, output, [], worker_len=len(chain), worker_digest=digest_of(chain))
    return ResponseRecord(tenant, "resp_1", ref, store=False)


def test_a_good_key_parses_to_its_32_bytes() -> None:
    raw = os.urandom(32)
    assert parse_handoff_key(encoded(raw)) == raw
    assert parse_handoff_key(encoded(b"\xff" * 32)) == b"\xff" * 32  # '-' and '_' of the url alphabet


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(encoded(os.urandom(31)), id="short"),
        pytest.param(encoded(os.urandom(33)), id="long"),
        pytest.param(encoded(os.urandom(32)) + "=", id="padded"),
        pytest.param(base64.b64encode(b"\xff" * 32).rstrip(b"=").decode(), id="standard-alphabet"),
        pytest.param("!" * 43, id="bad-alphabet"),
        pytest.param(encoded(b"\x00" * 32)[:-1] + "B", id="non-canonical-last-char"),
        pytest.param("", id="empty"),
    ],
)
def test_a_malformed_key_is_an_invalid_value_naming_the_header(value: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_handoff_key(value)
    assert caught.value.status == 400
    assert caught.value.param == HANDOFF_KEY_HEADER
    assert value not in caught.value.message or not value


def test_the_slot_is_stable_for_a_key_and_reveals_nothing_of_the_key_material() -> None:
    raw = os.urandom(32)
    first, again, other = derive(raw), derive(raw), derive(os.urandom(32))
    assert first == again
    assert first.slot != other.slot
    assert len(first.slot) == 32
    assert bytes.fromhex(first.slot)
    assert raw.hex() not in first.slot
    assert first.slot not in first.aead_key.hex()
    assert first.aead_key not in (raw, bytes.fromhex(first.slot))
    assert raw.hex() not in repr(first)
    assert first.aead_key.hex() not in repr(first)


def test_seal_then_open_round_trips_a_store_false_chain() -> None:
    record, key = live_record(), derive(os.urandom(32))
    blob = seal(record, key, nonce=NONCE)
    opened = open_sealed(blob, key, "alpha")
    assert opened.store is False
    assert opened.response_id == "resp_1"
    assert opened.ref.chain.cache_key == "ck_1"
    assert list(opened.ref.chain.tokens) == list(record.ref.chain.tokens[: record.ref.length])
    assert b"secret plans" not in blob
    # The opened record is one a turn continues from in place.
    assert not begin_turn(opened.ref, HEADER, (MessageItem("user", "more"),), new_cache_key="ck_2",
                          max_tokens=10**6).fresh  # fmt: skip


@pytest.mark.parametrize("at", [0, 5, 20, -1])
def test_a_tampered_blob_is_rejected(at: int) -> None:
    key = derive(os.urandom(32))
    blob = bytearray(seal(live_record(), key, nonce=NONCE))
    blob[at] ^= 0x01
    with pytest.raises(ValueError):  # noqa: PT011 - any tampering is one error: not authentic
        open_sealed(bytes(blob), key, "alpha")


def test_a_truncated_blob_is_rejected() -> None:
    key = derive(os.urandom(32))
    with pytest.raises(ValueError, match="not a sealed handoff"):
        open_sealed(seal(live_record(), key, nonce=NONCE)[:20], key, "alpha")


def test_the_wrong_key_is_rejected() -> None:
    key = derive(os.urandom(32))
    blob = seal(live_record(), key, nonce=NONCE)
    with pytest.raises(ValueError, match="does not authenticate"):
        open_sealed(blob, derive(os.urandom(32)), "alpha")
    with pytest.raises(ValueError, match="does not authenticate"):  # right AEAD key, another slot
        open_sealed(blob, HandoffKey("0" * 32, key.aead_key), "alpha")


def test_another_tenant_is_rejected_by_the_associated_data() -> None:
    key = derive(os.urandom(32))
    blob = seal(live_record(tenant="alpha"), key, nonce=NONCE)
    with pytest.raises(ValueError, match="does not authenticate"):
        open_sealed(blob, key, "beta")


def test_the_nonce_must_be_96_bits() -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        seal(live_record(), derive(os.urandom(32)), nonce=b"short")
