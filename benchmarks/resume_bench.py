"""Resume benchmark: store:false agent sessions on the openai SDK whose TCP connections are cut (no close
frame) mid-stream and between turns, through a local router and two boxes; with the box's resume on and
off. Reports turns lost and the time from each cut to the continuation's `response.created`.

    .venv/bin/python benchmarks/resume_bench.py [--sessions 8] [--turns 12] [--cut-every 3]
        [--speed 1.0] [--modes on,off] [--json out.json]

Per mode, a fresh local cluster (tether.supervisor.LocalCluster: router, 2 boxes, 1 sim worker at
`--speed`, no Redis: what is measured is the in-memory resume, not the sealed handoff). `--sessions`
agents run at once, each `--turns` store:false tool-call turns (a ~2 KB tool output each) on
`client.responses.connect` with X-Session-Id (the router's affinity brings a reconnect to the same box)
and X-Tether-Handoff-Key. Every `--cut-every`-th turn the agent aborts its socket's transport, in turn
right after `response.in_progress` (mid-stream) and right after `response.completed` (between turns). The
SDK reconnects on the 1006 it sees; the agent then resends the create whose terminal event it did not
see (a mid-stream cut: that response failed cleanly), or sends its next turn, by previous_response_id.

- resume on (the default box): the box parked the connection's responses; the continuation runs as a
  delta on the chain.
- resume off (TETHER_BOX_WS_RESUME_GRACE_SECONDS=0): the continuation gets previous_response_not_found;
  the agent resends its whole history (what a store:false client does today) as a new chain.

Reported per mode: cuts, chains lost (previous_response_not_found after a cut), turns lost (completed turns
whose context had to be resent), responses re-run (cut mid-stream), the bytes of history resent, and the
resume time: cut → `response.created` of the continuation (SDK reconnect back-off included, 10–12.5 ms:
`initial_delay` 0.0125 s with the SDK's 75–100 % jitter), p50/p95/max; and the boxes' own
tether_box_parked_total and tether_box_resume_wait_seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tether.config import DEV_API_KEY, ClusterSpec  # noqa: E402
from tether.supervisor import LocalCluster  # noqa: E402

TOOL_OUTPUT = "def f(x):\n    return x * 2\n" * 80  # ~2 KB of code, as a read_file result
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file of the repository.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]
TERMINAL = ("response.completed", "response.failed", "response.incomplete", "error")
RECONNECT_DELAY = 0.0125  # the SDK's initial_delay: its first attempt waits 75-100 % of it


@dataclass
class Tally:
    """What one mode's run measured."""

    cuts: dict[str, int] = field(default_factory=lambda: {"mid-stream": 0, "between turns": 0})
    chains_lost: int = 0
    turns_lost: int = 0
    rerun: int = 0
    resent_bytes: int = 0
    resume_seconds: list[float] = field(default_factory=list)
    completed: int = 0


class Agent:
    """One store:false agent session on the async SDK (see the module docstring)."""

    def __init__(self, base_url: str, index: int, turns: int, cut_every: int, tally: Tally) -> None:
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=DEV_API_KEY, max_retries=0, timeout=60)
        key = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        self.headers = {"X-Session-Id": f"resume-{uuid.uuid4().hex}", "X-Tether-Handoff-Key": key}
        self.index, self.turns, self.cut_every, self.tally = index, turns, cut_every, tally
        self.history: list[dict[str, Any]] = []  # every item of the conversation, for a full resend
        self.chain_turns = 0  # completed turns on the current chain
        self.outstanding: dict[str, Any] | None = None
        self.cut_at: float | None = None
        self.cut_pending = False  # cut at this turn's response.in_progress
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        async with self.client.responses.connect(
            extra_headers=self.headers,
            on_reconnecting=self._on_reconnecting,
            max_retries=8,
            initial_delay=RECONNECT_DELAY,
            max_delay=0.5,
        ) as conn:
            self.conn = conn
            user = {"type": "message", "role": "user", "content": f"Fix bug #{self.index} in the parser."}
            self.history.append(user)
            previous: str | None = None
            new_input: list[dict[str, Any]] = [user]
            cuts = 0
            for number in range(1, self.turns + 1):
                mode = None
                if number % self.cut_every == 0 and number < self.turns:  # the next turn continues
                    mode = ("mid-stream", "between turns")[cuts % 2]
                    cuts += 1
                response = await self._turn(conn, previous, new_input, cut=mode)
                call = next(item for item in response["output"] if item["type"] == "function_call")
                self.history.append({k: call[k] for k in ("type", "call_id", "name", "arguments")})
                output = {"type": "function_call_output", "call_id": call["call_id"], "output": TOOL_OUTPUT}
                self.history.append(output)
                previous, new_input = response["id"], [output]
        await self.client.close()

    async def _turn(
        self, conn: Any, previous: str | None, new_input: list[dict[str, Any]], *, cut: str | None
    ) -> dict[str, Any]:
        create: dict[str, Any] = {
            "model": "tether-sim", "store": False, "tools": TOOLS, "input": new_input,
            "instructions": "You are a coding agent.", "metadata": {"tether.tool_calls": "64"},
        }  # fmt: skip
        if previous is not None:
            create["previous_response_id"] = previous
        await self._send(conn, create)
        self.cut_pending = cut == "mid-stream"
        while True:
            event = await self._next(conn)
            if event["type"] == "response.created" and self.cut_at is not None:
                self.tally.resume_seconds.append(time.perf_counter() - self.cut_at)
                self.cut_at = None
            if event["type"] not in TERMINAL:
                continue
            self.outstanding = None
            if event["type"] == "error" and event["error"]["code"] == "previous_response_not_found":
                # The chain is gone: resend the whole history as a new chain (the turn's input included).
                self.tally.chains_lost += 1
                self.tally.turns_lost += self.chain_turns
                self.chain_turns = 0
                full = {**create, "input": self.history}  # the history ends with this turn's input
                full.pop("previous_response_id", None)
                self.tally.resent_bytes += len(json.dumps(full["input"]))
                self.cut_at = self.cut_at or time.perf_counter()  # still recovering from the cut
                await self._send(conn, full)
                continue
            if event["type"] != "response.completed":
                raise AssertionError(f"agent {self.index}: {event}")
            self.tally.completed += 1
            self.chain_turns += 1
            if cut == "between turns":
                await self._cut("between turns")
            return dict(event["response"])

    async def _next(self, conn: Any) -> dict[str, Any]:
        """The next event; with a mid-stream cut pending, the socket is cut at response.in_progress first
        (the response fails cleanly and is resent once reconnected)."""
        async for event in conn:
            data = event.model_dump(mode="json")
            if self.cut_pending and data["type"] == "response.in_progress":
                self.cut_pending = False
                self.tally.rerun += 1
                await self._cut("mid-stream")
                continue
            return dict(data)
        raise AssertionError("the connection ended")

    async def _send(self, conn: Any, create: dict[str, Any]) -> None:
        self.outstanding = create
        with contextlib.suppress(ConnectionClosed):  # the socket is gone: resent once reconnected
            await conn.response.create(**create)

    async def _cut(self, kind: str) -> None:
        self.tally.cuts[kind] += 1
        ws = self.conn._connection
        self.cut_at = time.perf_counter()
        ws.transport.abort()  # no close frame: the TCP connection is simply gone
        await ws.wait_closed()

    def _on_reconnecting(self, event: Any) -> None:
        if self.outstanding is not None and event.attempt == 1:
            task = asyncio.get_running_loop().create_task(self.conn.response.create(**self.outstanding))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


def box_metrics(cluster: LocalCluster) -> dict[str, float]:
    totals: dict[str, float] = {}
    for name, url in cluster.metrics_urls.items():
        if not name.startswith("box"):
            continue
        with urllib.request.urlopen(url, timeout=10) as answer:  # loopback only
            text = answer.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "tether_box_parked_total":
                    label = f"parked_{sample.labels['result']}"
                elif sample.name in (
                    "tether_box_resume_wait_seconds_sum",
                    "tether_box_resume_wait_seconds_count",
                ):
                    label = sample.name.removeprefix("tether_box_")
                else:
                    continue
                totals[label] = totals.get(label, 0.0) + sample.value
    return totals


async def run_mode(mode: str, args: argparse.Namespace) -> tuple[Tally, dict[str, float], float]:
    spec = ClusterSpec(boxes=2, workers=1, router=True, redis=None, speed=args.speed, port=0, stop_timeout=10)
    environ = dict(os.environ)
    environ["TETHER_BOX_WS_RESUME_GRACE_SECONDS"] = "60" if mode == "on" else "0"
    tally = Tally()
    async with LocalCluster(spec, sink=lambda *_: None, environ=environ) as cluster:
        started = time.perf_counter()
        agents = [Agent(cluster.base_url, i, args.turns, args.cut_every, tally) for i in range(args.sessions)]
        await asyncio.gather(*(agent.run() for agent in agents))
        elapsed = time.perf_counter() - started
        metrics = await asyncio.to_thread(box_metrics, cluster)
    return tally, metrics, elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(results: dict[str, tuple[Tally, dict[str, float], float]], args: argparse.Namespace) -> None:
    print(
        f"\n## cut sockets: {args.sessions} sessions × {args.turns} store:false turns, a cut every "
        f"{args.cut_every} turns (mid-stream and between turns in turn), router + 2 boxes + 1 sim worker "
        f"(speed {args.speed:g})"
    )
    print(
        "| resume | cuts (mid / between) | chains lost | turns lost | responses re-run | history resent "
        "| resume time p50 / p95 / max ms | box: parked / resumed / expired | run s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, (tally, metrics, elapsed) in results.items():
        times = tally.resume_seconds
        latency = " / ".join(
            f"{v * 1000:.1f}" for v in (pct(times, 0.5), pct(times, 0.95), max(times or [0]))
        )
        box = " / ".join(f"{metrics.get(f'parked_{r}', 0):.0f}" for r in ("parked", "resumed", "expired"))
        print(
            f"| {mode} | {tally.cuts['mid-stream']} / {tally.cuts['between turns']} | {tally.chains_lost} "
            f"| {tally.turns_lost} | {tally.rerun} | {tally.resent_bytes / 1024:.0f} KiB | {latency} "
            f"| {box} | {elapsed:.1f} |"
        )
    for mode, (_, metrics, _) in results.items():
        count = metrics.get("resume_wait_seconds_count", 0)
        if count:
            wait = metrics["resume_wait_seconds_sum"] / count * 1000
            print(
                f"resume {mode}: the boxes held a dropped socket {wait:.1f} ms on average before it resumed"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--cut-every", type=int, default=3)
    parser.add_argument(
        "--speed", type=float, default=1.0, help="sim worker speed (1: the H100 timing model)"
    )
    parser.add_argument("--modes", default="on,off")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    results = {mode: asyncio.run(run_mode(mode, args)) for mode in args.modes.split(",")}
    report(results, args)
    if args.json:
        figures = {
            mode: {
                "cuts": tally.cuts,
                "chains_lost": tally.chains_lost,
                "turns_lost": tally.turns_lost,
                "responses_rerun": tally.rerun,
                "history_resent_bytes": tally.resent_bytes,
                "resume_seconds_p50": pct(tally.resume_seconds, 0.5),
                "resume_seconds_p95": pct(tally.resume_seconds, 0.95),
                "resume_seconds_max": max(tally.resume_seconds or [0.0]),
                "completed_turns": tally.completed,
                "box": metrics,
                "run_seconds": elapsed,
            }
            for mode, (tally, metrics, elapsed) in results.items()
        }
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
