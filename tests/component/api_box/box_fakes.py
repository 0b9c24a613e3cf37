"""A fake WorkerPool for the API box's component tests: the real client's interface and delta protocol.

It keeps a chain per cache key like a worker (so a wrong held_len/digest is detected and answered with a
full resend, counted as "resend"), records every request and how many tokens travelled, and generates by
a script: by default, a function call while the metadata asks for more calls since the last user
message (`fake_calls`, default 0), else a short text answer. Output ids are the chat-format rendering of
the output item, as the real engines produce.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gpu_worker.client import (
    CallDelta,
    CallStart,
    Done,
    GenerationRequest,
    Prefill,
    TextDelta,
    WorkerEvent,
    WorkerUnavailable,
)
from gpu_worker.wire import chat
from gpu_worker.wire.chain import digest_of
from gpu_worker.wire.model import ModelDescription

ANSWER = "Here is the answer."


@dataclass
class Reply:
    """What the fake generates for one request."""

    text: str | None = ANSWER
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (call_id, name, arguments)
    finish_reason: str = "stop"


def default_script(req: GenerationRequest) -> Reply:
    """A tool call while `fake_calls` says more are due, else a text answer."""
    wanted = int(req.metadata.get("fake_calls", "0"))
    if req.tools and req.agent.tool_calls_since_user_message < wanted:
        n = req.agent.tool_calls_since_user_message
        arguments = f'{{"n": {n}}}'
        return Reply(text=None, calls=[(f"call_{req.request_id[-8:]}_{n}", req.tools[0].name, arguments)])
    return Reply(text=req.metadata.get("fake_text", ANSWER))


@dataclass
class Sent:
    """One generate call as the worker saw it."""

    request: GenerationRequest
    tokens_sent: int  # tokens that travelled (the delta, or the whole chain)
    resent: bool
    chain: tuple[int, ...] = ()  # the prompt chain as it was when the call was made


class FakeWorkerPool:
    """Stands in for gpu_worker.client.WorkerPool."""

    def __init__(self, script: Callable[[GenerationRequest], Reply] = default_script) -> None:
        self.script = script
        self.targets = ("fake-worker-a:1", "fake-worker-b:2")
        self.chains: dict[str, list[int]] = {}
        self.sent: list[Sent] = []
        self.dropped: list[str] = []
        self.counts: Counter[str] = Counter()
        self.started = False
        self.closed = False
        self.fail_mid_stream = 0  # the next N calls die after their first delta
        self.gate: asyncio.Event | None = None  # when set, generations wait for it after Prefill
        self.delta_repeat = 1  # emit the text this many times (big outputs)
        self.piece_size = 4  # characters per delta
        # Described models by name; empty: the fake workers do not describe a model (they serve any name).
        self.models: dict[str, ModelDescription] = {}
        self.stops: list[str] = []  # request ids the box asked to stop (a steered text answer ends early)
        self._running: set[str] = set()

    @property
    def call_counts(self) -> Mapping[str, int]:
        return dict(self.counts)

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def owner(self, cache_key: str) -> str:
        return self.targets[hash(cache_key) % len(self.targets)]

    async def describe(self) -> None:
        return None

    @property
    def descriptions(self) -> Mapping[str, ModelDescription | None]:
        if not self.models:
            return dict.fromkeys(self.targets)
        return dict(zip(self.targets, self.models.values(), strict=False))

    def description(self, model: str) -> ModelDescription | None:
        return self.models.get(model)

    def has_untyped_workers(self) -> bool:
        return not self.models

    async def stop(self, request_id: str) -> bool:
        self.stops.append(request_id)
        return request_id in self._running

    async def drop(self, cache_key: str) -> bool:
        self.dropped.append(cache_key)
        return self.chains.pop(cache_key, None) is not None

    async def generate(self, req: GenerationRequest) -> AsyncIterator[WorkerEvent]:
        resent = False
        if req.held_len:
            held = self.chains.get(req.cache_key or "")
            resent = held is None or len(held) != req.held_len or digest_of(held) != req.held_digest
        self.sent.append(
            Sent(req, len(req.chain) - (0 if resent else req.held_len), resent, tuple(req.chain))
        )
        reply = self.script(req) if req.generate else Reply(text=None)
        output = _render(reply)
        yield Prefill(
            len(req.chain), req.held_len if not resent else 0, len(req.chain) - req.held_len, 0.0, "fake"
        )
        if self.gate is not None:
            await self.gate.wait()
        self._running.add(req.request_id)
        text: list[str] = []
        try:
            async for event in self._deltas(reply):
                yield event
                if isinstance(event, TextDelta):
                    text.append(event.text)
                if req.request_id in self.stops and not reply.calls:  # cut as at a length limit
                    output = chat.render_message("assistant", "".join(text))[:-1]
                    reply = Reply(text="".join(text), finish_reason="stopped")
                    break
        finally:
            self._running.discard(req.request_id)
        chain = [*req.chain, *output]
        if req.cache_key:
            self.chains[req.cache_key] = chain
        self.counts["resend" if resent else "ok"] += 1
        yield Done(
            finish_reason="tool_call" if reply.calls else reply.finish_reason,
            prompt_tokens=len(req.chain),
            cached_tokens=0 if resent else req.held_len,
            output_tokens=len(output),
            output_token_ids=tuple(output),
            chain_len=len(chain),
            chain_digest=digest_of(chain),
            worker="fake",
        )

    async def _deltas(self, reply: Reply) -> AsyncIterator[WorkerEvent]:
        if reply.text is not None:
            for _ in range(self.delta_repeat):
                for piece in _pieces(reply.text, self.piece_size):
                    yield TextDelta(piece, 1)
                    await self._maybe_die()
        for call_id, name, arguments in reply.calls:
            yield CallStart(call_id, name)
            for piece in _pieces(arguments):
                yield CallDelta(piece, 1)
                await self._maybe_die()

    async def _maybe_die(self) -> None:
        await asyncio.sleep(0)
        if self.fail_mid_stream:
            self.fail_mid_stream -= 1
            self.counts["error"] += 1
            raise WorkerUnavailable("fake worker went away mid-stream")


def _pieces(text: str, size: int = 4) -> Sequence[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _render(reply: Reply) -> list[int]:
    ids: list[int] = []
    if reply.text is not None:
        ids += chat.render_message("assistant", reply.text)
    for _, name, arguments in reply.calls:
        ids += chat.render_function_call(name, arguments)
    return ids


TERMINAL = {"response.completed", "response.failed", "response.incomplete", "error"}


async def ws_turn(ws: object, event: dict[str, object] | None = None) -> list[dict[str, object]]:
    """Send `event` (when given) on an aiohttp client WebSocket and read events up to a terminal one."""
    import orjson
    from aiohttp import ClientWebSocketResponse, WSMsgType

    assert isinstance(ws, ClientWebSocketResponse)
    if event is not None:
        await ws.send_str(orjson.dumps({"type": "response.create", "model": "m", **event}).decode())
    events: list[dict[str, object]] = []
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type is WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        events.append(orjson.loads(msg.data))
        if events[-1]["type"] in TERMINAL:
            return events


class MemoryColdStore:
    """A ColdStore kept in a dict, shared by several boxes: what the Redis implementation must do."""

    def __init__(self) -> None:
        from api_box.core.handoff import TurnRecord

        self.turns: dict[tuple[str, str], bytes] = {}
        self.appends = 0
        self.restores = 0
        self._record_type = TurnRecord

    @property
    def enabled(self) -> bool:
        return True

    async def append(self, turn: object) -> None:
        self.appends += 1
        raw = turn.to_bytes()  # type: ignore[attr-defined]
        self.turns[(turn.tenant, turn.response_id)] = raw  # type: ignore[attr-defined]

    async def restore(self, tenant: str, response_id: str) -> object | None:
        from api_box.core.handoff import snapshot_from_turns

        self.restores += 1
        chain = []
        key: str | None = response_id
        while key is not None:
            raw = self.turns.get((tenant, key))
            if raw is None:
                return None
            turn = self._record_type.from_bytes(raw)
            chain.append(turn)
            key = turn.base_response_id
        return snapshot_from_turns(list(reversed(chain)))

    async def delete(self, tenant: str, response_id: str) -> bool:
        return self.turns.pop((tenant, response_id), None) is not None

    def needs_whole(self, cache_key: str) -> bool:
        return False  # nothing is ever lost here

    async def flush(self) -> bool:
        return True

    async def close(self) -> None:
        return None
