"""The benchmark's load generator: one process, one mode, C concurrent agents (asyncio + aiohttp).

`tether bench` starts it as a child (inside the client network namespace for the shaped link) and talks
to it in JSON lines: the job is argv[1], events go to stdout, commands come on stdin.

    runs job    every agent does `runs` agent runs, then {"event": "result", "turns": [...], "runs": [...]}
    ping job    `pings` sequential GET /models, then {"event": "result", "latencies": [...]}
    steady job  {"cmd": "agents", "n": N}  → agents up to N, each past its warm-up turn → {"event": "ready"}
                {"cmd": "window", "seconds": D} → {"event": "window", "turns": [turns inside the window]}
                {"cmd": "quit"} → {"event": "bye"}; agents never stop on their own (after an answer the
                conversation goes on with a new task, so the history keeps what it had)

Each turn also emits {"event": "turn"} (progress bars). A turn record holds the time to first output delta,
the turn time, payload bytes (JSON bodies and WebSocket frame payloads: what tether_box_bytes_total counts)
and wire bytes (the TCP stream: what tether_router_bytes_total counts, see counting.py), and the usage.
Every loop is bounded: turns per run (T + 2), runs, errors (`max_errors`), and the job's `deadline`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import aiohttp
import orjson

from loadtest.bench.counting import ByteCounter, counting_socket_factory
from loadtest.corpus import Corpus
from loadtest.workload import (
    SYNTHETIC,
    AgentRun,
    AgentShape,
    Mode,
    SseParser,
    TextSource,
    TurnError,
    TurnEvents,
    WorkloadError,
    check_mode,
    dumps,
)

SESSION_HEADER = "X-Session-Id"
WS_MAX_MSG = 64 * 1024 * 1024
EXIT_FAILED = 1
STAGGER_SECONDS = 0.05
WARM_SLOTS = 4  # steady warm-ups in flight at once
WARMUP_TIMEOUT = 300.0
DEFLATE_WINDOW_BITS = 15  # what the client offers; the box answers with its own window
Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class ClientJob:
    """What the load generator runs; built from the JSON job argument."""

    base_url: str
    mode: Mode
    shape: AgentShape
    agents: int = 1
    runs: int = 1  # per agent; 0 = a steady job driven from stdin
    api_key: str = "tether-dev-key"
    think_seconds: float = 0.0
    turn_timeout: float = 60.0
    deadline: float = 600.0
    max_errors: int = 20
    label: str = ""
    pings: int = 0  # > 0: a ping job instead (sequential GET /models, for the link emulator's overhead)
    renew_above_tokens: int = 0  # steady jobs: a conversation past this many input tokens starts afresh
    texts: str = "stdlib"  # stdlib: real text (loadtest/corpus.py) | synthetic: generated lines
    seed: int = 1  # picks the stdlib texts; agent a, run r gets the same texts in every job of a seed
    deflate: bool = True  # WebSocket mode offers permessage-deflate (the box decides)

    @classmethod
    def from_json(cls, raw: str | bytes) -> ClientJob:
        """Parse and check a job; ValueError on anything out of range."""
        data = orjson.loads(raw)
        shape = AgentShape(**data.pop("shape"))
        job = cls(shape=shape, **{**data, "mode": check_mode(data["mode"])})
        if not 1 <= job.agents <= 1024 or not 0 <= job.runs <= 10_000 or not 0 <= job.pings <= 100_000:
            raise ValueError("agents must be 1..1024, runs 0..10000 and pings 0..100000")
        if job.turn_timeout <= 0 or job.deadline <= 0 or job.think_seconds < 0 or job.max_errors < 0:
            raise ValueError("timeouts and the deadline must be > 0, think time and max_errors >= 0")
        if job.texts not in ("stdlib", "synthetic"):
            raise ValueError("texts must be stdlib or synthetic")
        return job

    def to_json(self) -> bytes:
        """The job as the JSON argument of this module."""
        return orjson.dumps(asdict(self))


@dataclass(slots=True)
class TurnRecord:
    """One turn as the client saw it (times in seconds since the job started)."""

    agent: int
    run: int
    turn: int
    start: float
    ttft: float | None
    seconds: float
    up_payload: int
    down_payload: int
    up_wire: int
    down_wire: int
    input_tokens: int = 0
    cached_tokens: int = 0
    warmup: bool = False
    error: str | None = None


@dataclass(slots=True)
class RunRecord:
    """One agent run (runs jobs)."""

    agent: int
    run: int
    start: float
    seconds: float
    turns: int
    tool_calls: int
    error: str | None = None


@dataclass(slots=True)
class _Exchange:
    """What one request/response exchange measured."""

    response: dict[str, Any]
    ttft: float | None
    up_payload: int
    down_payload: int


class _WsChannel:
    """One WebSocket connection for one run (store:false state lives on the connection)."""

    def __init__(self, session: aiohttp.ClientSession, job: ClientJob) -> None:
        self.session, self.job = session, job
        self.ws: aiohttp.ClientWebSocketResponse[Literal[False]] | None = None

    async def open(self, session_id: str) -> None:
        url = self.job.base_url.replace("http://", "ws://", 1).rstrip("/") + "/responses"
        headers = {"Authorization": f"Bearer {self.job.api_key}", SESSION_HEADER: session_id}
        self.ws = await self.session.ws_connect(
            url,
            headers=headers,
            max_msg_size=WS_MAX_MSG,
            decode_text=False,
            autoping=True,
            compress=DEFLATE_WINDOW_BITS if self.job.deflate else 0,
        )

    @property
    def deflated(self) -> bool:
        """Whether permessage-deflate was negotiated on this connection."""
        return self.ws is not None and bool(self.ws.compress)

    async def exchange(self, body: dict[str, Any], sent_at: float) -> _Exchange:
        assert self.ws is not None
        frame = dumps(body)
        await self.ws.send_frame(frame, aiohttp.WSMsgType.TEXT)
        down, turn = 0, TurnEvents(sent_at)
        while True:
            msg = await self.ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise TurnError(
                    f"websocket {msg.type.name.lower()} before the turn completed: {msg.data!r:.200}"
                )
            data: bytes = msg.data
            down += len(data)
            event = orjson.loads(data)
            if turn.see(str(event.get("type")), time.perf_counter(), event=event):
                return _Exchange(turn.response(), turn.ttft, len(frame), down)

    async def idle_until(self, release: asyncio.Event) -> None:
        """Wait for `release` while answering the server's pings: aiohttp pongs only inside receive(),
        and a connection that stops answering is closed by the server's heartbeat."""
        waiter = asyncio.ensure_future(release.wait())
        try:
            while not release.is_set() and self.ws is not None:
                reader = asyncio.ensure_future(self.ws.receive())
                await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if not reader.done():
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)
                elif reader.result().type != aiohttp.WSMsgType.TEXT:
                    raise TurnError(f"websocket {reader.result().type.name.lower()} while the agent waited")
        finally:
            waiter.cancel()

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
            self.ws = None


class _HttpChannel:
    """POST /v1/responses with stream:true on the agent's keep-alive session."""

    def __init__(self, session: aiohttp.ClientSession, job: ClientJob) -> None:
        self.session, self.job = session, job
        self.url = job.base_url.rstrip("/") + "/responses"
        self.session_id = ""

    deflated = False  # HTTP bodies go as the SDK sends them: uncompressed

    async def open(self, session_id: str) -> None:
        self.session_id = session_id

    async def idle_until(self, release: asyncio.Event) -> None:
        """Wait for `release` (a pooled HTTP connection needs nothing meanwhile)."""
        await release.wait()

    async def exchange(self, body: dict[str, Any], sent_at: float) -> _Exchange:
        payload = dumps(body)
        headers = {
            "Authorization": f"Bearer {self.job.api_key}",
            "Content-Type": "application/json",
            SESSION_HEADER: self.session_id,
        }
        async with self.session.post(self.url, data=payload, headers=headers) as resp:
            if resp.status != 200:
                text = (await resp.read())[:300].decode(errors="replace")
                raise TurnError(f"HTTP {resp.status}: {text}")
            parser, turn, down = SseParser(), TurnEvents(sent_at), 0
            async for chunk in resp.content.iter_any():
                down += len(chunk)
                for kind, data in parser.feed(chunk):
                    turn.see(kind, time.perf_counter(), data)
            return _Exchange(turn.response(), turn.ttft, len(payload), down)

    async def close(self) -> None:
        return None


class Agent:
    """One simulated agent: its own keep-alive session (and byte counter), runs in sequence."""

    def __init__(
        self,
        index: int,
        job: ClientJob,
        clock: Callable[[], float],
        emit: Emit,
        warm_slots: asyncio.Semaphore | None = None,
        texts: TextSource = SYNTHETIC,
    ) -> None:
        self.index, self.job, self.clock, self.emit, self.texts = index, job, clock, emit, texts
        self.connections = 0
        self.deflated = 0  # connections that negotiated permessage-deflate
        self.warm_slots = warm_slots  # steady jobs: bounds the warm-ups that prefill at once
        self.counter = ByteCounter()
        self.turns: list[TurnRecord] = []
        self.runs: list[RunRecord] = []
        self.errors = 0
        self.error_samples: collections.deque[str] = collections.deque(maxlen=3)
        self.last_input_tokens = 0
        # Steady agents only: `warm` is set once the current conversation's first turn is done; the
        # gate parks the agent between turns (set = may run); `hold` parks it right after its warm-up;
        # `renew` makes it start a fresh conversation (its history grew past the job's bound).
        self.warm = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.parked = asyncio.Event()
        self.hold = False
        self.renew = False
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Agent:
        connector = aiohttp.TCPConnector(limit=2, socket_factory=counting_socket_factory(self.counter))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.job.turn_timeout)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def _channel(self) -> _WsChannel | _HttpChannel:
        assert self._session is not None
        if self.job.mode == "ws":
            return _WsChannel(self._session, self.job)
        return _HttpChannel(self._session, self.job)

    async def do_runs(self, runs: int) -> None:
        """Run `runs` agent runs (a failed run is recorded and the next one starts)."""
        await asyncio.sleep(self.index * STAGGER_SECONDS)  # agents in lock-step would batch every prefill
        for number in range(runs):
            if self.errors > self.job.max_errors:
                return
            await self._one_run(number, steady=False)

    async def run_forever(self) -> None:
        """Keep one conversation going (new tasks after each answer); restart it after a failure or
        when asked to renew it."""
        number = 0
        while self.errors <= self.job.max_errors:
            await self._one_run(number, steady=True)
            number += 1
        self.warm.set()  # never leave a waiter hanging on an agent that gave up
        self.parked.set()

    async def _pass_gate(self, channel: _WsChannel | _HttpChannel) -> None:
        if not self.gate.is_set():
            self.parked.set()
            await channel.idle_until(self.gate)
            self.parked.clear()

    async def _one_run(self, number: int, *, steady: bool) -> None:
        run_id = f"{self.job.label or self.job.mode}-a{self.index}-r{number}-{time.time_ns() % 10**9}"
        content = f"a{self.index}-r{number}"  # the same texts for this agent and run in every job
        run = AgentRun(self.job.mode, self.job.shape, run_id, texts=self.texts, content_key=content)
        channel = self._channel()
        start = self.clock()
        error: str | None = None
        before = self.counter.snapshot()
        # A steady agent's first turn uploads its whole history (in every mode): a warm-up, and at most
        # WARM_SLOTS of them prefill at once; the slot is taken before the connection opens.
        slot = self.warm_slots if steady else None
        try:
            if slot is not None:
                await slot.acquire()
            await channel.open(run_id)
            self.connections += 1
            self.deflated += channel.deflated
            first = True
            while True:
                if steady:
                    await self._pass_gate(channel)
                    if self.renew and not first:
                        self.renew = False
                        break  # the next run starts a fresh conversation
                await self._turn(run, channel, number, before, warmup=steady and first)
                if slot is not None:
                    slot.release()
                    slot = None
                if steady and first:
                    self.warm.set()
                    if self.hold:
                        self.hold = False
                        self.gate.clear()
                first = False
                before = self.counter.snapshot()
                if run.finished:
                    if not steady:
                        break
                    run.continue_session()
                if self.job.think_seconds:
                    await asyncio.sleep(self.job.think_seconds)
        except (TurnError, WorkloadError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
            self.errors += 1
            self.error_samples.append(error)
            self._record_failure(number, run.turn + 1, start, before, error)
        finally:
            if slot is not None:
                slot.release()
            await channel.close()
        if not steady:
            seconds = self.clock() - start
            self.runs.append(RunRecord(self.index, number, start, seconds, run.turn, run.tool_calls, error))

    async def _turn(
        self,
        run: AgentRun,
        channel: _WsChannel | _HttpChannel,
        number: int,
        before: tuple[int, int],
        *,
        warmup: bool,
    ) -> None:
        body = run.next_body()
        start = self.clock()
        sent_at = time.perf_counter()
        # A warm-up prefills the whole synthetic history (seconds on the simulated GPU, behind others).
        timeout = max(self.job.turn_timeout, WARMUP_TIMEOUT) if warmup else self.job.turn_timeout
        async with asyncio.timeout(timeout):
            exchange = await channel.exchange(body, sent_at)
        seconds = time.perf_counter() - sent_at
        result = run.record(exchange.response)
        self.last_input_tokens = result.input_tokens
        sent, received = self.counter.snapshot()
        self.turns.append(
            TurnRecord(
                agent=self.index,
                run=number,
                turn=run.turn,
                start=start,
                ttft=exchange.ttft,
                seconds=seconds,
                up_payload=exchange.up_payload,
                down_payload=exchange.down_payload,
                up_wire=sent - before[0],
                down_wire=received - before[1],
                input_tokens=result.input_tokens,
                cached_tokens=result.cached_tokens,
                warmup=warmup,
            )
        )
        self.emit({"event": "turn"})

    def _record_failure(
        self, number: int, turn: int, start: float, before: tuple[int, int], error: str
    ) -> None:
        sent, received = self.counter.snapshot()
        self.turns.append(
            TurnRecord(
                self.index, number, turn, start, None, self.clock() - start, 0, 0,
                sent - before[0], received - before[1], error=error,
            )
        )  # fmt: skip
        self.emit({"event": "turn", "error": error})


async def run_job(
    job: ClientJob, emit: Emit, commands: Callable[[], Awaitable[dict[str, Any] | None]]
) -> int:
    """Run `job`; 0 when every run completed (runs jobs) or the steady job was told to quit."""
    t0 = time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - t0

    async with asyncio.timeout(job.deadline), contextlib.AsyncExitStack() as stack:
        if job.pings:
            latencies = await _pings(job)
            emit({"event": "result", "latencies": latencies, "seconds": clock()})
            return 0
        texts = texts_of(job)
        if job.runs:
            cpu = time.process_time()
            agents = [
                await stack.enter_async_context(Agent(i, job, clock, emit, texts=texts))
                for i in range(job.agents)
            ]
            await asyncio.gather(*(agent.do_runs(job.runs) for agent in agents))
            turns = [asdict(t) for a in agents for t in a.turns]
            runs = [asdict(r) for a in agents for r in a.runs]
            wire = {
                "sent": sum(a.counter.sent for a in agents),
                "received": sum(a.counter.received for a in agents),
            }
            deflate = {
                "offered": job.mode == "ws" and job.deflate,
                "connections": sum(a.connections for a in agents),
                "negotiated": sum(a.deflated for a in agents),
            }
            emit(
                {
                    "event": "result",
                    "turns": turns,
                    "runs": runs,
                    "wire": wire,
                    "deflate": deflate,
                    "seconds": clock(),
                    "cpu_seconds": time.process_time() - cpu,
                }
            )
            return EXIT_FAILED if any(r["error"] for r in runs) else 0
        return await _steady(job, emit, commands, stack, clock, texts)
    return EXIT_FAILED  # pragma: no cover (the timeout raises)


def texts_of(job: ClientJob) -> TextSource:
    """The job's tool output texts: the standard library's (listed once per process) or generated."""
    return Corpus.stdlib(job.seed) if job.texts == "stdlib" else SYNTHETIC


async def _add_agents(
    job: ClientJob,
    agents: list[Agent],
    tasks: list[asyncio.Task[None]],
    stack: contextlib.AsyncExitStack,
    clock: Callable[[], float],
    emit: Emit,
    wanted: int,
    texts: TextSource,
) -> None:
    """Park every agent, warm up the new ones (and renew the ones whose history outgrew the bound)
    while the others wait, then let everyone run: warm-up prefills never land inside a window."""
    for agent in agents:
        agent.gate.clear()
    await asyncio.gather(*(a.parked.wait() for a in agents))
    warming: list[Agent] = []
    for agent in agents:
        if job.renew_above_tokens and agent.last_input_tokens > job.renew_above_tokens:
            agent.renew, agent.hold = True, True
            agent.warm.clear()
            agent.gate.set()
            warming.append(agent)
    slots = agents[0].warm_slots if agents else asyncio.Semaphore(WARM_SLOTS)
    while len(agents) < wanted:
        agent = await stack.enter_async_context(Agent(len(agents), job, clock, emit, slots, texts))
        agent.hold = True
        agents.append(agent)
        warming.append(agent)
        tasks.append(asyncio.create_task(agent.run_forever()))
    await asyncio.gather(*(a.warm.wait() for a in warming))
    await asyncio.gather(*(a.parked.wait() for a in warming))
    for agent in agents:
        agent.gate.set()


async def _pings(job: ClientJob) -> list[float]:
    """Seconds of `job.pings` sequential GET /models on one keep-alive session."""
    url = job.base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {job.api_key}"}
    latencies = []
    timeout = aiohttp.ClientTimeout(total=job.turn_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(min(job.pings, 100_000)):
            started = time.perf_counter()
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise TurnError(f"GET /models answered {resp.status}")
            latencies.append(time.perf_counter() - started)
    return latencies


async def _steady(
    job: ClientJob,
    emit: Emit,
    commands: Callable[[], Awaitable[dict[str, Any] | None]],
    stack: contextlib.AsyncExitStack,
    clock: Callable[[], float],
    texts: TextSource,
) -> int:
    agents: list[Agent] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        while (command := await commands()) is not None:
            name = command.get("cmd")
            if name == "agents":
                wanted = min(int(command["n"]), 1024)
                await _add_agents(job, agents, tasks, stack, clock, emit, wanted, texts)
                samples = sorted({e for a in agents for e in a.error_samples})[:5]
                emit(
                    {
                        "event": "ready",
                        "agents": len(agents),
                        "errors": sum(a.errors for a in agents),
                        "samples": samples,
                    }
                )
            elif name == "window":
                start, cpu = clock(), time.process_time()
                await asyncio.sleep(float(command["seconds"]))
                end, cpu = clock(), time.process_time() - cpu
                inside = [
                    asdict(t)
                    for a in agents
                    for t in a.turns
                    if t.start >= start and t.start + t.seconds <= end and not t.warmup
                ]
                emit({"event": "window", "start": start, "end": end, "turns": inside, "cpu_seconds": cpu})
            elif name == "quit":
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    emit({"event": "bye", "errors": sum(a.errors for a in agents)})
    return 0


def _emit_line(event: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(event) + b"\n")
    sys.stdout.buffer.flush()


async def _stdin_commands() -> Callable[[], Awaitable[dict[str, Any] | None]]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def next_command() -> dict[str, Any] | None:
        line = await reader.readline()
        return orjson.loads(line) if line.strip() else None

    return next_command


async def _main(raw_job: str) -> int:
    job = ClientJob.from_json(raw_job)
    commands = await _stdin_commands() if job.runs == 0 and not job.pings else _no_commands
    return await run_job(job, _emit_line, commands)


async def _no_commands() -> dict[str, Any] | None:
    return None


def main(argv: list[str] | None = None) -> int:
    """`python -m loadtest.bench.client '<job JSON>'`; see the module docstring."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m loadtest.bench.client '<job JSON>'", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args[0]))
    except (ValueError, KeyError, TypeError) as exc:
        print(f"bad job: {exc}", file=sys.stderr)
        return 2
    except TimeoutError:
        print("the job ran past its deadline", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
