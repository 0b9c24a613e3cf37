"""The Router: owns the listening socket, the ring, member health and every relayed connection.

Per connection: `accepted` (count, cap) → `route` (pick candidates, connect with a timeout, walk to the ring
successor on refusal or timeout, 502 when none accepts) → `closed` (fold byte counts, free the load slot).
A connection's own state and deadlines (head, linger, stall, flush, idle) are its own business
(`router/io/relay.py` and its core `router/core/connection.py`); the router only tracks, routes and, when
draining or closing, aborts connections.
Membership arrives through `set_members` from any source; rings are built in a worker thread (a large ring
takes a few hundred ms of CPU) and swapped in atomically, newest membership wins.

Owned tasks: connect tasks (one per connection being routed), the membership applier and the prober
(re-probes members marked down). `close()` cancels all of them. Time comes from an injected `Clock` (the
event loop unless a test passes a fake one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator, Sequence
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry

from router.config import Settings
from router.core.connection import Limits
from router.core.errors import ConfigError, EmptyRing, NoUpstream, Overloaded, RouterError
from router.core.hashring import HashRing
from router.core.head import Mode, RequestHead, close_after_one, key_digest, routing_key
from router.core.membership import Member, ring_weights
from router.core.routing import DownList, keyed_candidates, keyless_candidates
from router.io.clock import Clock, sleep, wait_event
from router.io.metrics import RouterMetrics
from router.io.relay import ClientConnection, UpstreamConnection

__all__ = ["Router"]

log = logging.getLogger("router")
access_log = logging.getLogger("router.access")


class Router:
    """A running router instance (the composition root builds one per process; tests build several)."""

    def __init__(self, settings: Settings, registry: CollectorRegistry, clock: Clock | None = None) -> None:
        self.settings = settings
        self._loop = asyncio.get_running_loop()
        self.clock: Clock = self._loop if clock is None else clock
        self.limits = Limits(
            head_timeout=settings.head_timeout,
            max_head_bytes=settings.max_head_bytes,
            send_timeout=settings.send_timeout,
            idle_timeout=settings.idle_timeout,
        )
        self.key_sources = settings.key_sources()
        self.metrics = RouterMetrics(registry, live=lambda: self.connections)
        self.ring = HashRing((), vnodes=settings.vnodes)
        self.members: dict[str, Member] = {}
        self.down = DownList(settings.down_cooldown)
        self.loads: dict[str, int] = {}  # active relayed connections per member
        self.connections: set[ClientConnection] = set()
        self.refusing: set[ClientConnection] = set()  # over the limit: read the head, answer, linger
        self.draining = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wanted: tuple[Member, ...] | None = None
        self._membership_changed = asyncio.Event()
        self._ring_applied = asyncio.Event()
        self._ring_swapped = asyncio.Event()
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self._turn = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound (host, port). Background tasks start here."""
        self._server = await self._loop.create_server(
            partial(ClientConnection, self),
            self.settings.host,
            self.settings.port,
            backlog=self.settings.backlog,
            reuse_address=True,
        )
        self._spawn(self._apply_membership(), "membership")
        self._spawn(self._probe_forever(), "prober")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def wait_ring(self, within: float) -> bool:
        """Wait until a membership has been applied to the ring. False after `within` seconds."""
        try:
            async with asyncio.timeout(within):
                await self._ring_applied.wait()
        except TimeoutError:
            return False
        return True

    async def wait_ring_change(self) -> None:
        """Return after the next ring swap."""
        await self._ring_swapped.wait()

    async def wait_no_connections(self) -> None:
        """Return once no client connection is open (at once if none is)."""
        await self._all_closed.wait()

    def now(self) -> float:
        """The router's monotonic clock (what cooldowns and deadlines are measured in)."""
        return self.clock.time()

    def ready(self) -> bool:
        """Serving, not draining, with at least one ring member."""
        return self._server is not None and not self.draining and len(self.ring) > 0

    async def drain(self, budget: float) -> int:
        """Stop accepting, let relayed connections finish for up to `budget` s, then drop the rest.
        Returns how many were dropped."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        await wait_event(self.clock, self._all_closed, budget)
        left = list(self.connections)
        for conn in [*left, *self.refusing]:
            conn.abort()
        if left:
            log.warning("drain budget of %.1f s spent: dropped %d connections", budget, len(left))
        return len(left)

    async def close(self) -> None:
        """Drop every connection and cancel every owned task."""
        if self._server is not None:
            self._server.close()
        for conn in [*self.connections, *self.refusing]:
            conn.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = self._loop.create_task(coro, name=f"router-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------------ membership
    def set_members(self, members: Sequence[Member]) -> None:
        """Replace the membership (any source calls this; the newest call wins)."""
        self._wanted = tuple(sorted(members))
        self._membership_changed.set()

    async def _apply_membership(self) -> None:
        while True:
            await self._membership_changed.wait()
            self._membership_changed.clear()
            wanted = self._wanted
            if wanted is None:
                continue
            weights = ring_weights(wanted)
            if weights != dict(self.ring.weights):
                try:
                    ring = await asyncio.to_thread(HashRing, weights, vnodes=self.settings.vnodes)
                except ConfigError as exc:  # e.g. more members than a ring holds: keep the current ring
                    log.error("membership rejected, the ring keeps its %d members: %s", len(self.ring), exc)
                    continue
                if self._wanted != wanted:
                    continue  # a newer membership arrived while building
                self._swap_ring(ring)
            self.members = {member.name: member for member in wanted}
            self.down.retain(set(self.members))
            self._ring_applied.set()

    def _swap_ring(self, ring: HashRing) -> None:
        old = self.ring
        self.ring = ring
        self._ring_swapped.set()
        self._ring_swapped = asyncio.Event()
        self.metrics.ring_changes.inc()
        self.metrics.set_ring(ring.version, len(ring))
        added = sorted(set(ring.members) - set(old.members))
        removed = sorted(set(old.members) - set(ring.members))
        log.info("ring %s: %d members (+%s -%s)", ring.version, len(ring), added or "[]", removed or "[]")

    # ------------------------------------------------------------------ connections
    def accepted(self, conn: ClientConnection) -> RouterError | None:
        """Track a new connection; the error to refuse it with when the router is at its limit (the
        connection reads its head first, for at most a few seconds, so that a WebSocket upgrade is refused
        with 426 and its client falls back to HTTP)."""
        if len(self.connections) >= self.settings.max_connections:
            self.refusing.add(conn)
            return Overloaded(f"the router holds its maximum of {self.settings.max_connections} connections")
        self.connections.add(conn)
        self._all_closed.clear()
        return None

    def rejected(self, conn: ClientConnection, reason: str, exc: BaseException) -> None:
        """Count a connection answered with an error before relaying."""
        self.metrics.rejected.labels(reason).inc()
        if reason == "internal":
            log.error("internal error on a connection", exc_info=exc)
        else:
            access_log.debug("rejected (%s): %s", reason, exc)

    def closed(self, conn: ClientConnection, was_relaying: bool) -> None:
        """Untrack a connection that ended; fold its byte counts into the totals."""
        self.connections.discard(conn)
        self.refusing.discard(conn)
        if was_relaying and conn.mode is not None and conn.member is not None:
            self.metrics.bytes.add(conn)
            self.metrics.connections.labels(conn.mode.value).dec()
            left = self.loads.get(conn.member, 1) - 1
            if left or conn.member in self.members:
                self.loads[conn.member] = left
            else:  # the member left the ring: do not keep a counter per departed member forever
                self.loads.pop(conn.member, None)
        if not self.connections:
            self._all_closed.set()

    def route(self, conn: ClientConnection, head: RequestHead, raw: bytes) -> None:
        """Start routing a connection whose head was read (called by the connection)."""
        self._spawn(self._connect(conn, head, raw), "connect")

    def _candidates(self, key: str | None) -> Iterator[str]:
        now = self.clock.time()

        def is_down(member: str) -> bool:
            return self.down.is_down(member, now)

        if key is None:
            self._turn += 1
            return keyless_candidates(self.ring.members, self.loads, is_down, self._turn)
        return keyed_candidates(self.ring, key, is_down, self.loads, self.settings.bounded_load)

    async def _connect(self, conn: ClientConnection, head: RequestHead, raw: bytes) -> None:
        mode = conn.mode
        assert mode is not None  # the head was read
        try:
            if not self.ring.members:
                raise EmptyRing("no API box is known yet")
            key = routing_key(head, self.key_sources)
            first = raw if mode is Mode.WS else close_after_one(raw)
            for attempt, name in enumerate(self._candidates(key.key)):
                if attempt >= self.settings.connect_attempts or not conn.connecting:
                    break
                transport = await self._open(conn, name)
                if transport is None:
                    continue
                if not conn.connecting:  # the client left while we connected
                    transport.close()
                    return
                self.loads[name] = self.loads.get(name, 0) + 1
                self.metrics.connections.labels(mode.value).inc()
                self.metrics.routed.labels(mode.value, key.source).inc()
                conn.start_relay(transport, name, first)
                if access_log.isEnabledFor(logging.DEBUG):
                    digest = key_digest(key.key) if key.key is not None else "-"
                    access_log.debug(
                        "%s %s key=%s -> %s", mode.value, head.target.partition("?")[0], digest, name
                    )
                return
            if conn.connecting:
                raise NoUpstream("no box accepted the connection")
        except Exception as exc:  # RouterErrors answer with their status; anything else is a 500
            conn.reject(exc)

    async def _open(self, conn: ClientConnection, name: str) -> asyncio.Transport | None:
        """Connect to member `name`; None (and the member marked down) on refusal or timeout."""
        member = self.members.get(name)
        if member is None:
            return None
        started = self.clock.time()
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                transport, _ = await self._loop.create_connection(
                    partial(UpstreamConnection, conn), member.host, member.port
                )
        except TimeoutError:
            self._failed(name, "timeout")
            return None
        except OSError as exc:
            self._failed(name, "refused", exc)
            return None
        self.metrics.connect_seconds.observe(self.clock.time() - started)
        if self.down.mark_up(name):
            log.info("box %s accepts connections again", name)
        return transport

    def _failed(self, name: str, reason: str, exc: OSError | None = None) -> None:
        self.metrics.upstream_failures.labels(reason).inc()
        now = self.clock.time()
        if not self.down.is_down(name, now):
            log.warning("box %s: connect %s (%s); trying its ring successor", name, reason, exc or "")
        self.down.mark_down(name, now)

    # ------------------------------------------------------------------ background loops
    async def _probe_forever(self) -> None:
        """Re-probe members marked down: a plain TCP connect; success clears the mark early."""
        while True:
            await sleep(self.clock, self.settings.probe_interval)
            for name in self.down.marked():
                member = self.members.get(name)
                if member is not None and await self._probe(member):
                    self.down.mark_up(name)
                    log.info("box %s accepts connections again (probe)", name)

    async def _probe(self, member: Member) -> bool:
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                _, writer = await asyncio.open_connection(member.host, member.port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
