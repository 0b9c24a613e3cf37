"""Connections parked after their socket dropped, for the client to resume within a grace window. Pure.

A WebSocket that ends without a close frame (its TCP connection was cut, its peer stopped answering) and
whose client sent a resume key (`X-Tether-Handoff-Key`, api_box/core/sealed.py) leaves its
connection-local responses here (`LocalCache`, api_box/core/session.py), keyed by (tenant, slot): the
slot is derived from the client's secret key, so only that client can name it. The client's next
connection with the same key, within `grace_seconds`, takes them back (once).

Bounds: at most `max_entries` parked connections and `max_bytes` bytes (a chain counted once per parked
connection, at its size when it was parked). Parking past a bound evicts the oldest parked connections
first; a connection larger than the whole byte budget is not parked. Parking a key that is already parked
replaces the older entry. Time is passed in (`now`); the shell expires entries with `expire(now)` at
`next_expiry`.

Nothing here is ever written anywhere: the shell keeps the lot in memory only, and every entry that leaves
it other than by `take` is handed back so that the shell can release its store:false chains on the
workers.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

from api_box.core.sealed import HandoffKey
from api_box.core.session import LocalCache

ParkingKey = tuple[str, str]  # (tenant, slot id of the client's resume key)


class Left(enum.Enum):
    """Why a parked connection left the lot without being resumed."""

    EXPIRED = "expired"  # the grace window passed
    EVICTED = "evicted"  # pushed out by a newer one over the count or byte bound
    REPLACED = "replaced"  # the same key parked again
    SKIPPED = "skipped"  # never parked: larger than the whole byte budget
    SHUTDOWN = "shutdown"  # the box stopped


@dataclass(frozen=True, slots=True)
class Parked:
    """One parked connection."""

    key: ParkingKey
    cache: LocalCache
    handoff: HandoffKey  # the client's derived key: a drain may seal `cache.latest` under it
    nbytes: int
    parked_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Departure:
    """A parked connection that left without being resumed, and why."""

    parked: Parked
    reason: Left


class ParkingLot:
    """Parked connections by key, oldest first; bounded by count and bytes; entries expire."""

    def __init__(self, *, grace_seconds: float, max_entries: int, max_bytes: int) -> None:
        if grace_seconds <= 0 or max_entries < 1 or max_bytes < 1:
            raise ValueError("grace_seconds, max_entries and max_bytes must be positive")
        self.grace_seconds = grace_seconds
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[ParkingKey, Parked] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes of every parked connection."""
        return self._bytes

    @property
    def next_expiry(self) -> float | None:
        """When the oldest entry expires (entries expire in the order they were parked)."""
        oldest = next(iter(self._entries.values()), None)
        return oldest.expires_at if oldest is not None else None

    def park(
        self, key: ParkingKey, cache: LocalCache, handoff: HandoffKey, now: float
    ) -> tuple[Parked | None, list[Departure]]:
        """Park `cache` under `key`: the entry (None when it was not parked) and what left to make room
        (a skipped entry is among them: its chains are the caller's to release)."""
        nbytes = cache.nbytes()
        parked = Parked(key, cache, handoff, nbytes, now, now + self.grace_seconds)
        if nbytes > self.max_bytes:
            return None, [Departure(parked, Left.SKIPPED)]
        gone: list[Departure] = []
        old = self._pop(key)
        if old is not None:
            gone.append(Departure(old, Left.REPLACED))
        while self._entries and (
            len(self._entries) >= self.max_entries or self._bytes + nbytes > self.max_bytes
        ):
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.nbytes
            gone.append(Departure(oldest, Left.EVICTED))
        self._entries[key] = parked
        self._bytes += nbytes
        return parked, gone

    def take(self, key: ParkingKey, now: float) -> Parked | None:
        """The entry parked under `key` (removed), or None when there is none or it expired (an expired
        one stays for `expire` to hand back)."""
        parked = self._entries.get(key)
        if parked is None or now >= parked.expires_at:
            return None
        return self._pop(key)

    def expire(self, now: float) -> list[Departure]:
        """Remove and return every entry whose grace window has passed."""
        gone: list[Departure] = []
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.expires_at > now:
                break
            self._pop(oldest.key)
            gone.append(Departure(oldest, Left.EXPIRED))
        return gone

    def clear(self) -> list[Departure]:
        """Remove every entry (the box stops)."""
        gone = [Departure(parked, Left.SHUTDOWN) for parked in self._entries.values()]
        self._entries.clear()
        self._bytes = 0
        return gone

    def entries(self) -> list[Parked]:
        """The parked connections, oldest first."""
        return list(self._entries.values())

    def _pop(self, key: ParkingKey) -> Parked | None:
        parked = self._entries.pop(key, None)
        if parked is not None:
            self._bytes -= parked.nbytes
        return parked
