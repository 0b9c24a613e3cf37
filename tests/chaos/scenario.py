"""Chaos scenario: concurrent agent sessions through the router while one box drains and another is
killed. Used by tests/chaos/test_chaos_handoff.py (CI-sized) and by `scripts/chaos` (any size):

    scripts/chaos [--sessions 200] [--turns 12] [--boxes 3] [--workers 2] [--json report.json]

Each session is a store:true agent run over one WebSocket through the router (its own X-Session-Id):
a user message, then one function_call_output per turn, chained by previous_response_id. A session
that loses its socket reconnects at once (then with backoff) and
- resends the create the server did not finish (no terminal event came for it),
- continues from its last completed response, which the new owner restores from Redis;
- if that response is not found (the box was killed before writing it), starts a new chain with its
  whole history (the Responses API's guidance after previous_response_not_found) and counts a fallback.

At the end every completed response is looked up on a surviving box (GET /v1/responses/{id}, restored
from Redis): one that is not found is a lost turn. The report: sessions disrupted by the drain and by the
kill, resumed (continued their chain) or fell back, turns lost per cause (0 for the drain), the loss
window of the kill (how long before the kill the oldest lost turn completed), and the time to resume
(socket lost → response.created of the next turn on the new socket), p50 and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import orjson

from tether.config import DEV_API_KEY, ClusterSpec
from tether.supervisor import LocalCluster

TOOLS = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file of the repository.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]
TOOL_OUTPUT = "def parse_timeout(value):\n    return float(value)\n" * 12  # ~600 bytes of code
TERMINAL = ("response.completed", "response.failed", "response.incomplete", "error")
DRAIN_CLOSE = 1012
RECONNECT_BACKOFF = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0)
TURN_TIMEOUT = 60.0


@dataclass
class Completed:
    """A completed response: its id, when it completed (monotonic) and the box that served it."""

    response_id: str
    at: float
    box: str


@dataclass
class Disruption:
    """A lost socket: when, its close code (1006 when dropped), the box, and how the session went on."""

    at: float
    code: int
    box: str
    resumed_after: float | None = None  # seconds to the next turn's response.created
    fell_back: bool = False  # its last response was gone: a new chain with the whole history


@dataclass
class SessionLog:
    session_id: str
    completed: list[Completed] = field(default_factory=list)
    disruptions: list[Disruption] = field(default_factory=list)
    retried: int = 0  # creates sent again (not started before a drain close, or killed in flight)


class AgentSession:
    """One agent run; see the module docstring."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        *,
        turns: int,
        api_key: str = DEV_API_KEY,
        session_id: str | None = None,
        think: tuple[float, float] = (0.0, 0.0),
        rng: random.Random | None = None,
    ) -> None:
        self.http = http
        self.url = base_url.rstrip("/") + "/responses"
        self.turns = turns
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.log = SessionLog(session_id or f"chaos-{uuid.uuid4().hex}")
        self.headers["X-Session-Id"] = self.log.session_id
        self.think = think
        self.rng = rng or random.Random()
        self.history: list[dict[str, Any]] = [
            {"type": "message", "role": "user", "content": f"Fix the failing test ({self.log.session_id})."}
        ]
        self.previous: str | None = None
        self.last_call: dict[str, Any] | None = None
        self.box = "?"

    async def run(self) -> SessionLog:
        """Run until `turns` responses completed (raises if the cluster never lets it)."""
        pending: dict[str, Any] | None = None
        while len(self.log.completed) < self.turns:
            ws = await self._connect()
            try:
                pending = await self._turns(ws, pending)
            finally:
                await ws.close()
        return self.log

    # ------------------------------------------------------------------ one socket
    async def _turns(self, ws: aiohttp.ClientWebSocketResponse, pending: dict[str, Any] | None) -> Any:
        while len(self.log.completed) < self.turns:
            create = pending if pending is not None else self._next_create()
            pending = create
            with contextlib.suppress(ConnectionError, RuntimeError):
                # A socket already closing refuses the send; its close frame is read next.
                await ws.send_str(orjson.dumps(create).decode())
            outcome = await self._read_turn(ws)
            if outcome == "lost":
                self.log.retried += 1
                return pending
            if outcome == "retry":
                self.log.retried += 1
                continue
            if outcome == "fallback":
                pending = None
                continue
            pending = None
            if self.think[1] > 0 and len(self.log.completed) < self.turns:
                await asyncio.sleep(self.rng.uniform(*self.think))  # the tool runs
        return None

    async def _read_turn(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """'completed', 'retry' (response.failed), 'fallback' (state lost), or 'lost' (socket gone)."""
        while True:
            try:
                msg = await ws.receive(timeout=TURN_TIMEOUT)
            except TimeoutError:
                raise AssertionError(f"{self.log.session_id}: no event for {TURN_TIMEOUT} s") from None
            if msg.type is not aiohttp.WSMsgType.TEXT:
                # The code the server sent (ws.close_code turns 1006 when our close reply fails).
                self._lost(msg.data if msg.type is aiohttp.WSMsgType.CLOSE else None)
                return "lost"
            event = orjson.loads(msg.data)
            kind = event["type"]
            if kind == "response.created":
                self._resumed()
            elif kind == "response.completed":
                self._completed(event["response"])
                return "completed"
            elif kind == "response.failed":
                return "retry"  # a worker died mid-stream: the same turn again
            elif kind == "error":
                if event["error"]["code"] != "previous_response_not_found":
                    raise AssertionError(f"{self.log.session_id}: {event}")
                self._fall_back()
                return "fallback"

    # ------------------------------------------------------------------ turns
    def _next_create(self) -> dict[str, Any]:
        create: dict[str, Any] = {
            "type": "response.create",
            "model": "tether-sim",
            "store": True,
            "tools": TOOLS,
            "instructions": "You are a coding agent. Use the tools, then answer.",
            "metadata": {"tether.tool_calls": str(min(64, self.turns + 2))},
        }
        if self.previous is None:
            create["input"] = list(self.history)
            return create
        assert self.last_call is not None
        create["previous_response_id"] = self.previous
        create["input"] = [self._tool_output()]
        return create

    def _tool_output(self) -> dict[str, Any]:
        assert self.last_call is not None
        return {"type": "function_call_output", "call_id": self.last_call["call_id"], "output": TOOL_OUTPUT}

    def _completed(self, response: dict[str, Any]) -> None:
        if self.previous is not None and self.last_call is not None:
            self.history.append(self._tool_output())
        self.log.completed.append(Completed(response["id"], time.monotonic(), self.box))
        calls = [item for item in response["output"] if item["type"] == "function_call"]
        self.history.extend({k: item[k] for k in ("type", "call_id", "name", "arguments")} for item in calls)
        self.previous = response["id"]
        self.last_call = calls[-1] if calls else None
        if self.last_call is None:
            raise AssertionError(f"{self.log.session_id}: the agent answered before its last turn")

    def _fall_back(self) -> None:
        if self.log.disruptions:
            self.log.disruptions[-1].fell_back = True
        if self.last_call is not None:
            self.history.append(self._tool_output())
        self.previous = None  # the next create sends the whole history

    # ------------------------------------------------------------------ sockets
    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        for delay in RECONNECT_BACKOFF:
            await asyncio.sleep(delay)
            try:
                ws = await self.http.ws_connect(self.url, headers=self.headers, heartbeat=None)
            except (aiohttp.ClientError, OSError):
                continue
            self.box = ws._response.headers.get("X-Tether-Box", "?")  # the handshake's answer
            return ws
        raise AssertionError(f"{self.log.session_id}: could not reconnect")

    def _lost(self, code: int | None) -> None:
        self.log.disruptions.append(Disruption(time.monotonic(), int(code or 1006), self.box))

    def _resumed(self) -> None:
        last = self.log.disruptions[-1] if self.log.disruptions else None
        if last is not None and last.resumed_after is None:
            last.resumed_after = time.monotonic() - last.at


# ---------------------------------------------------------------------------------------------- scenario
@dataclass
class Report:
    sessions: int
    turns_completed: int
    disrupted_by_drain: int
    disrupted_by_kill: int
    resumed: int  # disrupted sessions that continued their chain
    fell_back: int  # disrupted sessions whose state was gone
    turns_lost_drain: int
    turns_lost_kill: int
    kill_loss_window_s: float  # kill time − completion of the oldest lost turn (0: none lost)
    resume_p50_s: float
    resume_p99_s: float
    retried_creates: int
    drained_box_exit: int | None
    seconds: float


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def lost_responses(
    http: aiohttp.ClientSession, box_url: str, ids: Sequence[str], api_key: str = DEV_API_KEY
) -> set[str]:
    """The ids a surviving box cannot find (GET /v1/responses/{id}: memory, else Redis)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    semaphore = asyncio.Semaphore(8)  # a lookup is a restore: keep the survivor's queue short

    async def missing(rid: str) -> bool:
        async with semaphore, http.get(f"{box_url}/v1/responses/{rid}", headers=headers) as answer:
            if answer.status not in (200, 404):
                raise AssertionError(f"GET {rid}: {answer.status}")
            return answer.status == 404

    found = await asyncio.gather(*(missing(rid) for rid in ids))
    return {rid for rid, gone in zip(ids, found, strict=True) if gone}


async def run_scenario(
    cluster: LocalCluster,
    *,
    sessions: int,
    turns: int,
    drain: str,
    kill: str,
    survivor: str,
    think: tuple[float, float] = (0.005, 0.03),
    disrupt_after: float = 0.35,
    seed: int = 7,
) -> Report:
    """Run the sessions; once `disrupt_after` of all turns completed, drain `drain` and then kill `kill`."""
    rng = random.Random(seed)
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        agents = [
            AgentSession(http, cluster.base_url, turns=turns, think=think, rng=random.Random(rng.random()))
            for _ in range(sessions)
        ]
        runs = [asyncio.create_task(agent.run()) for agent in agents]
        target = int(sessions * turns * disrupt_after)
        while sum(len(a.log.completed) for a in agents) < target:
            done = [r for r in runs if r.done()]
            for failed in (r for r in done if r.exception() is not None):
                raise failed.exception()  # type: ignore[misc]
            await asyncio.sleep(0.02)  # watching progress of many clients: no single event to wait on
        draining = asyncio.create_task(cluster.terminate(drain))
        await asyncio.sleep(0.2)  # the drain is under way (readiness off, sockets closing) ...
        kill_at = time.monotonic()
        await cluster.kill(kill)  # ... when another box dies
        logs = await asyncio.gather(*runs)
        drained_exit = await draining
        survivor_url = cluster.box_urls[cluster.names("box").index(survivor)]
        ids = [c.response_id for log in logs for c in log.completed]
        lost = await lost_responses(http, survivor_url, ids)
    return _report(logs, lost, drain, kill, kill_at, drained_exit, time.monotonic() - started)


def _report(
    logs: Sequence[SessionLog],
    lost: set[str],
    drain: str,
    kill: str,
    kill_at: float,
    drained_exit: int | None,
    seconds: float,
) -> Report:
    served = {c.response_id: c for log in logs for c in log.completed}
    lost_kill = [served[rid] for rid in lost if served[rid].box == kill]
    by_drain = [log for log in logs if any(d.code == DRAIN_CLOSE and d.box == drain for d in log.disruptions)]
    by_kill = [log for log in logs if any(d.box == kill and d.code != DRAIN_CLOSE for d in log.disruptions)]
    disrupted = [log for log in logs if log.disruptions]
    resume_times = [d.resumed_after for log in logs for d in log.disruptions if d.resumed_after is not None]
    return Report(
        sessions=len(logs),
        turns_completed=len(served),
        disrupted_by_drain=len(by_drain),
        disrupted_by_kill=len(by_kill),
        resumed=sum(1 for log in disrupted if not any(d.fell_back for d in log.disruptions)),
        fell_back=sum(1 for log in disrupted if any(d.fell_back for d in log.disruptions)),
        turns_lost_drain=sum(1 for rid in lost if served[rid].box == drain),
        turns_lost_kill=len(lost_kill),
        kill_loss_window_s=max((kill_at - c.at for c in lost_kill), default=0.0),
        resume_p50_s=_quantile(resume_times, 0.5),
        resume_p99_s=_quantile(resume_times, 0.99),
        retried_creates=sum(log.retried for log in logs),
        drained_box_exit=drained_exit,
        seconds=seconds,
    )


def print_report(report: Report) -> None:
    """The report as the lines the README quotes."""
    print(
        f"sessions {report.sessions}, turns completed {report.turns_completed}, "
        f"{report.seconds:.1f} s\n"
        f"disrupted: {report.disrupted_by_drain} by the drain, {report.disrupted_by_kill} by the kill; "
        f"resumed {report.resumed}, fell back {report.fell_back}; creates resent {report.retried_creates}\n"
        f"turns lost: drain {report.turns_lost_drain}, kill {report.turns_lost_kill} "
        f"(every lost turn completed within {report.kill_loss_window_s * 1000:.1f} ms before the kill)\n"
        f"time to resume: p50 {report.resume_p50_s * 1000:.1f} ms, p99 {report.resume_p99_s * 1000:.1f} ms\n"
        f"drained box exit status: {report.drained_box_exit}"
    )


def chaos_spec(boxes: int = 3, workers: int = 2, speed: float = 0.0) -> ClusterSpec:
    """The cluster of the scenario: a router, `boxes` boxes, `workers` sim workers and Redis."""
    return ClusterSpec(
        boxes=boxes, workers=workers, router=True, redis="auto", speed=speed, port=0,
        start_timeout=120, stop_timeout=20,
    )  # fmt: skip


async def _main(args: argparse.Namespace) -> int:
    spec = chaos_spec(args.boxes, args.workers, args.speed)
    async with LocalCluster(spec, sink=lambda *_: None) as cluster:
        if cluster.redis_url is None:
            print("chaos: redis-server is not installed (scripts/test installs it)", file=sys.stderr)
            return 2
        boxes = cluster.names("box")
        report = await run_scenario(
            cluster,
            sessions=args.sessions,
            turns=args.turns,
            drain=boxes[0],
            kill=boxes[1],
            survivor=boxes[-1],
        )
    print_report(report)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(asdict(report), out, indent=2)
    return 0 if report.turns_lost_drain == 0 and report.drained_box_exit == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--boxes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--speed", type=float, default=0.0, help="sim timing (0: no model time)")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    if args.boxes < 3:
        parser.error("--boxes must be at least 3 (one drained, one killed, one left)")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
