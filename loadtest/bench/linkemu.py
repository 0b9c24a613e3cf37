"""A user-space link emulator: a TCP relay that adds a one-way delay and paces bytes at a link rate.

This kernel has no netem qdisc (tc can shape rate but cannot delay), so the shaped link of `tether bench`
is this relay: it listens on the host end of the client's veth and forwards every connection to the
router. Each direction is one shared link (all connections queue behind each other, as on a real access
link): a chunk is cut into slices of at most `slice_bytes`; a slice that arrives at t leaves the link at
    depart = max(t, link_free_at) + len(slice) / rate     (serialization at the link rate, FIFO)
and is written to the other side at `depart + delay` (propagation). A rate of 0 means unlimited, so
`--delay-ms 0 --rate-mbit 0` measures the relay's own overhead. Order is kept per connection and
direction (one FIFO and one timer each). Memory is bounded: a direction holding more than
`max_queue_bytes` pauses reading its source until it drains.

    python -m loadtest.bench.linkemu --listen 10.213.7.1 --target 127.0.0.1:8080 --delay-ms 10 --rate-mbit 50

prints {"event": "listening", "host": ..., "port": ...} and, on SIGTERM or SIGINT, {"event": "stats", ...}
(connections, bytes per direction, and how late the timers fired: the emulator's own error).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

SLICE_BYTES = 8192
MAX_QUEUE_BYTES = 8 * 1024 * 1024
CONNECT_TIMEOUT = 10.0
MAX_CONNECTIONS = 4096


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """One direction's delay (seconds) and rate (bytes per second; 0 = unlimited)."""

    delay: float = 0.0
    rate: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.delay <= 10 or self.rate < 0:
            raise ValueError("delay must be in 0..10 s and rate >= 0")


@dataclass(slots=True)
class Link:
    """A shared link direction: when it is free next, and what passed through it."""

    spec: LinkSpec
    free_at: float = 0.0
    bytes: int = 0
    late_samples: list[float] = field(default_factory=list)

    def schedule(self, size: int, now: float) -> float:
        """When a slice of `size` bytes arriving `now` reaches the far end."""
        if self.spec.rate > 0:
            self.free_at = max(now, self.free_at) + size / self.spec.rate
            depart = self.free_at
        else:
            depart = now
        self.bytes += size
        return depart + self.spec.delay

    def note_lateness(self, late: float) -> None:
        """Record how late a delivery timer fired (bounded sample)."""
        if len(self.late_samples) < 200_000:
            self.late_samples.append(late)


class _Pipe:
    """One direction of one connection: a FIFO of (due, data) and a single timer."""

    def __init__(self, link: Link, source: _Side, loop: asyncio.AbstractEventLoop) -> None:
        self.link, self.source, self.loop = link, source, loop
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.sink: asyncio.Transport | None = None
        self.eof = False  # the source sent EOF: pass the half-close on once the queue is empty
        self.lost = False  # the source is gone: close the sink once the queue is empty

    def push(self, data: bytes) -> None:
        now = self.loop.time()
        view = memoryview(data)
        for start in range(0, len(data), SLICE_BYTES):
            piece = bytes(view[start : start + SLICE_BYTES])
            self.queue.append((self.link.schedule(len(piece), now), piece))
            self.queued += len(piece)
        if self.queued > MAX_QUEUE_BYTES:
            self.source.pause()
        self._arm()

    def finish(self) -> None:
        self.eof = True
        self._arm()

    def close_when_drained(self) -> None:
        self.lost = True
        self._arm()

    def arm(self) -> None:
        """Start delivering (once the sink is connected)."""
        self._arm()

    def _arm(self) -> None:
        if self.timer is not None or self.sink is None or self.sink.is_closing():
            return
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._deliver)
        elif self.lost:
            self.sink.close()
        elif self.eof and self.sink.can_write_eof():
            self.sink.write_eof()
            self.eof = False

    def _deliver(self) -> None:
        self.timer = None
        now = self.loop.time()
        if self.sink is None or self.sink.is_closing():
            return
        while self.queue and self.queue[0][0] <= now:
            due, piece = self.queue.popleft()
            self.link.note_lateness(now - due)
            self.queued -= len(piece)
            self.sink.write(piece)
        if self.queued <= MAX_QUEUE_BYTES // 2:
            self.source.resume()
        self._arm()

    def cancel(self) -> None:
        """Drop what is queued (its sink is gone) and stop the timer."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.queued = 0


class _Side(asyncio.Protocol):
    """One socket of a relayed pair; what it reads goes into `out` (the pipe towards the other side)."""

    def __init__(self, relay: Relay, link: Link) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.out = _Pipe(link, self, asyncio.get_running_loop())
        self.peer: _Side | None = None
        self.paused = False
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.out.push(data)

    def eof_received(self) -> bool:
        self.out.finish()
        return True  # keep the other direction open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self.out.close_when_drained()  # what this side sent still reaches the peer, then it closes
        if self.peer is not None:
            self.peer.out.cancel()  # nothing more can reach this side
        self.relay.forget(self)

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = False
            self.transport.resume_reading()


class Relay:
    """Accepts connections and splices each to `target` through the two shared links."""

    def __init__(self, target: tuple[str, int], up: LinkSpec, down: LinkSpec) -> None:
        self.target = target
        self.up, self.down = Link(up), Link(down)
        self.connections = 0
        self.live: set[_Side] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def accept(self) -> _Side:
        client = _Side(self, self.up)
        self.live.add(client)
        task = asyncio.get_running_loop().create_task(self._connect(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return client

    async def _connect(self, client: _Side) -> None:
        self.connections += 1
        loop = asyncio.get_running_loop()
        client.pause()  # nothing to forward to until the upstream is connected
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, upstream = await loop.create_connection(lambda: _Side(self, self.down), *self.target)
        except (OSError, TimeoutError):
            if client.transport is not None:
                client.transport.close()
            return
        self.live.add(upstream)
        client.peer, upstream.peer = upstream, client
        client.out.sink, upstream.out.sink = upstream.transport, client.transport
        if client.closed.is_set():
            upstream.out.cancel()
        client.resume()
        client.out.arm()

    def forget(self, side: _Side) -> None:
        self.live.discard(side)

    def stats(self) -> dict[str, Any]:
        """Counts and timer lateness per direction (seconds)."""
        return {
            "event": "stats",
            "connections": self.connections,
            "up": _link_stats(self.up),
            "down": _link_stats(self.down),
        }

    def close(self) -> None:
        for side in list(self.live):
            side.out.cancel()
            if side.transport is not None:
                side.transport.close()
        for task in self._tasks:
            task.cancel()


def _link_stats(link: Link) -> dict[str, Any]:
    samples = sorted(link.late_samples)
    if not samples:
        return {"bytes": link.bytes, "slices": 0, "late_mean": 0.0, "late_p99": 0.0, "late_max": 0.0}
    return {
        "bytes": link.bytes,
        "slices": len(samples),
        "late_mean": sum(samples) / len(samples),
        "late_p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "late_max": samples[-1],
    }


async def serve(host: str, port: int, relay: Relay, stop: asyncio.Event) -> None:
    """Run the relay on host:port until `stop` is set; prints the listening line, then the stats."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(relay.accept, host, port, backlog=MAX_CONNECTIONS, reuse_address=True)
    bound = server.sockets[0].getsockname()
    _print({"event": "listening", "host": bound[0], "port": bound[1]})
    try:
        await stop.wait()
    finally:
        server.close()
        relay.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await server.wait_closed()
        _print(relay.stats())


def _print(event: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(event) + b"\n")
    sys.stdout.buffer.flush()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The relay's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench.linkemu", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--listen", required=True, help="address to listen on (the host end of the veth)")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--target", required=True, help="host:port to forward to (the router)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay, each direction")
    parser.add_argument("--rate-mbit", type=float, default=0.0, help="link rate each direction; 0: unlimited")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    host, _, port = args.target.rpartition(":")
    spec = LinkSpec(delay=args.delay_ms / 1000, rate=args.rate_mbit * 1e6 / 8)
    relay = Relay((host, int(port)), spec, spec)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(args.listen, args.port, relay, stop)


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 after a signal asked it to stop."""
    args = parse_args(argv)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
