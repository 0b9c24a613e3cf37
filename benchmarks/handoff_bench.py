"""Cold-handoff benchmark: Redis restore time by chain length, write-behind throughput and lag, and what
write-behind costs a turn's latency.

    .venv/bin/python benchmarks/handoff_bench.py [--redis-url URL] [--samples 300]
        [--chains 10,100,1000] [--write-turns 20000] [--rate 2000]
        [--sessions 8] [--turns 24] [--rounds 4] [--skip-latency] [--only-sealed]

Without --redis-url a local `redis-server` is started on a free port (in memory, loopback).

1. restore: a chain of N agent turns (each turn: ~300 new tokens, a 1.6 KB ResponseResource and 1.1 KB
   of input items, as a tool-call turn of a coding agent) is written through the write-behind queue; then
   its last response is restored `--samples` times. `redis` is `RedisColdStore.restore` (2 round trips:
   GET the response, LRANGE its chain; decode; fold), what tether_box_cold_restore_seconds measures;
   `+ record` adds building the live chain the box continues from (token array and digest).
2. write-behind: `--write-turns` such turns appended as fast as possible: the cost of `append` on the
   turn's path, and turns/s and MB/s until flushed. Then appended at a steady `--rate` turns/s: the lag
   from append to written (what a box SIGKILL loses: turns completed less than this before the kill).
3. sealed (store:false across a drain, api_box/io/sealed.py): a store:false chain of N turns' tokens is
   sealed and SET (what a draining box does per socket before its 1012 close), then taken with GETDEL,
   opened and turned into a live record (what the new box does at connect), `--samples` times each.
4. latency: one `tether-api-box` + one `tether-gpu-worker`, `--sessions` concurrent WebSocket agent
   sessions of `--turns` store:true turns each; per-turn latency (create sent → response.completed
   received), Redis on and off in alternating rounds (a fresh box each round). Two workloads:
   - agent: the sim's H100 timing model (speed 1) and a tool that runs 50–150 ms between turns, the
     shape of a real agent run; the target applies here: Redis on adds ≤ 5% to p99;
   - saturated: speed 0 (no model time) and no tool time, every session sending its next turn at once:
     the box's CPU is the bottleneck, so this shows what write-behind costs in CPU per turn.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api_box.core.chain import AgentCounters  # noqa: E402
from api_box.core.handoff import ChainSnapshot, TurnRecord, record_from_snapshot  # noqa: E402
from api_box.core.sealed import NONCE_BYTES, derive, seal  # noqa: E402
from api_box.io.metrics import build_metrics  # noqa: E402
from api_box.io.redis_store import RedisColdStore  # noqa: E402
from api_box.io.sealed import SealedHandoffs  # noqa: E402
from tether.config import ClusterSpec  # noqa: E402
from tether.supervisor import LocalCluster, free_port  # noqa: E402

KEY = "tether-dev-key"
TOKENS_PER_TURN = 300
RESOURCE = orjson.dumps({"id": "resp_x", "output": [{"type": "function_call", "arguments": "x" * 1400}]})
ITEMS = orjson.dumps([{"type": "function_call_output", "call_id": "call_x", "output": "y" * 1000}])
TOOL_OUTPUT = "def f(x):\n    return x * 2\n" * 80  # ~2 KB of code, as a read_file result
TOOLS = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file of the repository.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float) -> str:
    return f"{value * 1000:.2f}"


@contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: install it or pass --redis-url")
    port = free_port("127.0.0.1")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*args, "--loglevel", "warning"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False
            ).stdout.strip()
            != b"PONG"
        ):
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(5)


class TimedStore(RedisColdStore):
    """Records, per turn, the time from append to written."""

    lags: list[float]

    def _written(self, batch: list[Any]) -> None:
        now = self._clock()
        self.lags.extend(now - item.at for item in batch)
        super()._written(batch)


def make_store(url: str, prefix: str) -> TimedStore:
    store = TimedStore.from_url(
        url, metrics=build_metrics(CollectorRegistry(), version="bench"), prefix=prefix
    )
    assert isinstance(store, TimedStore)
    store.lags = []
    return store


def chain_turns(n: int, rng: random.Random, *, chain: str) -> list[TurnRecord]:
    turns: list[TurnRecord] = []
    length = 0
    base: TurnRecord | None = None
    for i in range(n):
        tokens = tuple(rng.randrange(200_000) for _ in range(TOKENS_PER_TURN))
        previous = base.response_id if base else None
        turn = TurnRecord(
            tenant="default",
            response_id=f"resp_{chain}_{i}",
            previous_response_id=previous,
            base_response_id=previous,
            base_len=length,
            cache_key=f"ck_{chain}",
            header_key=b"\x01" * 16,
            header_len=50,
            tokens=tokens,
            call_ids={f"call_{chain}_{i}": length + 10},
            agent=AgentCounters(i, 1, True),
            created_at=time.time(),
            resource=RESOURCE,
            input_items=ITEMS,
        )
        turns.append(turn)
        length += len(tokens)
        base = turn
    return turns


async def bench_restore(url: str, sizes: list[int], samples: int) -> None:
    print(f"\n## cold restore ({samples} samples per chain, last response of the chain)")
    print("| turns | chain tokens | redis p50 / p99 ms | + record p50 / p99 ms |")
    print("|---|---|---|---|")
    rng = random.Random(1)
    store = make_store(url, f"bench-{os.getpid()}-restore")
    try:
        for n in sizes:
            turns = chain_turns(n, rng, chain=f"c{n}")
            for turn in turns:
                await store.append(turn)
            assert await store.flush()
            redis_times, total_times = [], []
            for _ in range(samples):
                started = time.perf_counter()
                snapshot = await store.restore("default", turns[-1].response_id)
                fetched = time.perf_counter()
                assert snapshot is not None
                record_from_snapshot(snapshot)
                redis_times.append(fetched - started)
                total_times.append(time.perf_counter() - started)
            tokens = n * TOKENS_PER_TURN
            print(
                f"| {n} | {tokens} | {ms(pct(redis_times, 0.5))} / {ms(pct(redis_times, 0.99))} "
                f"| {ms(pct(total_times, 0.5))} / {ms(pct(total_times, 0.99))} |"
            )
    finally:
        await store.close()


async def bench_sealed(url: str, sizes: list[int], samples: int) -> None:
    print(f"\n## sealed store:false handoff ({samples} samples per chain)")
    print("| turns | chain tokens | sealed bytes | seal + SET p50 / p99 ms | GETDEL + open p50 / p99 ms |")
    print("|---|---|---|---|---|")
    rng = random.Random(3)
    metrics = build_metrics(CollectorRegistry(), version="bench")
    store = RedisColdStore.from_url(url, metrics=metrics, prefix=f"bench-{os.getpid()}-sealed")
    handoffs = SealedHandoffs(store, metrics=metrics, ttl_seconds=60, max_bytes=64 * 1024 * 1024)
    key = derive(os.urandom(32))
    try:
        for n in sizes:
            tokens = tuple(rng.randrange(200_000) for _ in range(n * TOKENS_PER_TURN))
            snapshot = ChainSnapshot(
                "default", f"resp_s{n}", f"ck_s{n}", b"\x01" * 16, 50, tokens, {}, AgentCounters()
            )
            record = record_from_snapshot(snapshot, store=False)
            seal_times, take_times = [], []
            for _ in range(samples):
                started = time.perf_counter()
                await handoffs.seal("default", key, record)
                sealed = time.perf_counter()
                assert await handoffs.take("default", key) is not None
                seal_times.append(sealed - started)
                take_times.append(time.perf_counter() - sealed)
            size = len(seal(record, key, nonce=bytes(NONCE_BYTES)))  # what put_sealed stores
            print(
                f"| {n} | {len(tokens)} | {size} | {ms(pct(seal_times, 0.5))} / {ms(pct(seal_times, 0.99))} "
                f"| {ms(pct(take_times, 0.5))} / {ms(pct(take_times, 0.99))} |"
            )
    finally:
        await store.close()


async def bench_write(url: str, count: int, rate: float) -> None:
    rng = random.Random(2)
    store = make_store(url, f"bench-{os.getpid()}-write")
    sessions = 64
    turns = [t for s in range(sessions) for t in chain_turns(count // sessions, rng, chain=f"w{s}")]
    try:
        started = time.perf_counter()
        append_times = []
        for turn in turns:
            t0 = time.perf_counter()
            await store.append(turn)
            append_times.append(time.perf_counter() - t0)
        assert await store.flush()
        elapsed = time.perf_counter() - started
        size = sum(len(t.to_bytes()) + len(t.slim().to_bytes()) for t in turns[:200]) / 200 * len(turns)
        print(
            f"\n## write-behind ({len(turns)} turns, about {size / len(turns) / 1024:.1f} KiB each written)"
        )
        print(
            f"append on the turn's path: p50 {statistics.median(append_times) * 1e6:.1f} µs, "
            f"p99 {pct(append_times, 0.99) * 1e6:.1f} µs"
        )
        print(f"throughput: {len(turns) / elapsed:,.0f} turns/s, {size / elapsed / 1e6:.1f} MB/s")
        store.lags.clear()
        more = chain_turns(int(rate * 5), rng, chain="steady")
        interval = 1 / rate
        next_at = time.perf_counter()
        for turn in more:
            await store.append(turn)
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        assert await store.flush()
        lags = store.lags
        print(
            f"lag append → written at {rate:,.0f} turns/s for 5 s: p50 {ms(pct(lags, 0.5))} ms, "
            f"p99 {ms(pct(lags, 0.99))} ms, max {ms(max(lags))} ms"
        )
    finally:
        await store.close()


async def agent_session(
    base: str, turns: int, latencies: list[float], index: int, think: tuple[float, float]
) -> None:
    rng = random.Random(index)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{base}/responses", headers={"Authorization": f"Bearer {KEY}"}) as ws,
    ):
        event: dict[str, Any] = {
            "type": "response.create", "model": "tether-sim", "store": True, "tools": TOOLS,
            "instructions": "You are a coding agent.", "metadata": {"tether.tool_calls": "64"},
            "input": [{"type": "message", "role": "user", "content": f"Fix bug #{index} in the parser."}],
        }  # fmt: skip
        for _ in range(turns):
            started = time.perf_counter()
            await ws.send_str(orjson.dumps(event).decode())
            while True:
                msg = await ws.receive(timeout=60)
                data = orjson.loads(msg.data)
                if data["type"] in ("response.completed", "response.failed", "error"):
                    break
            latencies.append(time.perf_counter() - started)
            assert data["type"] == "response.completed", data
            response = data["response"]
            call = next(i for i in response["output"] if i["type"] == "function_call")
            event["previous_response_id"] = response["id"]
            event["input"] = [
                {"type": "function_call_output", "call_id": call["call_id"], "output": TOOL_OUTPUT}
            ]
            if think[1] > 0:
                await asyncio.sleep(rng.uniform(*think))  # the tool runs


WORKLOADS = {"agent": (1.0, (0.05, 0.15)), "saturated": (0.0, (0.0, 0.0))}  # sim speed, tool time


async def one_round(redis: str | None, sessions: int, turns: int, workload: str) -> list[float]:
    speed, think = WORKLOADS[workload]
    spec = ClusterSpec(boxes=1, workers=1, router=False, redis=redis, speed=speed, port=0, stop_timeout=10)
    latencies: list[float] = []
    async with LocalCluster(spec, sink=lambda *_: None) as cluster:
        base, warm = cluster.base_url, list[float]()
        await asyncio.gather(*(agent_session(base, 3, warm, i, think) for i in range(sessions)))
        await asyncio.gather(*(agent_session(base, turns, latencies, i, think) for i in range(sessions)))
    return latencies


async def bench_latency(url: str, sessions: int, turns: int, rounds: int, workload: str) -> None:
    speed, think = WORKLOADS[workload]
    print(
        f"\n## turn latency, {workload}: Redis off vs on ({sessions} sessions × {turns} turns, sim speed "
        f"{speed:g}, tool time {think[0] * 1000:.0f}–{think[1] * 1000:.0f} ms, {rounds} rounds each)"
    )
    results: dict[str, list[list[float]]] = {"off": [], "on": []}
    for _ in range(rounds):
        for mode in ("off", "on"):
            results[mode].append(await one_round(url if mode == "on" else None, sessions, turns, workload))
    print("| Redis | p50 ms (median of rounds) | p99 ms (median of rounds) | p99 per round |")
    print("|---|---|---|---|")
    p99s = {}
    for mode, runs in results.items():
        p50 = statistics.median(pct(r, 0.5) for r in runs)
        p99s[mode] = statistics.median(pct(r, 0.99) for r in runs)
        per_round = ", ".join(ms(pct(r, 0.99)) for r in runs)
        print(f"| {mode} | {ms(p50)} | {ms(p99s[mode])} | {per_round} |")
    print(f"p99 with Redis on / off: {p99s['on'] / p99s['off']:.3f} (target ≤ 1.05)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--chains", default="10,100,1000")
    parser.add_argument("--write-turns", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--turns", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--only-sealed", action="store_true", help="only the sealed store:false handoff")
    parser.add_argument("--workloads", default="agent,saturated", help="latency workloads to run")
    args = parser.parse_args()
    sizes = [int(n) for n in args.chains.split(",")]
    with redis_server(args.redis_url) as url:
        asyncio.run(bench_sealed(url, sizes, args.samples))
        if args.only_sealed:
            return
        asyncio.run(bench_restore(url, sizes, args.samples))
        asyncio.run(bench_write(url, args.write_turns, args.rate))
        for workload in [] if args.skip_latency else args.workloads.split(","):
            asyncio.run(bench_latency(url, args.sessions, args.turns, args.rounds, workload))


if __name__ == "__main__":
    main()
