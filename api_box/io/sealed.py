"""The store:false handoff across a drain (the pure part and the format: api_box/core/sealed.py).

- `seal` runs in a WebSocket's drain close (api_box/io/ws.py), after its turns are flushed and before the
  1012 close frame: the connection's last store:false response, sealed under the client's key, is SET
  in Redis with a short TTL (`sealed_handoff_ttl_seconds`). A chain over `sealed_handoff_max_bytes`, or a
  failed write, is skipped with a log line (the client then resends its context, as without the feature).
- `take` runs once per connection that sent a handoff key, when it opens, before its first frame is read:
  GETDEL (one use), open, and return the record to install as the connection-local response. Absent,
  expired, not authentic (wrong key, wrong tenant) or Redis down: None, and the connection starts empty.

Every outcome is counted in tether_box_sealed_handoffs_total{result}. The client key is never logged.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Protocol

from api_box.core.sealed import NONCE_BYTES, HandoffKey, open_sealed, seal
from api_box.core.store import ResponseRecord
from api_box.io.metrics import BoxMetrics

_LOG = logging.getLogger("api_box.sealed")
_SEAL_OVERHEAD = 4096  # header, call ids and AEAD framing, roughly, on top of 4 bytes a token


class SealedSlots(Protocol):
    """Where sealed handoffs are kept (api_box/io/redis_store.py `RedisColdStore`)."""

    async def put_sealed(self, tenant: str, slot: str, blob: bytes, ttl_seconds: float) -> None:
        """Keep `blob` under the slot for `ttl_seconds`."""
        ...

    async def take_sealed(self, tenant: str, slot: str) -> bytes | None:
        """Remove and return the blob under the slot (None when there is none)."""
        ...


class SealedHandoffs:
    """Seal on drain, take at connect; a no-op without a store (`slots` None: the feature is off)."""

    def __init__(
        self, slots: SealedSlots | None, *, metrics: BoxMetrics, ttl_seconds: float, max_bytes: int
    ) -> None:
        self._slots = slots
        self._metrics = metrics
        self._ttl = ttl_seconds
        self._max_bytes = max_bytes

    @property
    def enabled(self) -> bool:
        """Whether sealed handoffs are written and read at all."""
        return self._slots is not None

    async def seal(self, tenant: str, key: HandoffKey, record: ResponseRecord) -> bool:
        """Seal and store a store:false response for the client's next connection; whether it was stored
        (not when over the size bound or when the store fails; never raises)."""
        if self._slots is None or record.store:
            return False
        if 4 * record.ref.length + _SEAL_OVERHEAD > self._max_bytes:
            _LOG.warning("sealed handoff skipped: chain of %d tokens over the size bound", record.ref.length)
            self._count("skipped")
            return False
        try:
            blob = seal(record, key, nonce=secrets.token_bytes(NONCE_BYTES))
            await self._slots.put_sealed(tenant, key.slot, blob, self._ttl)
        except Exception as exc:
            _LOG.warning("sealed handoff skipped: the write failed (%s)", type(exc).__name__)
            self._count("skipped")
            return False
        self._count("sealed")
        return True

    async def take(self, tenant: str, key: HandoffKey) -> ResponseRecord | None:
        """The sealed response left for this key by a drained box, or None (never raises)."""
        if self._slots is None:
            return None
        try:
            blob = await self._slots.take_sealed(tenant, key.slot)
        except Exception as exc:
            _LOG.warning("sealed handoff not read: the store failed (%s)", type(exc).__name__)
            self._count("missing")
            return None
        if blob is None:
            self._count("missing")
            return None
        try:
            record = open_sealed(blob, key, tenant)
        except ValueError as exc:
            _LOG.info("sealed handoff rejected: %s", exc)
            self._count("rejected")
            return None
        self._count("restored")
        return record

    def for_key(self, key: HandoffKey | None) -> KeyedHandoff | None:
        """What one connection uses: these handoffs bound to its client's key (None without a key, or
        when the feature is off)."""
        return KeyedHandoff(self, key) if key is not None and self.enabled else None

    def _count(self, result: str) -> None:
        self._metrics.sealed_handoffs.labels(result).inc()


@dataclass(frozen=True, slots=True)
class KeyedHandoff:
    """The sealed handoff of one WebSocket connection (api_box/io/ws.py)."""

    handoffs: SealedHandoffs
    key: HandoffKey

    async def seal(self, tenant: str, record: ResponseRecord) -> bool:
        """Seal the connection's last response for the client's next connection (see SealedHandoffs)."""
        return await self.handoffs.seal(tenant, self.key, record)

    async def take(self, tenant: str) -> ResponseRecord | None:
        """The response a drained box left for this key, or None (see SealedHandoffs)."""
        return await self.handoffs.take(tenant, self.key)
