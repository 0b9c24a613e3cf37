"""WebSocket permessage-deflate: wire bytes and box CPU per turn, with and without it.

    .venv/bin/python benchmarks/deflate_bench.py [--runs 3] [--workloads codex,agent]
                                                 [--configs w15,w15_no_takeover,w12]
                                                 [--connections 200] [--json out.json]

What runs: one `tether-gpu-worker` (sim engine, --speed 0: no model time) and one `tether-api-box`
process on loopback, restarted for each configuration with its TETHER_BOX_WS_DEFLATE_* settings; this
script is the client (the `websockets` library, which the openai SDK uses) behind a counting TCP proxy,
so `wire` is every byte on the connection (frame headers included), and `payload` the JSON text.

Workloads (each a WebSocket agent run, store:false, previous_response_id + the new items per turn):
- codex: what the Codex CLI sends: ~10 KB of instructions and ~40 KB of function tool definitions
  resent on every turn; tool outputs are 4 KB pieces of Python source. The tools and instructions are
  built from the docstrings and signatures of Python's standard library (deterministic for a Python
  version, and real technical prose, so their compressibility is not a synthetic best case).
- agent: loadtest/workload.py's AgentRun (20 tool calls, 4096-byte tool outputs, 3 small tools).

Box configurations: `w15` (15-bit window, context takeover, 320 KiB per connection: zlib memLevel 8),
`w15_no_takeover` (the same without context takeover), `w12` (12-bit window, 96 KiB per connection:
memLevel 6; the box's defaults). On each box,
runs of two clients alternate: `plain` offers nothing (no compression), `deflate` offers
`permessage-deflate; client_max_window_bits` (websockets' default, zlib level 6 and memLevel 5 on the
client's side), so each pair is measured under the same machine load.

Per turn: up/down wire bytes, up/down payload bytes, box CPU seconds (the box process's schedstat, every
thread, between sending the create and reading its terminal event). Figures are medians over `--runs`,
then averaged over the turns after the first (the first turn of a run is reported on its own). `codec`
is the deflate work alone, replayed in this process on the same payloads with the box's settings (best
of 5 repetitions): on a busy machine the end-to-end CPU figure is noisy, this one much less.
`--connections N` also opens N connections per configuration that each run one small turn and stay
open, and reports the box's resident memory growth per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import statistics
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from box_bench import KEY, Cluster  # noqa: E402

from loadtest.workload import AgentRun, AgentShape  # noqa: E402

_W15 = {"TETHER_BOX_WS_DEFLATE_WINDOW_BITS": "15", "TETHER_BOX_WS_DEFLATE_MAX_CONNECTION_BYTES": "327680"}
CONFIGS: dict[str, dict[str, str]] = {
    "w15": _W15,
    "w15_no_takeover": {**_W15, "TETHER_BOX_WS_DEFLATE_CONTEXT_TAKEOVER": "0"},
    "w12": {"TETHER_BOX_WS_DEFLATE_WINDOW_BITS": "12", "TETHER_BOX_WS_DEFLATE_MAX_CONNECTION_BYTES": "98304"},
}
TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})
CODEX_TOOL_BYTES = 40_000
CODEX_INSTRUCTION_BYTES = 10_000
CODEX_OUTPUT_BYTES = 4096
CODEX_TOOL_CALLS = 20


# ------------------------------------------------------------------------------------------ workloads


def _stdlib_functions() -> list[Any]:
    import json
    import os.path
    import pathlib
    import shutil
    import subprocess
    import tarfile
    import textwrap
    import zipfile

    functions = []
    for module in (shutil, subprocess, os.path, json, textwrap, tarfile, zipfile, pathlib.Path):
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or not callable(obj) or not inspect.getdoc(obj):
                continue
            try:
                inspect.signature(obj)
            except (TypeError, ValueError):
                continue
            functions.append((f"{getattr(module, '__name__', 'path')}_{name}".replace(".", "_"), obj))
    return functions


def codex_tools() -> list[dict[str, Any]]:
    """~40 KB of function tools: stdlib functions, their docstrings and parameters as JSON schemas."""
    tools: list[dict[str, Any]] = []
    size = 0
    for name, obj in _stdlib_functions():
        doc = inspect.getdoc(obj) or ""
        params = {
            p.name: {"type": "string", "description": f"The {p.name.replace('_', ' ')} argument of {name}."}
            for p in inspect.signature(obj).parameters.values()
            if p.name not in ("self", "args", "kwargs")
        }
        tool = {
            "type": "function",
            "name": name[:64],
            "description": doc[:1500],
            "parameters": {"type": "object", "properties": params, "required": list(params)[:1]},
        }
        tools.append(tool)
        size += len(orjson.dumps(tool))
        if size >= CODEX_TOOL_BYTES:
            return tools
    raise RuntimeError("not enough standard library functions for the tool set")


def codex_instructions() -> str:
    import asyncio.base_events
    import subprocess

    docs = [
        inspect.getdoc(obj) or ""
        for cls in (asyncio.base_events.BaseEventLoop, subprocess.Popen)
        for _, obj in sorted(vars(cls).items())
        if callable(obj)
    ]
    return "\n\n".join(docs)[:CODEX_INSTRUCTION_BYTES]


def codex_outputs() -> list[str]:
    import asyncio.streams
    import json.decoder
    import subprocess

    text = "".join(inspect.getsource(m) for m in (asyncio.streams, json.decoder, subprocess))
    return [text[i : i + CODEX_OUTPUT_BYTES] for i in range(0, len(text), CODEX_OUTPUT_BYTES)][:64]


@dataclass
class CodexRun:
    """A Codex-shaped agent run: big instructions and tools on every turn, then one tool output."""

    tools: list[dict[str, Any]]
    instructions: str
    outputs: list[str]
    previous: str | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    finished: bool = False

    def __post_init__(self) -> None:
        self.pending = [{"type": "message", "role": "user", "content": "Fix the failing test in tests/."}]

    def next_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "response.create",
            "model": "tether-sim",
            "store": False,
            "instructions": self.instructions,
            "tools": self.tools,
            "input": self.pending,
            "parallel_tool_calls": False,
            "metadata": {"tether.tool_calls": str(CODEX_TOOL_CALLS)},
        }
        if self.previous is not None:
            body["previous_response_id"] = self.previous
        return body

    def record(self, response: dict[str, Any]) -> None:
        self.previous = response["id"]
        calls = [item for item in response["output"] if item["type"] == "function_call"]
        self.pending = []
        for call in calls:
            text = self.outputs[self.calls % len(self.outputs)]
            self.calls += 1
            self.pending.append({"type": "function_call_output", "call_id": call["call_id"], "output": text})
        self.finished = not calls


def new_run(workload: str, index: int) -> Any:
    if workload == "codex":
        return CodexRun(CODEX_TOOLS, CODEX_INSTRUCTIONS, CODEX_OUTPUTS)
    return AgentRun("ws", AgentShape(tool_calls=20, output_bytes=4096), run_id=f"deflate-{index}")


CODEX_TOOLS = codex_tools()
CODEX_INSTRUCTIONS = codex_instructions()
CODEX_OUTPUTS = codex_outputs()


# ---------------------------------------------------------------------------------------------- proxy


class CountingProxy:
    """A TCP relay in front of the box that counts the bytes of every connection, both ways."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0
        self.down = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        box_reader, box_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await src.read(1 << 16):
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, box_writer, True), pump(box_reader, writer, False))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


# ----------------------------------------------------------------------------------------------- runs


@dataclass
class Turn:
    up_wire: int
    down_wire: int
    up_payload: int
    down_payload: int
    cpu: float
    frames: tuple[bytes, list[bytes]] = (b"", [])  # the create sent and the events received (payloads)


async def one_run(
    cluster: Cluster, proxy: CountingProxy, workload: str, offer: bool, index: int
) -> list[Turn]:
    run = new_run(workload, index)
    url = f"ws://127.0.0.1:{proxy.port}/v1/responses"
    turns: list[Turn] = []
    async with websockets.connect(
        url,
        additional_headers={"Authorization": f"Bearer {KEY}"},
        compression="deflate" if offer else None,
        max_size=None,
    ) as ws:
        assert ws.response is not None
        if offer != ("permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")):
            raise RuntimeError("deflate was not negotiated as configured")
        while not run.finished:
            frame = orjson.dumps(run.next_body()).decode()
            up0, down0, cpu0 = proxy.up, proxy.down, cluster.box_cpu_seconds()
            await ws.send(frame)
            received: list[bytes] = []
            while True:
                message = await ws.recv(decode=False)
                received.append(message)
                event = orjson.loads(message)
                if event["type"] in TERMINAL:
                    break
            cpu = cluster.box_cpu_seconds() - cpu0
            if event["type"] != "response.completed":
                raise RuntimeError(f"turn failed: {str(event)[:300]}")
            down_payload = sum(map(len, received))
            turns.append(
                Turn(
                    proxy.up - up0,
                    proxy.down - down0,
                    len(frame),
                    down_payload,
                    cpu,
                    (frame.encode(), received),
                )
            )
            run.record(event["response"])
    return turns


# The box's compression settings of each configuration: window bits, memLevel, context takeover.
CODEC: dict[str, tuple[int, int, bool]] = {
    "w15": (15, 8, True),
    "w15_no_takeover": (15, 8, False),
    "w12": (12, 6, True),
}
_TAIL = b"\x00\x00\xff\xff"


def codec_seconds(turns: list[Turn], config: str) -> float:
    """The box's deflate work alone for these turns, per turn after the first (best of 5): inflating each
    create as the client (websockets: zlib level 6, memLevel 5) compressed it, and deflating every event
    as the box does (level 1, the configuration's window, memLevel and takeover)."""
    bits, mem_level, takeover = CODEC[config]
    later = turns[1:]
    client = zlib.compressobj(6, zlib.DEFLATED, -bits, 5)
    blobs = []
    for turn in later:
        if not takeover:
            client = zlib.compressobj(6, zlib.DEFLATED, -bits, 5)
        blobs.append((client.compress(turn.frames[0]) + client.flush(zlib.Z_SYNC_FLUSH))[: -len(_TAIL)])
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        inflater = zlib.decompressobj(-15)
        deflater = zlib.compressobj(1, zlib.DEFLATED, -bits, mem_level)
        flush = zlib.Z_SYNC_FLUSH if takeover else zlib.Z_FULL_FLUSH
        for turn, blob in zip(later, blobs, strict=True):
            inflater.decompress(blob + _TAIL)
            for message in turn.frames[1]:
                deflater.compress(message)
                deflater.flush(flush)
        best = min(best, time.process_time() - started)
    return best / len(later)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def memory_per_connection(cluster: Cluster, proxy: CountingProxy, offer: bool, count: int) -> float:
    """Box RSS growth per open connection that ran one small turn."""
    url = f"ws://127.0.0.1:{proxy.port}/v1/responses"
    before = rss_bytes(cluster.box.pid)
    conns = []
    try:
        for _ in range(count):
            ws = await websockets.connect(
                url,
                additional_headers={"Authorization": f"Bearer {KEY}"},
                compression="deflate" if offer else None,
                max_size=None,
            )
            conns.append(ws)
            body = {"type": "response.create", "model": "tether-sim", "store": False, "input": "hello " * 200}
            await ws.send(orjson.dumps(body).decode())
            while orjson.loads(await ws.recv())["type"] not in TERMINAL:
                pass
        await asyncio.sleep(0.5)
        return (rss_bytes(cluster.box.pid) - before) / count
    finally:
        for ws in conns:
            await ws.close()


async def run_config(name: str, workloads: list[str], runs: int, connections: int) -> dict[str, Any]:
    """One box with the configuration's settings; runs of plain clients (offering nothing) and of
    compressing clients alternate on it, so that both see the same machine load."""
    cluster = await asyncio.to_thread(Cluster.start, CONFIGS[name])
    proxy = CountingProxy(int(cluster.base_url.rsplit(":", 1)[1]))
    await proxy.start()
    out: dict[str, Any] = {"plain": {}, "deflate": {}}
    try:
        for workload in workloads:
            plain: list[list[Turn]] = []
            deflated: list[list[Turn]] = []
            for i in range(runs):
                plain.append(await one_run(cluster, proxy, workload, False, 2 * i))
                deflated.append(await one_run(cluster, proxy, workload, True, 2 * i + 1))
            out["plain"][workload] = summarize(plain)
            out["deflate"][workload] = summarize(deflated)
            out["deflate"][workload]["codec_seconds"] = codec_seconds(deflated[0], name)
            print(f"[{name}] {workload} done", file=sys.stderr)
        if connections:
            out["plain"]["memory_per_connection"] = await memory_per_connection(
                cluster, proxy, False, connections
            )
            out["deflate"]["memory_per_connection"] = await memory_per_connection(
                cluster, proxy, True, connections
            )
    finally:
        await proxy.stop()
        await asyncio.to_thread(cluster.stop)
    return out


def summarize(runs: list[list[Turn]]) -> dict[str, Any]:
    n = min(len(r) for r in runs)
    keys = ("up_wire", "down_wire", "up_payload", "down_payload", "cpu")
    medians = {k: [statistics.median(getattr(r[i], k) for r in runs) for i in range(n)] for k in keys}
    return {
        "turns": n,
        "first": {k: medians[k][0] for k in keys},
        "later_mean": {k: statistics.fmean(medians[k][1:]) for k in keys},
    }


def report(results: dict[str, dict[str, Any]], workloads: list[str]) -> None:
    for workload in workloads:
        print(f"\n{workload}: per turn after the first (turn 1 in parentheses)")
        print(
            f"{'box config':<16} {'client':<8} {'up wire B':>18} {'up payload B':>18} {'down wire B':>18} "
            f"{'down payload B':>18} {'box CPU ms':>16} {'codec ms':>9}"
        )
        for name, result in results.items():
            for client in ("plain", "deflate"):
                r = result[client][workload]
                later, first = r["later_mean"], r["first"]
                cells = [
                    f"{later[k]:>9,.0f} ({first[k]:>6,.0f})"
                    for k in ("up_wire", "up_payload", "down_wire", "down_payload")
                ]
                cpu = f"{later['cpu'] * 1e3:>7.2f} ({first['cpu'] * 1e3:>5.2f})"
                codec = f"{r['codec_seconds'] * 1e3:>9.2f}" if "codec_seconds" in r else f"{'-':>9}"
                row = " ".join(f"{c:>18}" for c in cells)
                print(f"{name:<16} {client:<8} {row} {cpu:>16} {codec}")
    memory = [(n, r) for n, r in results.items() if "memory_per_connection" in r["plain"]]
    if memory:
        print("\nbox resident memory per open connection (KiB), plain clients / deflate clients:")
        for name, result in memory:
            plain, deflated = (result[c]["memory_per_connection"] / 1024 for c in ("plain", "deflate"))
            print(f"{name:<16} {plain:>8.1f} / {deflated:>8.1f}")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per client kind (they alternate)")
    parser.add_argument("--workloads", default="codex,agent")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--connections", type=int, default=0, help="also measure memory with N connections")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    workloads = args.workloads.split(",")
    print(
        f"codex request: instructions {len(CODEX_INSTRUCTIONS):,} B, {len(CODEX_TOOLS)} tools "
        f"{len(orjson.dumps(CODEX_TOOLS)):,} B",
        file=sys.stderr,
    )
    results = {}
    for name in args.configs.split(","):
        results[name] = await run_config(name, workloads, args.runs, args.connections)
    report(results, workloads)
    if args.json:
        await asyncio.to_thread(
            Path(args.json).write_bytes, orjson.dumps(results, option=orjson.OPT_INDENT_2)
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(main())
