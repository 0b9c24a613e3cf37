"""Resuming a dropped WebSocket on the same box (the pure part: api_box/core/parking.py).

- `attach` when a connection that sent a resume key opens: a live connection of this box with the same
  key (a socket the box has not yet seen die: a laptop that slept, a proxy that dropped it silently) is
  returned, and the new connection takes it over (api_box/io/ws.py aborts it, which parks it).
- `park` when a keyed connection ends without a close frame: its connection-local responses wait
  `ws_resume_grace_seconds` in memory. `take` hands them to the client's next connection.
- Entries that expire, are evicted by the bounds, replaced, or dropped at shutdown release their
  store:false chains on the workers (the same DropSession a closing connection sends).
- `seal_parked` runs in a drain: parked connections whose client has not come back yet are sealed like
  idle sockets (api_box/io/sealed.py), so the client continues on the next box.

Counted in tether_box_parked_connections (gauge), tether_box_parked_bytes (gauge),
tether_box_parked_total{result} and tether_box_resume_wait_seconds (the time a resumed connection was
parked).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from api_box.core.parking import Departure, Left, ParkingKey, ParkingLot
from api_box.core.sealed import HandoffKey
from api_box.core.session import LocalCache
from api_box.io.metrics import BoxMetrics
from api_box.io.sealed import SealedHandoffs

if TYPE_CHECKING:
    from api_box.io.ws import WsConnection

_LOG = logging.getLogger("api_box.resume")


class Resumes:
    """The box's parked connections and its live keyed connections; `lot` None: resuming is off."""

    def __init__(
        self,
        lot: ParkingLot | None,
        *,
        metrics: BoxMetrics,
        release: Callable[[str], object],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lot = lot
        self._metrics = metrics
        self._release = release  # drop one store:false chain on the workers (fire and forget)
        self._clock = clock
        self._live: dict[ParkingKey, WsConnection] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def enabled(self) -> bool:
        """Whether dropped connections are parked at all."""
        return self._lot is not None

    def ticket(self, tenant: str, key: HandoffKey | None) -> ResumeTicket | None:
        """What one connection uses: these resumes bound to its client's key (None without a key, or
        when resuming is off)."""
        if key is None or self._lot is None:
            return None
        return ResumeTicket(self, (tenant, key.slot), key)

    def attach(self, key: ParkingKey, conn: WsConnection) -> WsConnection | None:
        """Register a live keyed connection; the one it replaces, if any (to be taken over)."""
        previous = self._live.get(key)
        self._live[key] = conn
        return previous if previous is not conn else None

    def detach(self, key: ParkingKey, conn: WsConnection) -> None:
        """A keyed connection ended."""
        if self._live.get(key) is conn:
            del self._live[key]

    def park(self, key: ParkingKey, handoff: HandoffKey, cache: LocalCache) -> bool:
        """Park a dropped connection's responses; False when they were not parked (the caller releases
        them as for any closed connection)."""
        if self._lot is None:
            return False
        parked, gone = self._lot.park(key, cache, handoff, self._clock())
        self._depart([d for d in gone if d.reason is not Left.SKIPPED])
        if parked is None:
            _LOG.info("dropped connection not parked: %d bytes over the parking budget", cache.nbytes())
            self._count(Left.SKIPPED.value)
            self._refresh()
            return False
        self._count("parked")
        self._refresh()
        self._arm()
        return True

    def take(self, key: ParkingKey) -> LocalCache | None:
        """The responses parked under `key` (once), or None."""
        if self._lot is None:
            return None
        now = self._clock()
        parked = self._lot.take(key, now)
        if parked is None:
            return None
        self._count("resumed")
        self._metrics.resume_wait_seconds.observe(now - parked.parked_at)
        self._refresh()
        return parked.cache

    def expire_due(self) -> int:
        """Expire every entry whose grace window has passed (the timer calls this); how many."""
        self._timer = None
        if self._lot is None:
            return 0
        gone = self._lot.expire(self._clock())
        self._depart(gone)
        self._refresh()
        self._arm()
        return len(gone)

    async def seal_parked(self, handoffs: SealedHandoffs) -> int:
        """Drain: seal the latest response of every parked connection for the client's next box (when
        sealed handoffs are on); how many were sealed. Entries stay parked (a client that comes back to
        this box before it stops still resumes here)."""
        if self._lot is None or not handoffs.enabled:
            return 0
        sealed = 0
        for parked in self._lot.entries():
            latest = parked.cache.latest
            if latest is not None and not latest.store:
                sealed += await handoffs.seal(parked.key[0], parked.handoff, latest)
        return sealed

    def close(self) -> None:
        """The box stops: drop every parked connection and release its chains."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lot is not None:
            self._depart(self._lot.clear())
            self._refresh()

    # ---------------------------------------------------------------------------------------------
    def _arm(self) -> None:
        if self._lot is None or self._timer is not None:
            return
        due = self._lot.next_expiry
        if due is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(due - self._clock(), 0.0), self.expire_due)

    def _depart(self, gone: list[Departure]) -> None:
        for departure in gone:
            self._count(departure.reason.value)
            for cache_key in departure.parked.cache.store_false_chains():
                self._release(cache_key)

    def _count(self, result: str) -> None:
        self._metrics.parked.labels(result).inc()

    def _refresh(self) -> None:
        lot = self._lot
        self._metrics.parked_connections.set(len(lot) if lot is not None else 0)
        self._metrics.parked_bytes.set(lot.nbytes if lot is not None else 0)


@dataclass(frozen=True, slots=True)
class ResumeTicket:
    """The resume key of one WebSocket connection (api_box/io/ws.py)."""

    resumes: Resumes
    key: ParkingKey
    handoff: HandoffKey

    def attach(self, conn: WsConnection) -> WsConnection | None:
        """See Resumes.attach."""
        return self.resumes.attach(self.key, conn)

    def detach(self, conn: WsConnection) -> None:
        """See Resumes.detach."""
        self.resumes.detach(self.key, conn)

    def park(self, cache: LocalCache) -> bool:
        """See Resumes.park."""
        return self.resumes.park(self.key, self.handoff, cache)

    def take(self) -> LocalCache | None:
        """See Resumes.take."""
        return self.resumes.take(self.key)
