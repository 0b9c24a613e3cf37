"""The store:false handoff across a drain, sealed under a key only the client holds. Pure.

A client that wants its store:false chain to survive a drain sends `X-Tether-Handoff-Key: <base64url of 32
random bytes, no padding>` when it connects (the openai SDK sends the same extra headers again on every
automatic reconnect). `parse_handoff_key` accepts exactly that (anything else is InvalidValue, HTTP 400
before the upgrade) and `derive` turns it into two unrelated values with keyed BLAKE2b under distinct
personalisations: the Redis slot id (16 bytes, hex) and the AES-256-GCM key. The slot id reveals nothing
about the AEAD key, and the client key itself is never kept, logged or written.

On drain the box `seal`s the connection's last response: the chain snapshot of api_box/core/handoff.py
(the one versioned format, `ChainSnapshot.to_bytes`), encrypted with AES-256-GCM under a random 96-bit
nonce, with associated data binding the tenant, the slot and the format version. Sealed layout:
`TSH1` + nonce (12 bytes) + ciphertext and tag. `open_sealed` reverses it; a wrong key, another tenant's
slot, a tampered or truncated blob all raise ValueError (the connection then starts empty).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from api_box.core.errors import InvalidValue
from api_box.core.handoff import (
    FORMAT_VERSION,
    ChainSnapshot,
    record_from_snapshot,
    snapshot_from_turns,
    turn_record,
)
from api_box.core.store import ResponseRecord

HANDOFF_KEY_HEADER = "X-Tether-Handoff-Key"
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_CHARS = 43  # base64url of 32 bytes, no padding
_MAGIC = b"TSH1"
_SLOT_PERSON = b"tether-slot-v1"
_AEAD_PERSON = b"tether-aead-v1"
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True, slots=True)
class HandoffKey:
    """What the box keeps of a client's handoff key: the slot id and the AEAD key (never printed)."""

    slot: str
    aead_key: bytes = field(repr=False)


def parse_handoff_key(raw: str) -> bytes:
    """The 32 key bytes of an `X-Tether-Handoff-Key` value; InvalidValue for anything else."""
    text = raw.strip()
    if len(text) != _KEY_CHARS or not _ALPHABET.issuperset(text):
        raise _bad_key()
    try:
        key = base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError):
        raise _bad_key() from None
    if len(key) != KEY_BYTES or _encode(key) != text:  # the last character's unused bits must be 0
        raise _bad_key()
    return key


def _encode(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode()


def _bad_key() -> InvalidValue:
    return InvalidValue(
        f"{HANDOFF_KEY_HEADER} must be the base64url encoding (no padding) of exactly {KEY_BYTES} bytes.",
        param=HANDOFF_KEY_HEADER,
    )


def derive(key: bytes) -> HandoffKey:
    """The slot id and the AEAD key of a client key (two keyed BLAKE2b, distinct personalisations)."""
    slot = hashlib.blake2b(b"slot", key=key, digest_size=16, person=_SLOT_PERSON).hexdigest()
    aead_key = hashlib.blake2b(b"aead", key=key, digest_size=32, person=_AEAD_PERSON).digest()
    return HandoffKey(slot, aead_key)


def _associated_data(tenant: str, slot: str) -> bytes:
    return b"\0".join([_MAGIC, tenant.encode(), slot.encode(), str(FORMAT_VERSION).encode()])


def snapshot_of(record: ResponseRecord) -> ChainSnapshot:
    """The chain snapshot of a live response (the whole chain up to it)."""
    whole = turn_record(record, base=None, previous_response_id=None, start=0, created_at=0.0)
    return snapshot_from_turns([whole])


def seal(record: ResponseRecord, key: HandoffKey, *, nonce: bytes) -> bytes:
    """The sealed snapshot of `record` (`nonce`: 12 fresh random bytes, never reused under a key)."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError("the nonce must be 12 bytes")
    plain = snapshot_of(record).to_bytes()
    sealed = AESGCM(key.aead_key).encrypt(nonce, plain, _associated_data(record.tenant, key.slot))
    return _MAGIC + nonce + sealed


def open_sealed(blob: bytes, key: HandoffKey, tenant: str) -> ResponseRecord:
    """The store:false record sealed in `blob`; ValueError when it is not ours to open (wrong key or
    tenant, tampered, truncated, another format)."""
    if blob[:4] != _MAGIC or len(blob) < 4 + NONCE_BYTES + 16:
        raise ValueError("not a sealed handoff of this format")
    nonce, sealed = blob[4 : 4 + NONCE_BYTES], blob[4 + NONCE_BYTES :]
    try:
        plain = AESGCM(key.aead_key).decrypt(nonce, sealed, _associated_data(tenant, key.slot))
    except InvalidTag:
        raise ValueError("the sealed handoff does not authenticate") from None
    snapshot = ChainSnapshot.from_bytes(plain)
    if snapshot.tenant != tenant:
        raise ValueError("the sealed handoff belongs to another tenant")
    return record_from_snapshot(snapshot, store=False)
