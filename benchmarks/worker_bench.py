"""Benchmark of the gpu_worker with the sim engine. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/worker_bench.py [--calls 2000] [--turns 20] [--tool-output-bytes 2000]

1. Tokenizer: bytes per token of the one tokenizer (o200k_base) on representative agent traffic
   (tests/unit/gpu_worker/worker_corpus.py: prose, code, tool JSON).
2. Overhead, sim at speed 0 (no simulated delays): round-trip time per call and streamed events per
   second, once against a `tether-gpu-worker` child process (client and worker on their own cores) and
   once with worker and client in this process (one event loop).
3. Session cache: one agent run of N turns (instructions + tools + a user message, N-1 tool calls with
   outputs of S bytes, then the answer) three ways: with the session cache (cache_key + deltas, the
   WebSocket mode), as keyless full chains served by the worker's block-hash prefix cache (the HTTP
   baseline), and with no cache (the chain is dropped after each turn). A sweep over S follows, then the
   same run with the H100 timing model (speed 1) to show what prefill savings do to latency.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu_worker.client import AgentState, Done, GenerationRequest, Prefill, ToolSpec, WorkerPool  # noqa: E402
from gpu_worker.config import WorkerSettings  # noqa: E402
from gpu_worker.engines.sim import SimEngine  # noqa: E402
from gpu_worker.server.app import WorkerServer  # noqa: E402
from gpu_worker.wire import chat, tokenizer  # noqa: E402


def _load_corpus() -> ModuleType:
    path = ROOT / "tests" / "unit" / "gpu_worker" / "worker_corpus.py"
    spec = importlib.util.spec_from_file_location("worker_corpus", path)
    if spec is None or spec.loader is None:
        raise ImportError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CORPUS = _load_corpus()
TOOLS = tuple(ToolSpec(t["name"], t["description"], json.dumps(t["parameters"])) for t in CORPUS.TOOLS)
MODES = {"session": "session cache", "prefix": "prefix cache", "none": "no cache"}


# ------------------------------------------------------------------------------------------ tokenizer
def bench_tokenizer() -> None:
    print("== tokenizer: o200k_base bytes per token (tests/unit/gpu_worker/worker_corpus.py)")
    rows = [(c, len(t.encode()), tokenizer.count(t)) for c, t in CORPUS.samples().items()]
    rows.append(("all", sum(r[1] for r in rows), sum(r[2] for r in rows)))
    for category, size, tokens in rows:
        print(f"   {category:<10} {size:>7} bytes {tokens:>6} tokens  {size / tokens:5.2f} bytes/token")


# ------------------------------------------------------------------------------------------- workers
@asynccontextmanager
async def in_process_worker(speed: float, **settings: Any) -> Any:
    """A worker in this process, and a started pool on it."""
    values: dict[str, Any] = {"port": 0, "metrics_port": -1, "speed": speed, "drain_seconds": 1.0, **settings}
    config = WorkerSettings(**values)
    server = WorkerServer(config, SimEngine(config.timing, config.agent, speed=speed))
    await server.start()
    pool = WorkerPool([server.address])
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()
        await server.stop(drain_seconds=0)


@asynccontextmanager
async def child_worker(speed: float) -> Any:
    """`tether-gpu-worker` as a child process, and a started pool on it."""
    command = [
        sys.executable,
        "-m",
        "gpu_worker",
        "--port",
        "0",
        "--metrics-port",
        "-1",
        "--speed",
        str(speed),
    ]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().split()
        pool = WorkerPool([line[2]])  # "tether-gpu-worker serving HOST:PORT metrics off"
        await pool.start()
        try:
            yield pool
        finally:
            await pool.close()
    finally:
        process.terminate()
        await process.wait()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------------------------------- overhead
async def bench_overhead(calls: int, stream_tokens: int, streams: int) -> None:
    for label, worker in (
        ("tether-gpu-worker child process", child_worker),
        ("in process", in_process_worker),
    ):
        print(f"== overhead, sim at speed 0, worker {label}, loopback gRPC")
        async with worker(0.0) as pool:
            await _call_latency(pool, calls)
            for concurrency in (1, streams):
                events, elapsed = await _stream_rate(pool, stream_tokens, concurrency)
                print(
                    f"   {concurrency:>2} concurrent {stream_tokens}-token answers: {events} events"
                    f" in {elapsed:.2f} s = {events / elapsed:,.0f} events/s"
                )


async def _call_latency(pool: WorkerPool, calls: int) -> None:
    chain = chat.render_instructions(CORPUS.INSTRUCTIONS) + chat.render_message("user", "hi")
    for label, generate in (("prefill-only call", False), ("20-token answer call", True)):
        latencies = []
        for i in range(calls):
            req = GenerationRequest(
                request_id=f"o{i}",
                cache_key=f"overhead-{i % 64}",
                chain=chain,
                generate=generate,
                agent=AgentState(tool_calls_since_user_message=3),
                metadata={"tether.answer_tokens": "18"},  # + 2 chat markers = 20 output tokens
            )
            started = time.perf_counter()
            async for _ in pool.generate(req):
                pass
            latencies.append(time.perf_counter() - started)
        warm = latencies[calls // 10 :]
        print(
            f"   {label:<21} {calls} calls: mean {statistics.fmean(warm) * 1e3:6.3f} ms"
            f"  p50 {percentile(warm, 0.5) * 1e3:6.3f} ms  p99 {percentile(warm, 0.99) * 1e3:6.3f} ms"
        )


async def _stream_rate(pool: WorkerPool, tokens: int, concurrency: int) -> tuple[int, float]:
    chain = chat.render_message("user", "write a long answer")

    async def one(n: int) -> int:
        req = GenerationRequest(
            request_id=f"s{n}",
            cache_key=f"stream-{n}",
            chain=chain,
            max_output_tokens=tokens + 2,
            agent=AgentState(tool_calls_since_user_message=3),
            metadata={"tether.answer_tokens": str(tokens)},
        )
        return sum([1 async for _ in pool.generate(req)])

    started = time.perf_counter()
    counts = await asyncio.gather(*(one(n) for n in range(concurrency)))
    return sum(counts), time.perf_counter() - started


# ----------------------------------------------------------------------------------------- agent run
@dataclass
class TurnStats:
    prompt: int
    cached: int
    computed: int
    ttft: float  # request sent -> first output event


def run_header(guides: int = 1) -> list[int]:
    """The first turn's chain: instructions (the agent prompt plus `guides` copies of a project guide, as
    coding agents include their AGENTS.md), tool definitions, the user message."""
    tools = [
        {"name": t.name, "description": t.description, "parameters": json.loads(t.parameters_json)}
        for t in TOOLS
    ]
    instructions = "\n\n".join([CORPUS.INSTRUCTIONS, *[CORPUS.PROJECT_GUIDE] * guides])
    user = chat.render_message("user", CORPUS.USER_MESSAGES[0])
    return chat.render_instructions(instructions) + chat.render_tools(tools) + user


def tool_output(turn: int, size: int) -> str:
    """S bytes of source code, different for each turn (what a read_file returns)."""
    code: str = CORPUS.samples()["code"]
    start = (turn * 997) % max(len(code) - size, 1)
    return (code * (size // len(code) + 2))[start : start + size]


async def agent_run(
    pool: WorkerPool, turns: int, output_bytes: int, mode: str, guides: int = 1
) -> list[TurnStats]:
    """One run (tool calls until the last turn, then the answer); per-turn prefill statistics.
    mode "session": a cache key and deltas; "prefix": keyless full chains; "none": full chains, dropped
    after every turn so nothing is left to reuse."""
    chain, done, stats = run_header(guides), None, []
    loop = asyncio.get_running_loop()
    for turn in range(turns):
        held: dict[str, Any] = {}
        if mode == "session" and done is not None:
            held = {"held_len": done.chain_len, "held_digest": done.chain_digest}
        req = GenerationRequest(
            request_id=f"turn-{turn}",
            cache_key=None if mode == "prefix" else "agent-run",
            chain=list(chain),
            tools=TOOLS,
            agent=AgentState(turn, user_messages=1, last_item_is_tool_output=turn > 0),
            metadata={"tether.tool_calls": str(turns - 1), "tether.argument_bytes": "80"},
            seed=1,
            **held,
        )
        started, ttft, prefill = loop.time(), 0.0, None
        async for event in pool.generate(req):
            if isinstance(event, Prefill):
                prefill = event
            elif isinstance(event, Done):
                done = event
            elif not ttft:
                ttft = loop.time() - started
        if prefill is None or done is None:
            raise RuntimeError("a turn ended without Prefill or Done")
        stats.append(TurnStats(prefill.prompt_tokens, prefill.cached_tokens, prefill.computed_tokens, ttft))
        if mode == "none":
            await pool.drop("agent-run")
        chain = [*chain, *done.output_token_ids]
        if done.finish_reason == "tool_call":
            chain += chat.render_function_call_output(tool_output(turn, output_bytes))
    return stats


def cached_share(stats: list[TurnStats]) -> float:
    """Input tokens served from cache, turns 2..N."""
    return sum(s.cached for s in stats[1:]) / sum(s.prompt for s in stats[1:])


async def run_modes(turns: int, output_bytes: int, speed: float) -> dict[str, list[TurnStats]]:
    runs = {}
    for mode in MODES:
        async with in_process_worker(speed) as pool:
            runs[mode] = await agent_run(pool, turns, output_bytes, mode)
    return runs


async def bench_agent_run(turns: int, output_bytes: int) -> None:
    print(
        f"== agent run: {turns} turns, first turn {len(run_header())} tokens, tool outputs {output_bytes} B"
    )
    runs = await run_modes(turns, output_bytes, 0.0)
    print("   turn  prompt | session cache: cached computed | prefix cache: cached computed | no cache")
    for n, (s, p, u) in enumerate(zip(runs["session"], runs["prefix"], runs["none"], strict=True), start=1):
        assert s.prompt == p.prompt == u.prompt  # the same run in every mode
        print(
            f"   {n:>4} {s.prompt:>7} | {s.cached:>21} {s.computed:>8} | {p.cached:>20} {p.computed:>8} |",
            end="",
        )
        print(f" {u.computed:>8}")
    computed = ", ".join(f"{MODES[m]} {sum(s.computed for s in stats)}" for m, stats in runs.items())
    print(f"   prefill tokens computed, all turns: {computed}")
    shares = ", ".join(f"{MODES[m]} {cached_share(stats):.1%}" for m, stats in runs.items())
    print(f"   input tokens served from cache, turns 2-{turns}: {shares}")
    lowest = min(s.cached / s.prompt for s in runs["session"][1:])
    print(f"   session cache, lowest single turn from turn 2: {lowest:.1%}")


async def bench_workload_sweep(turns: int, guides: list[int], sizes: list[int]) -> None:
    print(f"== session cache by workload: input tokens served from cache, turns 2-{turns}")
    print("   first turn (tokens) | " + " | ".join(f"tool outputs {size:>5} B" for size in sizes))
    for count in guides:
        cells = []
        for size in sizes:
            async with in_process_worker(0.0) as pool:
                stats = await agent_run(pool, turns, size, "session", guides=count)
            cells.append(f"{cached_share(stats):>20.1%}")
        print(f"   {len(run_header(count)):>19} | " + " | ".join(cells))


async def bench_agent_run_timed(turns: int, output_bytes: int) -> None:
    print(f"== the same run, H100 timing model (speed 1): request -> first output event, turns 2-{turns}")
    for mode, stats in (await run_modes(turns, output_bytes, 1.0)).items():
        later = [s.ttft * 1e3 for s in stats[1:]]
        print(f"   {MODES[mode]:<14} mean {statistics.fmean(later):7.2f} ms   max {max(later):7.2f} ms")


# ---------------------------------------------------------------------------------------------- main
async def main(args: argparse.Namespace) -> None:
    bench_tokenizer()
    tokenizer.warm()
    await bench_overhead(args.calls, args.stream_tokens, args.streams)
    await bench_agent_run(args.turns, args.tool_output_bytes)
    await bench_workload_sweep(args.turns, [1, 4, 12], [500, 2000, 8000])
    if not args.no_timed:
        await bench_agent_run_timed(args.turns, args.tool_output_bytes)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls per latency measurement")
    parser.add_argument("--stream-tokens", type=int, default=2000, help="tokens per streamed answer")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams for events/s")
    parser.add_argument("--turns", type=int, default=20, help="turns of the agent run")
    parser.add_argument("--tool-output-bytes", type=int, default=2000, help="bytes of each tool output")
    parser.add_argument("--no-timed", action="store_true", help="skip the run with the H100 timing model")
    return parser.parse_args()


def _runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:
        print("event loop: asyncio")
        return asyncio.Runner()
    print("event loop: uvloop")
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


if __name__ == "__main__":
    arguments = _parse()
    with _runner() as runner:
        runner.run(main(arguments))
