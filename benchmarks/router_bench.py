"""Router benchmark: WebSocket relay latency and throughput — direct to a box, through tether-router and
through nginx (`hash $http_x_session_id consistent`, deploy/nginx/tether-router.conf) — plus ring lookups.
Prints figures; asserts nothing.

    .venv/bin/python benchmarks/router_bench.py [--quick] [--json out.json] [--relay-core 0 --load-core 1]

Processes: a minimal WebSocket echo backend (4 listening ports = 4 boxes; one asyncio Protocol, frames
parsed, unmasked and echoed) and this process's load client share the load core; the relay under test
(tether-router on uvloop, or one nginx worker) runs alone on the relay core (taskset). Every loop is bounded
by a message count and a deadline.

1. Added latency per message: closed-loop ping-pong, 256-byte messages, with 1, 100 and 1,000 concurrent
   connections (1: back to back; 100 and 1,000: paced to 2,000 messages/s in all). The targets are measured
   in interleaved 1-s slices; reported: pooled percentiles and the median over slices of each slice's
   percentile. Added = relay − direct at the same percentile.
2. Relay throughput, targets interleaved in 5 slices each: (a) 100 connections × 1 message in flight,
   1 KiB (per-message cost: every message is its own read and write in the relay), (b) 10 connections ×
   16 in flight, 64 KiB (bulk). Reported:
   echoed messages/s, payload MB/s per direction, the relay's CPU use (from /proc) and messages per relay
   CPU-second — the relay's capacity on its one core even when the load side, not the relay, saturates.
3. Ring lookup: HashRing.lookup at 16 and 128 members (mean over a batch, and p99 of single timed calls).
4. With --balance: the default ring's max/mean load and keys moved on a ±1 change for N = 8…128, exact and
   with 100k keys.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.core.hashring import HashRing  # noqa: E402

NGINX_CONF = ROOT / "deploy" / "nginx" / "tether-router.conf"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BOXES = 4
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ============================================================================ the echo backend (a child)
def _frame(payload_len: int, masked: bool) -> bytes:
    """A FIN + binary frame header for `payload_len` bytes (mask key 0 when masked: payload unchanged)."""
    mask_bit = 0x80 if masked else 0
    if payload_len < 126:
        head = bytes([0x82, mask_bit | payload_len])
    elif payload_len < 1 << 16:
        head = bytes([0x82, mask_bit | 126]) + payload_len.to_bytes(2, "big")
    else:
        head = bytes([0x82, mask_bit | 127]) + payload_len.to_bytes(8, "big")
    return head + (b"\x00\x00\x00\x00" if masked else b"")


def _unmask(payload: bytes, key: bytes) -> bytes:
    if key == b"\x00\x00\x00\x00":
        return payload
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


class EchoBox(asyncio.Protocol):
    """A minimal WebSocket echo server connection: handshake, then parse, unmask and echo every frame."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[: end + 4]
            match = re.search(r"(?im)^sec-websocket-key:\s*(\S+)", head)
            if match is None:
                self.transport.close()  # type: ignore[union-attr]
                return
            accept = base64.b64encode(hashlib.sha1(match.group(1).encode() + WS_GUID).digest()).decode()
            self.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
            )
            self.upgraded = True
        self._echo()

    def _echo(self) -> None:
        out: list[bytes] = []
        buffer = self.buffer
        while len(buffer) >= 2:
            opcode, length, offset = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length, offset = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                length, offset = int.from_bytes(buffer[2:10], "big"), 10
            key = b""
            if buffer[1] & 0x80:
                key, offset = bytes(buffer[offset : offset + 4]), offset + 4
            if len(buffer) < offset + length:
                break
            payload = (
                _unmask(bytes(buffer[offset : offset + length]), key)
                if key
                else bytes(buffer[offset : offset + length])
            )
            del buffer[: offset + length]
            if opcode == 0x8:  # close: answer and hang up
                out.append(bytes([0x88, 0]))
                self.transport.write(b"".join(out))  # type: ignore[union-attr]
                self.transport.close()  # type: ignore[union-attr]
                return
            out.append(_frame(length, masked=False) + payload)
        if out:
            self.transport.write(b"".join(out))  # type: ignore[union-attr]


async def run_echo_backend(count: int) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(EchoBox, "127.0.0.1", 0, backlog=4096) for _ in range(count)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print("echo", *ports, flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin


# ============================================================================ the load client
class WsClient(asyncio.Protocol):
    """A raw WebSocket client that counts fixed-size echoes without parsing frames."""

    def __init__(self, key: str, payload_len: int) -> None:
        self.key = key
        self.frame = _frame(payload_len, masked=True) + b"x" * payload_len
        self.echo_len = len(_frame(payload_len, masked=False)) + payload_len
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.head = bytearray()
        self.pending = 0  # bytes of a partly received echo
        self.completed = 0
        self.waiter: asyncio.Future[None] | None = None
        self.refill = 0  # >0: throughput mode, resend one message per echo
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they have its methods.
        self.transport = writer = cast(asyncio.Transport, transport)
        nonce = base64.b64encode(os.urandom(16))
        writer.write(
            b"GET /v1/responses HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + nonce + b"\r\n"
            b"X-Session-Id: " + self.key.encode() + b"\r\n\r\n"
        )

    def data_received(self, data: bytes) -> None:
        if not self.ready.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(bytes(self.head[:80]).decode("latin-1")))
                return
            data = bytes(self.head[end + 4 :])
            self.ready.set_result(None)
        self.pending += len(data)
        done, self.pending = divmod(self.pending, self.echo_len)
        if done:
            self.completed += done
            if self.refill:
                self.transport.write(self.frame * done)  # type: ignore[union-attr]
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during the handshake"))
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))

    async def roundtrip(self) -> float:
        self.waiter = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        self.transport.write(self.frame)  # type: ignore[union-attr]
        await self.waiter
        return time.perf_counter() - started


Target = Callable[[str], tuple[str, int]]  # routing key -> address to connect to


async def open_clients(target: Target, count: int, payload_len: int) -> list[WsClient]:
    loop = asyncio.get_running_loop()
    semaphore = asyncio.Semaphore(100)  # bounded connect concurrency: no SYN-backlog overflow

    async def one(i: int) -> WsClient:
        key = f"bench-{i}-{random.getrandbits(32):08x}"
        async with semaphore:
            _, client = await loop.create_connection(lambda: WsClient(key, payload_len), *target(key))
            await client.ready
        return client

    async with asyncio.timeout(60):
        return list(await asyncio.gather(*(one(i) for i in range(count))))


def close_clients(clients: Sequence[WsClient]) -> None:
    for client in clients:
        if client.transport is not None:
            client.transport.close()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def ping_slice(
    clients: Sequence[WsClient], seconds: float, total_rate: float, samples: list[float]
) -> None:
    """Ping-pong on every client for `seconds`; with more than one client, each is paced so that the total
    rate is `total_rate` messages/s. Bounded by the deadline and by a message count per client."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    interval = 0.0 if len(clients) == 1 else len(clients) / total_rate
    max_messages = 200_000 if interval == 0 else int(seconds / interval) + 2

    async def pinger(client: WsClient) -> None:
        start = loop.time() + random.random() * interval
        for n in range(max_messages):
            if interval:
                await asyncio.sleep(max(0.0, start + n * interval - loop.time()))
            if loop.time() >= deadline or client.closed:
                return
            samples.append(await client.roundtrip())

    async with asyncio.timeout(seconds + 30):
        await asyncio.gather(*(pinger(c) for c in clients))


async def latency_runs(
    targets: dict[str, Target], connections: int, seconds: float, total_rate: float, rounds: int
) -> dict[str, dict[str, Any]]:
    """Open `connections` clients per target, then measure the targets in interleaved slices (round-robin,
    `rounds` slices each), so that load from other processes on the machine falls on all of them alike.

    Reported per target: percentiles over all samples, and the median over the slices of each slice's own
    p50/p99 — on a shared machine a burst of someone else's work lands in a few slices and moves the pooled
    p99 by whole milliseconds, while the typical slice shows what the relay itself adds."""
    clients = {name: await open_clients(target, connections, 256) for name, target in targets.items()}
    slices: dict[str, list[list[float]]] = {name: [] for name in targets}
    try:
        for _ in range(rounds):
            for name in targets:
                samples: list[float] = []
                await ping_slice(clients[name], seconds / rounds, total_rate, samples)
                slices[name].append(samples)
    finally:
        for opened in clients.values():
            close_clients(opened)
    figures: dict[str, dict[str, Any]] = {}
    for name, per_slice in slices.items():
        values = [v for samples in per_slice for v in samples]
        filled = [samples for samples in per_slice if samples]
        figures[name] = {
            "messages": len(values),
            "p50_us": percentile(values, 0.50) * 1e6,
            "p99_us": percentile(values, 0.99) * 1e6,
            "mean_us": statistics.fmean(values) * 1e6,
            "slice_p50_us": statistics.median(percentile(s, 0.50) for s in filled) * 1e6,
            "slice_p99_us": statistics.median(percentile(s, 0.99) for s in filled) * 1e6,
            "each_slice_p99_us": [round(percentile(s, 0.99) * 1e6, 1) for s in filled],
        }
    return figures


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLOCK_TICKS


async def throughput_slice(
    target: Target, connections: int, window: int, payload_len: int, seconds: float, relay_pids: Sequence[int]
) -> tuple[int, float, float]:
    """`connections` × `window` messages in flight, each echo triggering the next message, for `seconds`
    after a short warm-up: (messages echoed, relay CPU seconds, wall seconds)."""
    clients = await open_clients(target, connections, payload_len)
    try:
        for client in clients:
            client.refill = 1
            client.transport.write(client.frame * window)  # type: ignore[union-attr]
        await asyncio.sleep(min(0.5, seconds / 4))  # warm-up
        count0, cpu0, t0 = sum(c.completed for c in clients), cpu_seconds(relay_pids), time.perf_counter()
        await asyncio.sleep(seconds)
        count1, cpu1, t1 = sum(c.completed for c in clients), cpu_seconds(relay_pids), time.perf_counter()
        for client in clients:
            client.refill = 0
    finally:
        close_clients(clients)
    return count1 - count0, cpu1 - cpu0, t1 - t0


async def throughput_runs(
    targets: dict[str, Target],
    shape: tuple[int, int, int],
    seconds: float,
    rounds: int,
    pids: dict[str, list[int]],
) -> dict[str, dict[str, float]]:
    """Each target in `rounds` interleaved slices (fresh connections per slice), summed."""
    connections, window, payload_len = shape
    totals: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in targets}
    for _ in range(rounds):
        for name, target in targets.items():
            count, cpu, wall = await throughput_slice(
                target, connections, window, payload_len, seconds / rounds, pids[name]
            )
            totals[name][0] += count
            totals[name][1] += cpu
            totals[name][2] += wall
    figures = {}
    for name, (messages, cpu, wall) in totals.items():
        rate = messages / wall
        relay_cpu = cpu / wall if pids[name] else 0.0
        figures[name] = {
            "messages_per_s": rate,
            "mb_per_s": rate * payload_len / 1e6,
            "relay_cpu": relay_cpu,
            "messages_per_relay_cpu_s": messages / cpu if cpu > 0 else float("nan"),
        }
    return figures


# ============================================================================ processes
@dataclass
class Relay:
    name: str
    port: int
    pids: list[int]
    process: subprocess.Popen[bytes] | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def target(self) -> Target:
        return lambda key: ("127.0.0.1", self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for step in self.cleanup:
            step()


def pinned(core: int | None, argv: list[str]) -> list[str]:
    return argv if core is None else ["taskset", "-c", str(core), *argv]


def start_echo(core: int | None) -> tuple[subprocess.Popen[bytes], list[int]]:
    process = subprocess.Popen(
        pinned(core, [sys.executable, __file__, "--role", "echo"]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    words = process.stdout.readline().decode().split()
    if not words or words[0] != "echo":
        raise RuntimeError("the echo backend did not start")
    return process, [int(port) for port in words[1:]]


def start_router(core: int | None, box_ports: Sequence[int]) -> Relay:
    boxes = ",".join(f"box-{i}=127.0.0.1:{port}" for i, port in enumerate(box_ports))
    argv = [sys.executable, "-m", "router", "--port", "0", "--admin-port", "-1", "--boxes", boxes,
            "--log-level", "WARNING"]  # fmt: skip
    process = subprocess.Popen(pinned(core, argv), stdout=subprocess.PIPE, cwd=ROOT)
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    match = re.match(r"tether-router serving http://127\.0\.0\.1:(\d+) ", line)
    if match is None:
        process.kill()
        raise RuntimeError(f"the router did not start: {line!r}")
    return Relay("router", int(match.group(1)), [process.pid], process)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_nginx(core: int | None, box_ports: Sequence[int]) -> Relay | None:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        print("nginx not found (apt-get install -y nginx): skipping the nginx column", file=sys.stderr)
        return None
    prefix = Path(tempfile.mkdtemp(prefix="tether-nginx-"))
    port = free_port()
    servers = "".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;\n" for p in box_ports)
    config = NGINX_CONF.read_text()
    config = re.sub(r"(?m)^\s*server 127\.0\.0\.1:\d+ [^\n]*\n", "", config)
    config = config.replace(
        "hash $http_x_session_id consistent;\n", f"hash $http_x_session_id consistent;\n{servers}"
    )
    config = re.sub(r"listen 127\.0\.0\.1:\d+", f"listen 127.0.0.1:{port}", config)
    (prefix / "nginx.conf").write_text(config)
    argv = [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr", "-g", "daemon off;"]
    process = subprocess.Popen(pinned(core, argv))
    relay = Relay("nginx", port, [], process, [lambda: shutil.rmtree(prefix, ignore_errors=True)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        relay.stop()
        raise RuntimeError("nginx did not start")
    relay.pids = [process.pid, *children(process.pid)]
    return relay


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


# ============================================================================ the run
def ring_lookup_figures() -> dict[str, dict[str, float]]:
    figures = {}
    keys = [f"session-{i}" for i in range(100_000)]
    for members in (16, 128):
        ring = HashRing([f"box-{i}" for i in range(members)])
        lookup = ring.lookup
        started, cpu_started = time.perf_counter(), time.process_time()
        for key in keys:
            lookup(key)
        mean = (time.perf_counter() - started) / len(keys)
        cpu_mean = (time.process_time() - cpu_started) / len(keys)  # not inflated by other processes
        single = []
        clock = time.perf_counter_ns
        for key in keys[:20_000]:
            t0 = clock()
            lookup(key)
            single.append(clock() - t0)
        figures[f"members_{members}"] = {
            "mean_us": mean * 1e6,
            "cpu_mean_us": cpu_mean * 1e6,
            "p99_us": percentile(single, 0.99) / 1000,
        }
    return figures


def ring_balance_figures() -> dict[str, dict[str, float]]:
    """Balance and movement of the default ring for N = 8…128: exact (shares of the hash space) and sampled
    (100k keys `session-<i>`); a ±1 change removes the last member / adds `box-N`."""
    keys = [f"session-{i}" for i in range(100_000)]
    figures = {}
    for n in (8, 16, 32, 64, 128):
        members = [f"box-{i}" for i in range(n)]
        ring, smaller, larger = HashRing(members), HashRing(members[:-1]), HashRing([*members, f"box-{n}"])
        owners = [ring.lookup(k) for k in keys]
        counts: dict[str, int] = {}
        for owner in owners:
            counts[owner] = counts.get(owner, 0) + 1
        moved_out = sum(a != smaller.lookup(k) for a, k in zip(owners, keys, strict=True)) / len(keys)
        moved_in = sum(a != larger.lookup(k) for a, k in zip(owners, keys, strict=True)) / len(keys)
        shares = ring.shares()
        figures[str(n)] = {
            "exact_max_over_mean": max(shares.values()) * n,
            "exact_moved_minus1_x_ideal": shares[members[-1]] * n,
            "exact_moved_plus1_x_ideal": larger.shares()[f"box-{n}"] * (n + 1),
            "sampled_max_over_mean": max(counts.values()) / (len(keys) / n),
            "sampled_moved_minus1_x_ideal": moved_out * n,
            "sampled_moved_plus1_x_ideal": moved_in * (n + 1),
        }
    return figures


async def run_load(
    args: argparse.Namespace, relays: dict[str, Target], pids: dict[str, list[int]]
) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {"latency": {}, "throughput": {}}
    for connections in args.connections:
        by_target = await latency_runs(relays, connections, args.latency_seconds, args.rate, args.rounds)
        results["latency"][str(connections)] = by_target
        for name, f in by_target.items():
            print(
                f"latency  c={connections:<5} {name:<7} p50 {f['p50_us']:8.1f} µs  p99 {f['p99_us']:9.1f} µs "
                f"| median slice p50 {f['slice_p50_us']:7.1f} µs  p99 {f['slice_p99_us']:8.1f} µs  "
                f"({f['messages']} messages)",
                flush=True,
            )
    shapes = [("1KiB x100 conn x1", 100, 1, 1024), ("64KiB x10 conn x16", 10, 16, 65536)]
    for label, connections, window, size in shapes:
        by_target = await throughput_runs(
            relays, (connections, window, size), args.throughput_seconds, 5, pids
        )
        results["throughput"][label] = by_target
        for name, f in by_target.items():
            print(
                f"through  {label:<19} {name:<7} {f['messages_per_s']:9.0f} msg/s {f['mb_per_s']:8.1f} MB/s  "
                f"relay CPU {f['relay_cpu'] * 100:5.1f} %  "
                f"{f['messages_per_relay_cpu_s']:9.0f} msg per relay CPU-s",
                flush=True,
            )
    return results


def summarize(results: dict[str, Any]) -> None:
    print("\nadded latency (relay − direct), µs — pooled p50 / p99, then median-slice p50 / p99:")
    for connections, by_target in results["latency"].items():
        direct = by_target["direct"]
        parts = []
        for name, f in by_target.items():
            if name == "direct":
                continue
            added = [f[k] - direct[k] for k in ("p50_us", "p99_us", "slice_p50_us", "slice_p99_us")]
            parts.append(
                f"{name}: {added[0]:+.1f} / {added[1]:+.1f}, slices {added[2]:+.1f} / {added[3]:+.1f}"
            )
        print(f"  c={connections:<5} " + " | ".join(parts))
    for label, by_target in results["throughput"].items():
        if "router" in by_target and "nginx" in by_target:
            raw = by_target["router"]["messages_per_s"] / by_target["nginx"]["messages_per_s"]
            per_cpu = (
                by_target["router"]["messages_per_relay_cpu_s"]
                / by_target["nginx"]["messages_per_relay_cpu_s"]
            )
            print(f"  {label}: router/nginx = {raw:.2f} (rate), {per_cpu:.2f} (per relay CPU-second)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--role", choices=("bench", "echo"), default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test of the script)")
    parser.add_argument(
        "--relay-core", type=int, default=0, help="core of the relay under test (-1: no pinning)"
    )
    parser.add_argument("--load-core", type=int, default=1, help="core of the echo backend and the client")
    parser.add_argument("--connections", default="1,100,1000")
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="total messages/s of the paced latency runs"
    )
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="per target and connection count")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved slices per latency measurement")
    parser.add_argument("--throughput-seconds", type=float, default=5.0, help="per target and shape")
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--balance", action="store_true", help="also measure ring balance and movement")
    parser.add_argument(
        "--ring-only", action="store_true", help="only the ring figures (no relays, no nginx)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    run: Callable[[Coroutine[Any, Any, Any]], Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    if args.role == "echo":
        run(run_echo_backend(BOXES))
        return
    args.connections = [int(c) for c in args.connections.split(",")]
    if args.quick:
        args.latency_seconds, args.throughput_seconds = 1.5, 1.0
    if args.ring_only:
        results: dict[str, Any] = {"ring_lookup": ring_lookup_figures()}
        for members, f in results["ring_lookup"].items():
            print(f"ring lookup {members}: mean {f['mean_us']:.2f} µs (CPU {f['cpu_mean_us']:.2f} µs)")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
    relay_core = None if args.relay_core < 0 else args.relay_core
    load_core = None if args.load_core < 0 else args.load_core
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})
    echo, box_ports = start_echo(load_core)
    relays: list[Relay] = []
    try:
        relays.append(start_router(relay_core, box_ports))
        nginx = None if args.no_nginx else start_nginx(relay_core, box_ports)
        if nginx is not None:
            relays.append(nginx)

        def direct(key: str) -> tuple[str, int]:
            return "127.0.0.1", box_ports[zlib.crc32(key.encode()) % len(box_ports)]

        targets: dict[str, Target] = {"direct": direct, **{r.name: r.target() for r in relays}}
        pids = {"direct": [], **{r.name: r.pids for r in relays}}
        load_before = os.getloadavg()[0]
        print(f"cpus: {os.cpu_count()}  relay core: {relay_core}  load core: {load_core}  "
              f"python {sys.version.split()[0]}  load average {load_before:.2f}", flush=True)  # fmt: skip
        results = run(run_load(args, targets, pids))
    finally:
        for relay in relays:
            relay.stop()
        if echo.stdin is not None:
            echo.stdin.close()
        echo.wait(10)
    results["load_average"] = {"start": load_before, "end": os.getloadavg()[0]}
    print(f"load average (1 min) at start {load_before:.2f}, at end {os.getloadavg()[0]:.2f}")
    results["ring_lookup"] = ring_lookup_figures()
    for members, f in results["ring_lookup"].items():
        print(
            f"ring lookup {members}: mean {f['mean_us']:.2f} µs (CPU {f['cpu_mean_us']:.2f} µs), "
            f"p99 {f['p99_us']:.2f} µs (single calls)"
        )
    if args.balance:
        results["ring_balance"] = ring_balance_figures()
        print("\nring balance (default layout, 8192 points per member); exact | 100k keys:")
        for n, f in results["ring_balance"].items():
            pairs = [
                (f["exact_max_over_mean"], f["sampled_max_over_mean"]),
                (f["exact_moved_minus1_x_ideal"], f["sampled_moved_minus1_x_ideal"]),
                (f["exact_moved_plus1_x_ideal"], f["sampled_moved_plus1_x_ideal"]),
            ]
            cells = [f"{exact:.3f} | {sampled:.3f}" for exact, sampled in pairs]
            print(
                f"  N={n:<4} max/mean {cells[0]}   moved −1 {cells[1]} × ideal   moved +1 {cells[2]} × ideal"
            )
    summarize(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
