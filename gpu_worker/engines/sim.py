"""The sim engine: no model, real timing. The agent policy (gpu_worker/core/agent.py) decides each output
item, and a background task runs the continuous-batching timing model (gpu_worker/core/timing.py) on the
event loop, so every token arrives when the calibrated GPU would have produced it and latency is
observable from outside. `speed` scales every delay (0: none at all, for tests and overhead benchmarks).

The output ids are exactly the chat-format rendering of the item (wire/chat.py): `[ASSISTANT] text [END]`
or `[CALL] name [ARGS] arguments [END]`, cut at max_output_tokens (finish_reason "length"). A text answer
whose job's stop signal is set ends after the token being produced, cut there as at max_output_tokens; a
call runs to its end.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gpu_worker.core.agent import AgentSettings, Answer, answer_text, decide
from gpu_worker.core.errors import EngineFailure
from gpu_worker.core.timing import BatchScheduler, StepOutcome, TimingModel
from gpu_worker.engines.base import (
    ArgsChunk,
    CallStart,
    EngineEvent,
    Finished,
    GenerationJob,
    Prefilled,
    TextChunk,
)
from gpu_worker.wire.chat import render_function_call
from gpu_worker.wire.tokenizer import Special, decode_bytes, encode

__all__ = ["PlannedOutput", "SimEngine", "plan_output"]

_LOG = logging.getLogger("gpu_worker.engine.sim")
_LATE_SLACK = 0.005  # a step that starts at most this late still counts from the previous step's end

# What the step loop tells a waiting generation: a float = prefilled after waiting that long for a slot,
# None = one more token, an exception = the engine failed.
_Signal = float | None | BaseException


@dataclass(frozen=True, slots=True)
class PlannedOutput:
    """The whole output of one generation, decided before it starts (the sim knows its future)."""

    ids: tuple[int, ...]
    per_token: tuple[tuple[EngineEvent, ...], ...]  # the events each output token releases
    finish_reason: str

    @property
    def is_text(self) -> bool:
        """An assistant message (which a stop may cut), not a tool call."""
        return self.ids[:1] == (Special.ASSISTANT,)


def plan_output(job: GenerationJob, settings: AgentSettings) -> PlannedOutput:
    """Decide and render the output item of `job`, cut at `job.max_output_tokens`."""
    if not job.generate:
        return PlannedOutput((), (), "stop")
    decision = decide(job, settings.from_metadata(job.metadata))
    if isinstance(decision, Answer):
        body = encode(answer_text(job, decision.max_tokens))
        ids = [Special.ASSISTANT, *body, Special.END]
        events = [(), *_text_events(body, TextChunk), ()]
        finish = "stop"
    else:
        ids = render_function_call(decision.name, decision.arguments)
        name_len = ids.index(Special.ARGS)
        args = ids[name_len + 1 : -1]
        events = [()] * name_len + [(CallStart(decision.call_id, decision.name),)]
        events += [*_text_events(args, ArgsChunk), ()]
        finish = "tool_call"
    limit = job.max_output_tokens
    if len(ids) > limit:
        ids, events, finish = ids[:limit], events[:limit], "length"
    return PlannedOutput(tuple(int(i) for i in ids), tuple(events), finish)


def _text_events(ids: list[int], kind: type[TextChunk] | type[ArgsChunk]) -> list[tuple[EngineEvent, ...]]:
    # Incremental UTF-8: a token may end inside a multi-byte character; its text then comes with the next.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    events: list[tuple[EngineEvent, ...]] = []
    for token in ids:
        text = decoder.decode(decode_bytes([token]))
        events.append((kind(text, 1),) if text else ())
    return events


class SimEngine:
    """Engine protocol implementation over the timing model; holds no KV (drop is a no-op)."""

    name = "sim"

    def __init__(
        self, timing: TimingModel | None = None, agent: AgentSettings | None = None, *, speed: float = 1.0
    ) -> None:
        self.timing = (timing or TimingModel()).scaled(speed)
        self.agent = agent or AgentSettings()
        self._scheduler = BatchScheduler(self.timing)
        self._inboxes: dict[int, asyncio.Queue[_Signal]] = {}
        self._ids = itertools.count(1)
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    @property
    def running(self) -> int:
        """Sequences in the simulated batch."""
        return self._scheduler.running

    @property
    def waiting(self) -> int:
        """Sequences queued for a batch slot."""
        return self._scheduler.waiting

    async def start(self) -> None:
        """Start the step loop on the running event loop."""
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="sim-engine-steps")

    async def stop(self) -> None:
        """Stop the step loop; generations still waiting fail with EngineFailure."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all(EngineFailure("the engine stopped"))

    def drop(self, key: str) -> None:
        """Nothing to free: the sim keeps no KV."""

    async def generate(self, job: GenerationJob) -> AsyncIterator[EngineEvent]:
        """Prefilled, the chunks of the planned output as its tokens are produced, then Finished."""
        if self._task is None or self._wakeup is None:
            raise EngineFailure(f"the sim engine is not running ({self._failure or 'not started'})")
        output = plan_output(job, self.agent)
        seq_id = next(self._ids)
        loop = asyncio.get_running_loop()
        self._scheduler.submit(seq_id, job.computed_len, len(output.ids), loop.time())
        # Unbounded but finite: one signal per output token, and outputs are capped by max_output_tokens.
        inbox: asyncio.Queue[_Signal] = asyncio.Queue()
        self._inboxes[seq_id] = inbox
        self._wakeup.set()
        try:
            yield Prefilled(queue_seconds=_expect_float(await inbox.get()))
            for produced, events in enumerate(output.per_token, 1):
                _expect_token(await inbox.get())
                for event in events:
                    yield event
                if job.stop.requested and output.is_text and produced < len(output.ids):
                    yield Finished("length", output.ids[:produced])  # stopped: cut as at a length limit
                    return
            yield Finished(output.finish_reason, output.ids)
        finally:
            self._scheduler.cancel(seq_id)  # frees the batch slot when the consumer left early
            self._inboxes.pop(seq_id, None)
            self._wakeup.set()

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop, scheduler, wakeup = asyncio.get_running_loop(), self._scheduler, self._wakeup
        step_end = loop.time()  # when the previous step ended on the model's clock
        try:
            while True:
                now = loop.time()
                step = scheduler.plan(now)
                if step is None:
                    wakeup.clear()
                    ready = scheduler.next_ready_at()
                    with contextlib.suppress(TimeoutError):
                        timeout = None if ready is None else max(ready - loop.time(), 0.0)
                        await asyncio.wait_for(wakeup.wait(), timeout)
                    continue
                # Back-to-back steps start where the previous one ended on the model's clock, so the
                # event loop's timer granularity (about 1 ms late per sleep) does not accumulate.
                start = step_end if 0.0 <= now - step_end <= _LATE_SLACK else now
                step_end = start + step.duration
                await asyncio.sleep(max(step_end - loop.time(), 0.0))
                self._deliver(scheduler.complete(step, loop.time()))
        except Exception as exc:  # a bug here must fail the waiting generations, not hang them
            _LOG.exception("sim engine step loop failed")
            self._failure = exc
            self._task = None
            self._fail_all(EngineFailure(f"the sim engine failed: {exc}"))

    def _deliver(self, outcome: StepOutcome) -> None:
        for seq_id, queue_seconds in outcome.prefilled:
            inbox = self._inboxes.get(seq_id)
            if inbox is not None:
                inbox.put_nowait(queue_seconds)
        for seq_id in outcome.tokens:
            inbox = self._inboxes.get(seq_id)
            if inbox is not None:
                inbox.put_nowait(None)

    def _fail_all(self, error: BaseException) -> None:
        for inbox in self._inboxes.values():
            inbox.put_nowait(error)


def _expect_float(signal: _Signal) -> float:
    if isinstance(signal, BaseException):
        raise signal
    if signal is None:
        raise EngineFailure("sim engine: a token arrived before the prefill finished")
    return signal


def _expect_token(signal: _Signal) -> None:
    if isinstance(signal, BaseException):
        raise signal
    if signal is not None:
        raise EngineFailure("sim engine: a second prefill signal arrived")
