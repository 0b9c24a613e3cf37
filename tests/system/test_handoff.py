"""Cold handoff and failures on a real local cluster (router, 2 boxes, 2 sim workers, Redis; real
processes and signals): the openai SDK reconnecting after a drain (1012) and continuing its chain on the
new owner, a box SIGKILL (only turns younger than the write-behind lag are lost), a worker killed
mid-stream, Redis down and back without a restart, and a router restart (sessions return warm).

One cluster for the module; a test that stops a process starts it again before it ends.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from tests.chaos.scenario import AgentSession, lost_responses
from tether.config import DEV_API_KEY, ClusterSpec
from tether.supervisor import LocalCluster

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]
# speed 0.1: a tool-call turn takes ~10-30 ms of simulated GPU time, long outputs take seconds.
SPEC = ClusterSpec(boxes=2, workers=2, router=True, redis="auto", speed=0.1, port=0, stop_timeout=15)
AUTH = {"Authorization": f"Bearer {DEV_API_KEY}"}
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]
LAG_BOUND = 0.5  # seconds: a SIGKILL loses only turns completed less than this before it (measured: ms)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster() -> AsyncIterator[LocalCluster]:
    logs: collections.deque[str] = collections.deque(maxlen=300)
    async with LocalCluster(SPEC, sink=lambda name, _, line: logs.append(f"[{name}] {line}")) as running:
        running.test_logs = logs  # type: ignore[attr-defined]
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def box_url(cluster: LocalCluster, name: str) -> str:
    return cluster.box_urls[cluster.names("box").index(name)]


async def metric(
    http: aiohttp.ClientSession, cluster: LocalCluster, process: str, name: str, **labels: str
) -> float:
    async with http.get(cluster.metrics_urls[process]) as answer:
        text = await answer.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def until(check: Any, within: float = 15.0) -> None:
    """Poll an external process's state (metrics) until `check()` holds; there is no event to wait on."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def sessions_on(http: aiohttp.ClientSession, cluster: LocalCluster, box: str, count: int) -> list[str]:
    """Session ids that the router sends to `box` (asked with GET /v1/models, routed like any request).
    A box restarted a moment ago is skipped by the router until its prober sees it again: keep asking."""
    found: list[str] = []
    deadline = time.monotonic() + 20
    while len(found) < count:
        session = f"sys-{uuid.uuid4().hex}"
        headers = {**AUTH, "X-Session-Id": session}
        async with http.get(f"{cluster.base_url}/models", headers=headers) as answer:
            if answer.headers.get("X-Tether-Box") == box:
                found.append(session)
            elif time.monotonic() > deadline:
                raise AssertionError(f"no session key maps to {box}")
    return found


async def turn(ws: aiohttp.ClientWebSocketResponse, **fields: Any) -> dict[str, Any]:
    """Send a create; the terminal event."""
    create = {"type": "response.create", "model": "tether-sim", "store": True, "tools": TOOLS, **fields}
    await ws.send_str(orjson.dumps(create).decode())
    while True:
        event = orjson.loads((await ws.receive(timeout=60)).data)
        if event["type"] in ("response.completed", "response.failed", "response.incomplete", "error"):
            return dict(event)


def tool_output(response: dict[str, Any]) -> list[dict[str, Any]]:
    call = next(item for item in response["output"] if item["type"] == "function_call")
    return [{"type": "function_call_output", "call_id": call["call_id"], "output": "x = 1\n" * 50}]


def next_turn(previous: dict[str, Any], **metadata: str) -> dict[str, Any]:
    meta = {"tether.tool_calls": "30", **metadata}
    return {"previous_response_id": previous["id"], "input": tool_output(previous), "metadata": meta}


# ---------------------------------------------------------------------------------------------- drain
class SdkAgent:
    """A store:true agent on the openai SDK (sync, in a thread) that reconnects on 1012 and resends a
    create that got no response.created before the close (tests/chaos/scenario.py has the same rules)."""

    def __init__(self, base_url: str, session: str, turns: int, slow_turn: int) -> None:
        self.client = OpenAI(base_url=base_url, api_key=DEV_API_KEY, max_retries=0, timeout=30)
        self.session, self.turns, self.slow_turn = session, turns, slow_turn
        self.headers = {"X-Session-Id": session}
        self.slow_started = threading.Event()
        self.reconnect_codes: list[int] = []
        self.responses: list[Any] = []
        self.outstanding: dict[str, Any] | None = None
        self.started = False
        self.resent = 0

    def connect(self) -> Any:
        return self.client.responses.connect(
            extra_headers=self.headers,  # the SDK sends them again on every reconnect
            on_reconnecting=self._on_reconnecting,
            max_retries=8,
            initial_delay=0.1,
            max_delay=1.0,
        )

    def run(self) -> None:
        with self.connect() as conn:
            self.conn = conn
            while len(self.responses) < self.turns:
                self._send(self._create(len(self.responses) + 1))
                self.responses.append(self._completed())

    def _create(self, number: int) -> dict[str, Any]:
        metadata = {"tether.tool_calls": "30"}
        if number == self.slow_turn:
            metadata["tether.argument_bytes"] = "16000"  # a long generation: seconds at speed 0.1
        create: dict[str, Any] = {"model": "tether-sim", "tools": TOOLS, "store": True, "metadata": metadata}
        if number == self.slow_turn:
            create["max_output_tokens"] = 8000
        if not self.responses:
            return {**create, "input": "Find the failing test and fix it."}
        previous = self.responses[-1]
        call = previous.output[-1]
        output = [{"type": "function_call_output", "call_id": call.call_id, "output": "def f(): pass\n"}]
        return {**create, "previous_response_id": previous.id, "input": output}

    def _send(self, create: dict[str, Any]) -> None:
        self.outstanding, self.started = create, False
        with contextlib.suppress(ConnectionClosed):
            # The socket is already closing (1012): iterating reconnects, and _on_reconnecting resends.
            self.conn.response.create(**create)

    def _completed(self) -> Any:
        for event in self.conn:
            if event.type == "response.created":
                self.started = True
                if len(self.responses) + 1 == self.slow_turn:
                    self.slow_started.set()
            elif event.type == "response.completed":
                return event.response
            elif event.type in ("response.failed", "response.incomplete", "error"):
                raise AssertionError(f"turn {len(self.responses) + 1}: {event}")
        raise AssertionError("the connection ended")

    def _on_reconnecting(self, event: Any) -> None:
        self.reconnect_codes.append(event.close_code)
        if self.outstanding is not None and not self.started and event.attempt == 1:
            self.resent += 1
            self.conn.response.create(**self.outstanding)  # queued; sent once reconnected


async def test_the_sdk_reconnects_on_a_drain_and_continues_its_chain_on_the_new_owner(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    (session,) = await sessions_on(http, cluster, "box-0", 1)
    restored_before = await metric(http, cluster, "box-1", "tether_box_session_lookups_total", result="redis")
    agent = SdkAgent(cluster.base_url, session, turns=6, slow_turn=3)
    running = asyncio.ensure_future(asyncio.to_thread(agent.run))
    assert await asyncio.to_thread(agent.slow_started.wait, 60), "turn 3 never started"
    code = await cluster.terminate("box-0")  # SIGTERM while turn 3 is generating
    try:
        await running
        assert code == 0  # the drained box exits cleanly
        assert agent.reconnect_codes[:1] == [1012]
        chain = agent.responses
        assert [r.previous_response_id for r in chain[1:]] == [r.id for r in chain[:-1]]
        assert all(r.status == "completed" for r in chain)
        # Turn 3 finished on box-0 during the drain; turn 4 was restored from Redis on box-1.
        restored = await metric(http, cluster, "box-1", "tether_box_session_lookups_total", result="redis")
        assert restored >= restored_before + 1
    finally:
        await cluster.restart("box-0")


class SealedAgent(SdkAgent):
    """A store:false client on the openai SDK (sync, in a thread) that sends X-Tether-Handoff-Key: one
    turn, then (once `go` is set) a continuation by previous_response_id, resent after the reconnect when
    the drained socket had already closed (SdkAgent's rules)."""

    def __init__(self, base_url: str, session: str) -> None:
        super().__init__(base_url, session, turns=2, slow_turn=0)
        key = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        self.headers["X-Tether-Handoff-Key"] = key
        self.first_done, self.go = threading.Event(), threading.Event()

    def run(self) -> None:
        create = {"model": "tether-sim", "store": False, "max_output_tokens": 64}
        with self.connect() as conn:
            self.conn = conn
            self._send({**create, "input": "Remember the word pineapple."})
            self.responses.append(self._completed())
            self.first_done.set()
            assert self.go.wait(60)
            self._send({**create, "previous_response_id": self.responses[0].id, "input": "Which word?"})
            self.responses.append(self._completed())


async def test_a_store_false_sdk_connection_with_a_handoff_key_continues_across_a_drain(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    (session,) = await sessions_on(http, cluster, "box-0", 1)
    labels = {"result": "restored"}
    restored_before = await metric(http, cluster, "box-1", "tether_box_sealed_handoffs_total", **labels)
    agent = SealedAgent(cluster.base_url, session)
    running = asyncio.ensure_future(asyncio.to_thread(agent.run))
    try:
        assert await asyncio.to_thread(agent.first_done.wait, 60), "the first turn never completed"
        code = await cluster.terminate("box-0")  # SIGTERM: the idle socket is sealed, then closed (1012)
        agent.go.set()
        await running
        assert code == 0
        assert agent.reconnect_codes[:1] == [1012]
        first, second = agent.responses
        assert second.status == "completed"
        assert second.previous_response_id == first.id  # continued by id on box-1, no context resent
        # box-0 kept the chain on the worker when it sealed it, so box-1's first turn is prefilled warm.
        assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens
        restored = await metric(http, cluster, "box-1", "tether_box_sealed_handoffs_total", **labels)
        assert restored == restored_before + 1
    finally:
        agent.go.set()
        await cluster.restart("box-0")


# ---------------------------------------------------------------------------------------------- kill
async def test_a_box_sigkill_loses_only_turns_younger_than_the_write_behind_lag(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    sessions = await sessions_on(http, cluster, "box-0", 6)
    agents = [AgentSession(http, cluster.base_url, turns=40, session_id=s) for s in sessions]
    runs = [asyncio.ensure_future(agent.run()) for agent in agents]
    try:
        while sum(len(a.log.completed) for a in agents) < 60:
            await asyncio.sleep(0.02)  # let turns complete on box-0 right up to the kill
        killed_at = time.monotonic()
        await cluster.kill("box-0")
        logs = await asyncio.gather(*runs)  # they reconnect to box-1 and finish
    finally:
        for run in runs:
            run.cancel()
        await cluster.restart("box-0")
    on_box_0 = [c for log in logs for c in log.completed if c.box == "box-0" and c.at <= killed_at]
    lost = await lost_responses(http, box_url(cluster, "box-1"), [c.response_id for c in on_box_0])
    ages = [killed_at - c.at for c in on_box_0 if c.response_id in lost]
    oldest = max(ages, default=0.0)
    print(f"box SIGKILL: {len(on_box_0)} turns on box-0, {len(lost)} lost, oldest lost {oldest:.3f} s")
    assert all(age < LAG_BOUND for age in ages)
    assert len(lost) < len(on_box_0)


# ---------------------------------------------------------------------------------------------- worker
async def test_a_worker_killed_mid_stream_fails_the_response_and_the_next_turn_succeeds_elsewhere(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{cluster.base_url}/responses", headers=AUTH) as ws:
        first = (await turn(ws, input="Start.", metadata={"tether.tool_calls": "5"}))["response"]
        create = {"type": "response.create", "model": "tether-sim", "store": True, "tools": TOOLS}
        create |= next_turn(first, **{"tether.tool_calls": "0", "tether.answer_tokens": "20000"})
        create["max_output_tokens"] = 25_000  # ~9 s of decoding at speed 0.1
        await ws.send_str(orjson.dumps(create).decode())
        while orjson.loads((await ws.receive(timeout=30)).data)["type"] != "response.output_text.delta":
            pass
        workers = cluster.names("worker")
        busy = [w for w in workers if await metric(http, cluster, w, "tether_worker_running_sequences") > 0]
        assert len(busy) == 1
        await cluster.kill(busy[0])
        try:
            terminal = ("response.completed", "response.failed", "response.incomplete", "error")
            while (event := orjson.loads((await ws.receive(timeout=30)).data))["type"] not in terminal:
                pass
            assert event["type"] == "response.failed"
            assert event["response"]["error"]["code"] == "server_error"
            # The next turn continues from the last completed response, on the other worker.
            again = await turn(ws, **next_turn(first))
            assert again["type"] == "response.completed"
        finally:
            await cluster.restart(busy[0])


# ---------------------------------------------------------------------------------------------- redis
async def test_redis_down_keeps_live_sessions_and_recovers_without_restarting_the_boxes(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    (session,) = await sessions_on(http, cluster, "box-0", 1)
    headers = {**AUTH, "X-Session-Id": session}
    async with http.ws_connect(f"{cluster.base_url}/responses", headers=headers) as ws:
        first = (await turn(ws, input="Start.", metadata={"tether.tool_calls": "30"}))["response"]
        await cluster.kill("redis")
        try:
            during = await turn(ws, **next_turn(first))  # the live session does not notice
            assert during["type"] == "response.completed"
            async with http.ws_connect(f"{box_url(cluster, 'box-1')}/v1/responses", headers=AUTH) as other:
                missed = await turn(other, **next_turn(first))
            assert missed["error"]["code"] == "previous_response_not_found"
            assert await metric(http, cluster, "box-1", "tether_box_redis_up") == 0
        finally:
            await cluster.restart("redis")  # same port, empty; the boxes are not restarted
        after = (await turn(ws, **next_turn(during["response"])))["response"]

        async def box_0_flushed() -> bool:
            up = await metric(http, cluster, "box-0", "tether_box_redis_up")
            depth = await metric(http, cluster, "box-0", "tether_box_write_behind_queue_depth")
            return up == 1 and depth == 0

        await until(box_0_flushed)
        # Redis came back empty: box-0 writes the chain whole on its next turn; then it restores again.
        latest = (await turn(ws, **next_turn(after)))["response"]
        await until(box_0_flushed)
    async with http.ws_connect(f"{box_url(cluster, 'box-1')}/v1/responses", headers=AUTH) as other:
        resumed = await turn(other, **next_turn(latest))
    assert resumed["type"] == "response.completed"
    assert await metric(http, cluster, "box-1", "tether_box_redis_up") == 1


# ---------------------------------------------------------------------------------------------- router
async def test_a_router_restart_returns_sessions_warm_to_the_same_boxes(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    sessions = [*await sessions_on(http, cluster, "box-0", 2), *await sessions_on(http, cluster, "box-1", 2)]
    url = f"{cluster.base_url}/responses"
    sockets = [await http.ws_connect(url, headers={**AUTH, "X-Session-Id": s}) for s in sessions]
    boxes = [ws._response.headers["X-Tether-Box"] for ws in sockets]
    assert boxes == ["box-0", "box-0", "box-1", "box-1"]
    last = [
        (await turn(ws, input="Start.", metadata={"tether.tool_calls": "30"}))["response"] for ws in sockets
    ]
    before = {
        (box, result): await metric(http, cluster, box, "tether_box_session_lookups_total", result=result)
        for box in ("box-0", "box-1")
        for result in ("memory", "redis")
    }
    await cluster.kill("router")
    for ws in sockets:
        gone = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        assert (await ws.receive(timeout=10)).type in gone
        await ws.close()
    await cluster.restart("router")
    for index, session in enumerate(sessions):
        async with http.ws_connect(url, headers={**AUTH, "X-Session-Id": session}) as ws:
            assert ws._response.headers["X-Tether-Box"] == boxes[index]  # the same box as before
            assert (await turn(ws, **next_turn(last[index])))["type"] == "response.completed"
    for box in ("box-0", "box-1"):
        memory = await metric(http, cluster, box, "tether_box_session_lookups_total", result="memory")
        redis = await metric(http, cluster, box, "tether_box_session_lookups_total", result="redis")
        assert memory == before[(box, "memory")] + 2  # warm: found in the box's memory
        assert redis == before[(box, "redis")]  # no cold restore
