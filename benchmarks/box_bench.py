"""API box benchmark: client→server bytes and box CPU per turn of a 20-tool-call agent run, by mode.

    .venv/bin/python benchmarks/box_bench.py [--runs 5] [--tool-calls 20] [--output-tokens 10000]
                                             [--context-tokens 0] [--json out.json]

What runs: one `tether-gpu-worker` process (sim engine, --speed 0: no model time, so the figures are the
box's own cost) and one `tether-api-box` process, both on loopback; this script is the client. An agent run
is: instructions + 3 tool definitions + a user message (with `--context-tokens` of attached repository text),
then `--tool-calls` function calls, each answered by a tool output of about `--output-tokens` tokens
(deterministic code-like text), then the final answer. With the defaults the history grows by ~10k tokens a
turn, from ~10k to ~200k tokens.

Modes, each run on its own (the box and worker are restarted between modes):
- ws: WebSocket mode, store:false, one connection; each turn sends only the new function_call_output and
  previous_response_id (what an agent on the openai SDK sends with responses.connect).
- http: HTTP full context, store:false: each turn POSTs the whole history (the items the server returned
  are echoed back). This is the best honest stateless design: orjson on both sides, a kept-alive
  connection, and the worker's block-hash prefix cache (requests carry no cache key and are routed by
  their first block, so every turn meets the worker that already holds the prefix; see `cached` below).
- http_chained: HTTP with store:true and previous_response_id (new items only, over HTTP).

Measured per turn: `up` = payload bytes client→server (WebSocket frame payloads / HTTP bodies, as the box
counts them in tether_box_bytes_total), `cpu` = box CPU seconds from the box process's schedstat (every
thread, nanosecond resolution) between sending the turn and receiving its terminal event, `hist` = prompt
tokens, `cached` = prompt tokens the worker served from its cache. Each figure is the median over `--runs`
runs. Checks printed at the end: WS upload ≤ 10% of HTTP from turn 5 on; box CPU of a WS tool-call turn at
~200k tokens of history within 1.5× of one at ~10k (while HTTP grows with history).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu_worker.wire import tokenizer  # noqa: E402

KEY = "tether-dev-key"
MODEL = "tether-sim"
INSTRUCTIONS = (
    "You are a coding agent working in a large repository. Read files with the tools, reason about the code, "
    "and answer with a concise patch plan. Prefer reading before editing. Never invent file contents."
)
TOOLS = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file of the repository and return its text.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
    {
        "type": "function",
        "name": "grep",
        "description": "Search the repository for a regular expression; returns matching lines.",
        "parameters": {
            "type": "object",
            "properties": {"pattern": {"type": "string"}, "glob": {"type": "string"}},
            "required": ["pattern"],
        },
    },
    {
        "type": "function",
        "name": "run_tests",
        "description": "Run the test suite (optionally a subset) and return the report.",
        "parameters": {"type": "object", "properties": {"selector": {"type": "string"}}},
    },
]
WORDS = (
    "def",
    "class",
    "return",
    "self",
    "value",
    "result",
    "config",
    "request",
    "response",
    "session",
    "token",
    "chain",
    "cache",
    "worker",
    "box",
    "import",
    "from",
    "async",
    "await",
    "yield",
    "raise",
    "error",
    "message",
    "index",
    "length",
    "buffer",
    "stream",
    "event",
    "handler",
    "state",
)


def tool_output(seed: int, target_tokens: int) -> str:
    """Deterministic code-like text of about `target_tokens` tokens."""
    rng = random.Random(seed)
    lines: list[str] = []
    text = ""
    while True:
        for _ in range(200):
            indent = "    " * rng.randint(0, 3)
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
            lines.append(f"{indent}{words}_{rng.randint(0, 999)}({rng.choice(WORDS)}={rng.randint(0, 99)})")
        text = "\n".join(lines)
        if tokenizer.count(text) >= target_tokens:
            return text


# ----------------------------------------------------------------------------------------------- processes


def _start(cmd: list[str], env: dict[str, str], prefix: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith(prefix):
        proc.kill()
        raise RuntimeError(f"{cmd[0]} did not start: {line!r}")
    return proc, line.split()[2]


@dataclass
class Cluster:
    worker: subprocess.Popen[str]
    box: subprocess.Popen[str]
    base_url: str

    @classmethod
    def start(cls, box_env: dict[str, str] | None = None) -> Cluster:
        """Start the worker and the box (`box_env`: extra TETHER_BOX_* settings of the box)."""
        env = {
            **os.environ,
            "TETHER_WORKER_MAX_PROMPT_TOKENS": "400000",
            "TETHER_WORKER_KV_BUDGET_TOKENS": "2000000",
            "TETHER_WORKER_LOG_LEVEL": "WARNING",
        }
        python = sys.executable
        worker, target = _start(
            [python, "-m", "gpu_worker", "--port", "0", "--metrics-port", "-1", "--speed", "0"],
            env,
            "tether-gpu-worker serving",
        )
        box, url = _start(
            [python, "-m", "api_box", "--port", "0", "--admin-port", "-1", "--dev", "--workers", target,
             "--log-level", "WARNING"],
            {**env, "TETHER_BOX_MAX_CHAIN_TOKENS": "1000000", **(box_env or {})},
            "tether-api-box serving",
        )  # fmt: skip
        return cls(worker, box, url)

    def box_cpu_seconds(self) -> float:
        """CPU time of every thread of the box process (schedstat: nanoseconds on a CPU)."""
        total = 0
        for task in Path(f"/proc/{self.box.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue  # a thread that just exited
        return total / 1e9

    def stop(self) -> None:
        for proc in (self.box, self.worker):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


# --------------------------------------------------------------------------------------------------- runs


@dataclass
class Turn:
    up: int
    cpu: float
    hist: int
    cached: int
    wall: float


@dataclass
class Agent:
    """The client's view of one agent run: the history (for full context) and the next input."""

    outputs: list[str]
    metadata: dict[str, str]
    context: str = ""
    history: list[Any] = field(default_factory=list)
    pending: list[Any] = field(default_factory=list)
    previous: str | None = None
    calls: int = 0

    def first_input(self) -> list[Any]:
        parts = [{"type": "input_text", "text": "Fix the failing test."}]
        if self.context:
            parts.append({"type": "input_text", "text": "\n\nRepository files:\n" + self.context})
        self.history = [{"type": "message", "role": "user", "content": parts}]
        return self.history

    def answer(self, response: dict[str, Any]) -> bool:
        """Take a completed response; prepare the tool outputs. False when the agent is done."""
        self.previous = response["id"]
        calls = [item for item in response["output"] if item["type"] == "function_call"]
        self.history += response["output"]
        self.pending = []
        for call in calls:
            text = self.outputs[self.calls % len(self.outputs)]
            self.calls += 1
            self.pending.append({"type": "function_call_output", "call_id": call["call_id"], "output": text})
        self.history += self.pending
        return bool(calls)

    def body(self, mode: str) -> dict[str, Any]:
        common = {"model": MODEL, "instructions": INSTRUCTIONS, "tools": TOOLS, "metadata": self.metadata}
        if mode == "http":
            return {**common, "input": self.history, "store": False}
        if self.previous is None:
            return {**common, "input": self.history, "store": mode == "http_chained"}
        return {
            **common,
            "input": self.pending,
            "store": mode == "http_chained",
            "previous_response_id": self.previous,
        }


def _turn(up: int, cpu: float, usage: dict[str, Any], wall: float) -> Turn:
    return Turn(up, cpu, usage["input_tokens"], usage["input_tokens_details"]["cached_tokens"], wall)


async def run_ws(cluster: Cluster, agent: Agent) -> list[Turn]:
    turns: list[Turn] = []
    agent.first_input()
    async with aiohttp.ClientSession() as session:
        url = cluster.base_url.replace("http", "ws", 1) + "/v1/responses"
        async with session.ws_connect(url, headers={"Authorization": f"Bearer {KEY}"}, max_msg_size=0) as ws:
            while True:
                frame = orjson.dumps({"type": "response.create", **agent.body("ws")})
                cpu0, t0 = cluster.box_cpu_seconds(), time.perf_counter()
                await ws.send_str(frame.decode())
                while True:
                    event = orjson.loads((await ws.receive()).data)
                    if event["type"] in ("response.completed", "response.failed", "error"):
                        break
                wall, cpu = time.perf_counter() - t0, cluster.box_cpu_seconds() - cpu0
                if event["type"] != "response.completed":
                    raise RuntimeError(f"ws turn failed: {event}")
                usage = event["response"]["usage"]
                turns.append(
                    Turn(
                        len(frame),
                        cpu,
                        usage["input_tokens"],
                        usage["input_tokens_details"]["cached_tokens"],
                        wall,
                    )
                )
                if not agent.answer(event["response"]):
                    return turns


async def run_http(cluster: Cluster, agent: Agent, mode: str) -> list[Turn]:
    turns: list[Turn] = []
    agent.first_input()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        while True:
            body = orjson.dumps(agent.body(mode))
            cpu0, t0 = cluster.box_cpu_seconds(), time.perf_counter()
            async with session.post(cluster.base_url + "/v1/responses", data=body, headers=headers) as resp:
                raw = await resp.read()
            wall, cpu = time.perf_counter() - t0, cluster.box_cpu_seconds() - cpu0
            response = orjson.loads(raw)
            if resp.status != 200 or response.get("status") != "completed":
                raise RuntimeError(f"{mode} turn failed: {resp.status} {raw[:300]!r}")
            usage = response["usage"]
            turns.append(
                Turn(
                    len(body),
                    cpu,
                    usage["input_tokens"],
                    usage["input_tokens_details"]["cached_tokens"],
                    wall,
                )
            )
            if not agent.answer(response):
                return turns


async def one_run(mode: str, outputs: list[str], tool_calls: int, context: str) -> list[Turn]:
    cluster = await asyncio.to_thread(Cluster.start)
    try:
        metadata = {"tether.tool_calls": str(tool_calls), "tether.answer_tokens": "40"}
        agent = Agent(outputs, metadata, context)
        await warm_up(cluster)
        if mode == "ws":
            return await run_ws(cluster, agent)
        return await run_http(cluster, agent, mode)
    finally:
        await asyncio.to_thread(cluster.stop)


async def warm_up(cluster: Cluster) -> None:
    """One small request so that lazy imports and first-call costs are not charged to turn 1."""
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as session:
        body = {"model": MODEL, "input": "warm up", "store": False}
        async with session.post(cluster.base_url + "/v1/responses", json=body, headers=headers) as resp:
            await resp.read()


def medians(runs: list[list[Turn]], pick: Callable[[Turn], float]) -> list[float]:
    return [statistics.median(pick(run[i]) for run in runs) for i in range(min(len(r) for r in runs))]


FIELDS = ("up", "cpu", "hist", "cached", "wall")


def report(results: dict[str, list[list[Turn]]]) -> dict[str, Any]:
    """Print the per-turn medians side by side and the checks; return them for --json."""
    modes = list(results)
    table = {m: {k: medians(results[m], attrgetter(k)) for k in FIELDS} for m in modes}
    n = min(len(table[m]["up"]) for m in modes)
    head = f"{'turn':>4} {'hist tok':>9} " + " ".join(f"{m + ' up B':>16} {m + ' cpu ms':>17}" for m in modes)
    print(head + f" {'ws/http up':>10}")
    both = "http" in table and "ws" in table
    for i in range(n):
        cells = " ".join(f"{table[m]['up'][i]:>16,.0f} {table[m]['cpu'][i] * 1e3:>17.2f}" for m in modes)
        ratio = table["ws"]["up"][i] / table["http"]["up"][i] if both else float("nan")
        print(f"{i + 1:>4} {table[modes[0]]['hist'][i]:>9,.0f} {cells} {ratio:>10.3f}")
    summary: dict[str, Any] = {"turns": n, "table": table}
    if both:
        ws_cpu, http_cpu = table["ws"]["cpu"], table["http"]["cpu"]
        # Like with like: turn 2 (the first tool output in, a tool call out) against the last turn of the same
        # shape, the last tool-call turn (the final turn answers in text: more output events, not history).
        first, last = 1, n - 2
        summary.update(
            ws_upload_ratio_max_from_turn5=max(
                table["ws"]["up"][i] / table["http"]["up"][i] for i in range(4, n)
            ),
            ws_cpu_growth=ws_cpu[last] / ws_cpu[first],
            http_cpu_growth=http_cpu[last] / http_cpu[first],
            hist_first=table["http"]["hist"][first],
            hist_last=table["http"]["hist"][last],
            total_up={m: sum(table[m]["up"]) for m in modes},
            total_cpu={m: sum(table[m]["cpu"]) for m in modes},
            http_cached_share=sum(table["http"]["cached"]) / sum(table["http"]["hist"]),
        )
        print()
        _print_summary(summary, n, first, last)
    return summary


def _print_summary(summary: dict[str, Any], n: int, first: int, last: int) -> None:
    ratio = summary["ws_upload_ratio_max_from_turn5"]
    print(f"WS upload / HTTP upload, max over turns 5..{n}: {ratio:.4f} (target <= 0.10)")
    print(
        f"box CPU per tool-call turn, turn {last + 1} (~{summary['hist_last']:,.0f} tok) / turn {first + 1} "
        f"(~{summary['hist_first']:,.0f} tok): ws {summary['ws_cpu_growth']:.2f}x (target <= 1.5x), "
        f"http {summary['http_cpu_growth']:.2f}x"
    )
    print("total client->server bytes: " + ", ".join(f"{m} {v:,.0f}" for m, v in summary["total_up"].items()))
    print("total box CPU seconds: " + ", ".join(f"{m} {v:.3f}" for m, v in summary["total_cpu"].items()))
    share = summary["http_cached_share"]
    print(f"HTTP full-context prompt tokens served from the worker's prefix cache: {share:.1%}")


def _write_json(path: str, summary: dict[str, Any]) -> None:
    Path(path).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per mode (medians are reported)")
    parser.add_argument("--tool-calls", type=int, default=20)
    parser.add_argument("--output-tokens", type=int, default=10_000, help="tokens per tool output")
    parser.add_argument("--context-tokens", type=int, default=0, help="tokens of files in the first message")
    parser.add_argument("--modes", default="ws,http,http_chained")
    parser.add_argument("--json", help="write the per-turn medians and the summary here")
    args = parser.parse_args()
    tokenizer.warm()
    outputs = [tool_output(seed, args.output_tokens) for seed in range(4)]
    context = tool_output(99, args.context_tokens) if args.context_tokens else ""
    results: dict[str, list[list[Turn]]] = {}
    for mode in args.modes.split(","):
        results[mode] = []
        for run in range(args.runs):
            results[mode].append(await one_run(mode, outputs, args.tool_calls, context))
            print(f"[{mode}] run {run + 1}/{args.runs} done", file=sys.stderr)
    summary = report(results)
    if args.json:
        _write_json(args.json, summary)


if __name__ == "__main__":
    asyncio.run(main())
