"""Engines and helpers for the worker's component tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from gpu_worker.client import Done, GenerationRequest, Prefill, TextDelta, ToolSpec, WorkerEvent, WorkerPool
from gpu_worker.core.errors import PreconditionFailed, QueueFull
from gpu_worker.engines.base import EngineEvent, Finished, GenerationJob, Prefilled, TextChunk
from gpu_worker.server.app import WorkerServer
from gpu_worker.wire import chat
from gpu_worker.wire._pb import worker_pb2 as pb
from gpu_worker.wire._pb import worker_pb2_grpc as pb_grpc
from gpu_worker.wire.tokenizer import Special, decode, encode

WorkerFactory = Callable[..., Awaitable[WorkerServer]]  # the make_worker fixture (conftest.py)
PoolFactory = Callable[..., Awaitable[WorkerPool]]  # the make_pool fixture

GREP_SCHEMA = {"type": "object", "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}}}
GREP = ToolSpec("grep", "Search files.", json.dumps(GREP_SCHEMA))


def header(instructions: str = "You are a careful coding agent. " * 20) -> list[int]:
    """Instructions + tools: the same for every turn of a run."""
    tools = [{"name": GREP.name, "description": GREP.description, "parameters": GREP_SCHEMA}]
    return chat.render_instructions(instructions) + chat.render_tools(tools)


def first_chain(user: str = "find where fizz is defined") -> list[int]:
    """The chain of an agent run's first turn."""
    return header() + chat.render_message("user", user)


@dataclass
class Turn:
    events: list[WorkerEvent]

    @property
    def prefill(self) -> Prefill:
        first = self.events[0]
        assert isinstance(first, Prefill)
        return first

    @property
    def done(self) -> Done:
        last = self.events[-1]
        assert isinstance(last, Done)
        return last

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))


async def run_turn(pool: WorkerPool, req: GenerationRequest) -> Turn:
    """Collect one generation's events."""
    return Turn([event async for event in pool.generate(req)])


def request(
    chain: Sequence[int], key: str | None = "session-1", done: Done | None = None, **kw: object
) -> GenerationRequest:
    """A request for `chain`, held up to the previous turn's Done when given."""
    options: dict[str, object] = {"tools": (GREP,), **kw}
    if done is not None:
        options.update(held_len=done.chain_len, held_digest=done.chain_digest)
    return GenerationRequest(request_id="req", cache_key=key, chain=list(chain), **options)  # type: ignore[arg-type]


async def raw_generate(
    address: str, req: pb.GenerateRequest
) -> tuple[list[pb.GenerateEvent], grpc.aio.AioRpcError | None]:
    """Call Generate on the bare stub (what travels is exactly `req`)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.WorkerStub(channel)
        events: list[pb.GenerateEvent] = []
        try:
            async for event in stub.Generate(req, timeout=10):
                events.append(event)
        except grpc.aio.AioRpcError as exc:
            return events, exc
        return events, None


def trailing(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    return {k: v for k, v in (exc.trailing_metadata() or ()) if isinstance(v, str)}


class GatedEngine:
    """Prefilled and one text chunk at once, the rest only after `gate` is set."""

    name = "gated"

    def __init__(self, text: str = "hello from the gated engine") -> None:
        self.body = encode(text)
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.jobs: list[GenerationJob] = []
        self.dropped: list[str] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def drop(self, key: str) -> None:
        self.dropped.append(key)

    async def generate(self, job: GenerationJob) -> AsyncIterator[EngineEvent]:
        self.jobs.append(job)
        try:
            yield Prefilled(queue_seconds=0.0)
            yield TextChunk(decode(self.body[:1]), 1)
            self.started.set()
            await self.gate.wait()
            for token in self.body[1:]:
                yield TextChunk(decode([token]), 1)
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.set()
            raise
        yield Finished("stop", (Special.ASSISTANT, *self.body, Special.END))


class FaultyEngine(GatedEngine):
    """Fails in a chosen way: "crash" after Prefilled, "queue_full" at admission, "forgot" when asked to
    reuse a prefix (as a torch engine that evicted it would)."""

    def __init__(self, fault: str) -> None:
        super().__init__()
        self.fault = fault
        self.gate.set()

    async def generate(self, job: GenerationJob) -> AsyncIterator[EngineEvent]:
        if self.fault == "queue_full":
            raise QueueFull("test: queue full")
        if self.fault == "forgot" and job.reuse_from is not None:
            raise PreconditionFailed("unknown_cache_key", "test: the engine evicted it")
        async for event in super().generate(job):
            yield event
            if self.fault == "crash":
                raise RuntimeError("test: engine crashed")
