"""Retention benchmark: the cache hit rate of agent turns that follow a tool pause, with and without
`prompt_cache_options`, under a worker KV budget smaller than the agents' working set.

    .venv/bin/python benchmarks/retention_bench.py [--agents 8] [--tool-calls 8] [--context-tokens 3000]
        [--output-tokens 600] [--kv-budget 30000] [--retained-share 0.5] [--pause-ms 200:1200]
        [--speed 0] [--repeats 3] [--arms off,on,mixed] [--json out.json]

What runs: one `tether-gpu-worker` process (sim engine, `--speed 0` by default: no model time; the figures
are hit rates, not times) with a KV budget of `--kv-budget` tokens and `--retained-share`, and one
`tether-api-box` process in front of it, both on loopback and restarted for every arm and repeat. This
script is the client: `--agents` agents, each on its own WebSocket (store:false, the Codex shape), start
at random offsets within the first pause. An agent run: instructions + 3 tools (shared by every agent) and
a user message with `--context-tokens` of its own repository text, then `--tool-calls` function calls,
each answered after a tool pause drawn uniformly from `--pause-ms` with a tool output of about
`--output-tokens` tokens, then the final answer. While an agent waits for its tool the others' turns
commit, and the worker evicts whole chains to stay within its budget.

Arms: `off`, no agent sends prompt_cache_options; `on`, every agent sends {"ttl": "30m"} on every turn;
`mixed`, the even-numbered agents send it and the others do not (the same worker, at once).

Measured: for the turns after a tool pause (turn 2 on), cached tokens / prompt tokens from each
response's usage (input_tokens_details.cached_tokens / input_tokens), summed over the turns; per group in
the mixed arm. After each run the worker's /metrics: evictions, retained evictions, retention granted and
denied, and the delta requests whose chain was gone (precondition failures `unknown_cache_key`, each a
full resend). Pauses are drawn from a seeded RNG, the same for every arm of a repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import box_bench  # noqa: E402
from box_bench import INSTRUCTIONS, KEY, MODEL, TOOLS, tool_output  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from gpu_worker.wire import tokenizer  # noqa: E402

ARMS = ("off", "on", "mixed")
HELD_SHARE = 0.8  # a turn with at least this share of its prompt cached found its chain held
TERMINAL = ("response.completed", "response.failed", "response.incomplete", "error")


# ----------------------------------------------------------------------------------------------- cluster
@dataclass
class Cluster:
    """box_bench's worker + box processes, the worker with a small KV budget and its /metrics served."""

    processes: box_bench.Cluster
    base_url: str
    worker_metrics: str

    @classmethod
    def launch(cls, kv_budget: int, share: float, speed: float) -> Cluster:
        env = {**os.environ, "TETHER_WORKER_LOG_LEVEL": "WARNING"}
        python = sys.executable
        metrics_port = _free_port()
        worker, target = box_bench._start(
            [python, "-m", "gpu_worker", "--port", "0", "--metrics-port", str(metrics_port), "--speed",
             str(speed), "--kv-budget-tokens", str(kv_budget), "--retained-share", str(share)],
            env,
            "tether-gpu-worker serving",
        )  # fmt: skip
        box, url = box_bench._start(
            [python, "-m", "api_box", "--port", "0", "--admin-port", "-1", "--dev", "--workers", target,
             "--log-level", "WARNING"],
            env,
            "tether-api-box serving",
        )  # fmt: skip
        return cls(box_bench.Cluster(worker, box, url), url, f"http://127.0.0.1:{metrics_port}/metrics")

    def scrape(self) -> dict[str, float]:
        """The worker's samples, `name{label=value}` -> value."""
        with urllib.request.urlopen(self.worker_metrics, timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def stop(self) -> None:
        self.processes.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ------------------------------------------------------------------------------------------------ agents
def text_of(seed: int, tokens: int) -> str:
    """Deterministic code-like text of about `tokens` tokens (box_bench's text, cut line by line)."""
    lines, total = [], 0
    for line in tool_output(seed, tokens).split("\n"):
        lines.append(line)
        total += tokenizer.count(line + "\n")
        if total >= tokens:
            break
    return "\n".join(lines)


@dataclass
class Turn:
    prompt: int
    cached: int


@dataclass
class AgentResult:
    retained: bool  # sent prompt_cache_options
    turns: list[Turn] = field(default_factory=list)


@dataclass(frozen=True)
class Workload:
    agents: int
    tool_calls: int
    contexts: list[str]
    outputs: list[str]
    pause: tuple[float, float]  # seconds


async def run_agent(
    base_url: str, index: int, retain: bool, work: Workload, rng: random.Random
) -> AgentResult:
    """One agent run over its own WebSocket; a tool pause before each function_call_output."""
    result = AgentResult(retain)
    common: dict[str, Any] = {
        "type": "response.create",
        "model": MODEL,
        "instructions": INSTRUCTIONS,
        "tools": TOOLS,
        "store": False,
        "max_output_tokens": 512,  # the worker checks prompt + max output against its budget
        "metadata": {"tether.tool_calls": str(work.tool_calls), "tether.answer_tokens": "40"},
    }
    if retain:
        common["prompt_cache_options"] = {"ttl": "30m"}
    text = "Fix the failing test.\n\nRepository files:\n" + work.contexts[index]
    body: dict[str, Any] = {**common, "input": [{"type": "message", "role": "user", "content": text}]}
    url = base_url.replace("http", "ws", 1) + "/v1/responses"
    await asyncio.sleep(rng.uniform(0, work.pause[1]))  # agents start at different times
    calls = 0
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers={"Authorization": f"Bearer {KEY}"}, max_msg_size=0) as ws,
    ):
        while True:
            await ws.send_str(orjson.dumps(body).decode())
            while True:
                message = await ws.receive()
                if message.type is not aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"agent {index}: the socket ended: {message.type} {message.extra}")
                event = orjson.loads(message.data)
                if event["type"] in TERMINAL:
                    break
            if event["type"] != "response.completed":
                raise RuntimeError(f"agent {index}: turn failed: {event.get('response', event).get('error')}")
            response = event["response"]
            usage = response["usage"]
            result.turns.append(Turn(usage["input_tokens"], usage["input_tokens_details"]["cached_tokens"]))
            pending = []
            for item in response["output"]:
                if item["type"] == "function_call":
                    output = work.outputs[(index * 7 + calls) % len(work.outputs)]
                    calls += 1
                    pending.append(
                        {"type": "function_call_output", "call_id": item["call_id"], "output": output}
                    )
            if not pending:
                return result
            await asyncio.sleep(rng.uniform(*work.pause))  # the tool runs
            body = {**common, "input": pending, "previous_response_id": response["id"]}


def opts_in(arm: str, index: int) -> bool:
    return arm == "on" or (arm == "mixed" and index % 2 == 0)


async def run_arm(arm: str, work: Workload, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    cluster = await asyncio.to_thread(Cluster.launch, args.kv_budget, args.retained_share, args.speed)
    try:
        agents = [
            run_agent(cluster.base_url, i, opts_in(arm, i), work, random.Random(seed * 1000 + i))
            for i in range(work.agents)
        ]
        results = await asyncio.gather(*agents)
        samples = await asyncio.to_thread(cluster.scrape)
    finally:
        await asyncio.to_thread(cluster.stop)
    return {"arm": arm, "groups": _groups(results), "worker": _worker_figures(samples)}


def _groups(results: list[AgentResult]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[AgentResult]] = {"all": results}
    if any(r.retained for r in results) and not all(r.retained for r in results):
        groups["retained"] = [r for r in results if r.retained]
        groups["unretained"] = [r for r in results if not r.retained]
    out = {}
    for name, members in groups.items():
        after = [t for r in members for t in r.turns[1:]]  # the turns that follow a tool pause
        prompt, cached = sum(t.prompt for t in after), sum(t.cached for t in after)
        out[name] = {
            "agents": len(members),
            "turns": len(after),
            "prompt_tokens": prompt,
            "cached_tokens": cached,
            "hit_rate": cached / prompt if prompt else 0.0,
            # Its chain was still held: all but the new input (a tool output and the previous answer,
            # under a fifth of the prompt in this workload) came from the cache.
            "held": sum(1 for t in after if t.cached >= HELD_SHARE * t.prompt),
        }
    return out


def _worker_figures(samples: dict[str, float]) -> dict[str, float]:
    pick = {
        "evictions": "tether_worker_kv_cache_evictions_total",
        "retained_evictions": "tether_worker_kv_cache_retained_evictions_total",
        "retention_granted": "tether_worker_retention_requests_total{result=granted}",
        "retention_denied": "tether_worker_retention_requests_total{result=denied}",
        "chain_gone": "tether_worker_precondition_failures_total{reason=unknown_cache_key}",
        "cached_tokens": "tether_worker_prefill_tokens_total{kind=cached}",
        "computed_tokens": "tether_worker_prefill_tokens_total{kind=computed}",
    }
    return {name: samples.get(series, 0.0) for name, series in pick.items()}


# ------------------------------------------------------------------------------------------------ report
def _print_run(repeat: int, run: dict[str, Any]) -> None:
    w = run["worker"]
    for group, g in run["groups"].items():
        print(
            f"   repeat {repeat} {run['arm']:<6} {group:<11} agents {g['agents']:>2}  turns {g['turns']:>3}  "
            f"hit rate {g['hit_rate']:6.1%}  ({g['cached_tokens']:>7}/{g['prompt_tokens']:>7} tokens)  "
            f"on a held chain {g['held']:>3}"
        )
    print(
        f"   {'':>9}{'':<6} worker: evictions {w['evictions']:.0f} (retained {w['retained_evictions']:.0f}), "
        f"retention granted {w['retention_granted']:.0f} denied {w['retention_denied']:.0f}, "
        f"chain gone (full resend) {w['chain_gone']:.0f}"
    )


def _summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    by: dict[str, list[float]] = {}
    for run in runs:
        for group, g in run["groups"].items():
            by.setdefault(f"{run['arm']}/{group}", []).append(g["hit_rate"])
    return {k: {"mean": statistics.mean(v), "min": min(v), "max": max(v)} for k, v in by.items()}


def _parse_pause(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    pause = (float(low) / 1000, float(high or low) / 1000)
    if not 0 <= pause[0] <= pause[1]:
        raise argparse.ArgumentTypeError("--pause-ms is LOW:HIGH milliseconds, 0 <= LOW <= HIGH")
    return pause


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--tool-calls", type=int, default=8)
    parser.add_argument("--context-tokens", type=int, default=3000)
    parser.add_argument("--output-tokens", type=int, default=600)
    parser.add_argument("--kv-budget", type=int, default=30_000)
    parser.add_argument("--retained-share", type=float, default=0.5)
    parser.add_argument("--pause-ms", type=_parse_pause, default=(0.2, 1.2))
    parser.add_argument("--speed", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--json", help="write the runs and the summary here")
    args = parser.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    if not set(arms) <= set(ARMS):
        parser.error(f"--arms: choose from {', '.join(ARMS)}")
    contexts = [text_of(10_000 + i, args.context_tokens) for i in range(args.agents)]
    outputs = [text_of(20_000 + i, args.output_tokens) for i in range(16)]
    work = Workload(args.agents, args.tool_calls, contexts, outputs, args.pause_ms)
    print(
        f"== retention: {args.agents} agents x ({args.context_tokens}-token context + {args.tool_calls} tool "
        f"calls of ~{args.output_tokens} tokens), pauses {args.pause_ms[0] * 1000:.0f}-"
        f"{args.pause_ms[1] * 1000:.0f} ms; worker KV budget {args.kv_budget} tokens, retained share "
        f"{args.retained_share}, sim speed {args.speed}"
    )
    runs = []
    for repeat in range(1, args.repeats + 1):
        for arm in arms:
            run = await run_arm(arm, work, args, seed=repeat)
            run["repeat"] = repeat
            runs.append(run)
            _print_run(repeat, run)
    summary = _summary(runs)
    print("== hit rate of turns after a tool pause (mean, min-max over repeats)")
    for key, s in summary.items():
        print(f"   {key:<18} {s['mean']:6.1%}  ({s['min']:.1%}-{s['max']:.1%})")
    if args.json:
        report = {"args": vars(args) | {"pause_ms": args.pause_ms}, "runs": runs, "summary": summary}
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
