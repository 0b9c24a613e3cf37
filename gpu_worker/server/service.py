"""WorkerService: one Generate from validated request to Done, independent of the gRPC plumbing.

Per request: validate (core/validation.py) → resolve the prompt against the cache (a delta must build
on exactly the held prefix; a full chain reuses the longest held prefix) → run the engine → on Finished,
commit prompt + output as the chain's new entry, marked retained when the request asked for it
(`retain_seconds`, within the cache's retained share), and evict under the budget. The chain entry
changes only at that commit, so a cancelled or failed request leaves it as it was; only an engine failure
(the engine's state is unknown) drops it. `stop(request_id)` (the Stop RPC, a steered response) sets the
running job's stop signal: an engine that honours it ends early and its output so far is committed as at
max_output_tokens, reported with finish_reason "stopped". A prefix the engine turns out not to hold (it raised
PreconditionFailed for its `reuse_from`) is forgotten and the job rerun once from scratch, before any
event went out.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from array import array
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

from gpu_worker.core.agent import AgentSettings
from gpu_worker.core.cache import ANON_PREFIX, ChainCache, Evicted, Reuse
from gpu_worker.core.errors import Draining, EngineFailure, PreconditionFailed, WorkerError
from gpu_worker.core.validation import Limits, WorkRequest, validate
from gpu_worker.engines.base import (
    ArgsChunk,
    CallStart,
    Engine,
    Finished,
    GenerationJob,
    Prefilled,
    TextChunk,
)
from gpu_worker.server.metrics import WorkerMetrics
from gpu_worker.wire._pb import worker_pb2 as pb
from gpu_worker.wire.chain import ChainDigest
from gpu_worker.wire.model import tether_description

__all__ = ["WorkerService", "closing_iterator"]

_LOG = logging.getLogger("gpu_worker.service")
_HASH_IN_THREAD_TOKENS = 8192  # full chains longer than this are hashed off the event loop (~1.5 ms)
_T = TypeVar("_T")


@asynccontextmanager
async def closing_iterator(iterator: AsyncIterator[_T]) -> AsyncGenerator[AsyncIterator[_T], None]:
    """Close an async generator deterministically when its consumer stops early (not at GC time):
    closing the engine's generator is what frees its batch slot."""
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(slots=True)
class _Plan:
    job: GenerationJob
    prompt: array[int]
    digest: ChainDigest  # of the prompt; extended with the output at commit
    keyless: bool
    retain_seconds: int = 0


@dataclass(slots=True)
class _Flight:
    plan: _Plan
    pinned: bool = True  # the reuse source is pinned in the cache
    running: bool = False  # prefilled (counted as running rather than queued)
    events: int = 0  # events yielded to the client
    cached: int | None = None  # prompt tokens served from cache, once prefilled (the engine's own count)


class WorkerService:
    """The worker's request logic over an Engine and a ChainCache."""

    def __init__(
        self,
        engine: Engine,
        cache: ChainCache,
        metrics: WorkerMetrics,
        *,
        limits: Limits | None = None,
        agent: AgentSettings | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.metrics = metrics
        self.limits = limits or Limits()
        self.agent = agent or AgentSettings()
        self._clock = clock
        # What DescribeModel answers; the server sets the engine's own once it has started.
        self.description = tether_description(
            ("tether-sim",), engine=engine.name, context_length=self.limits.max_prompt_tokens
        )
        self.kv_bytes_per_token = 0  # the engine's, once started (0: no real KV); for retained bytes
        self.metrics.retained_budget.set(cache.retained_budget)
        self.draining = False
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._anon_keys: set[str] = set()
        self._anon_seq = itertools.count(1)
        self._flights: dict[str, _Flight] = {}  # running generations by request id (for stop)

    @property
    def active(self) -> int:
        """Generations in flight."""
        return self._active

    async def wait_idle(self) -> None:
        """Return once no generation is in flight (bound it with asyncio.timeout)."""
        await self._idle.wait()

    def drop(self, key: str) -> int:
        """DropSession: forget a chain in the cache and the engine; tokens freed."""
        freed = self.cache.drop(key)
        self.engine.drop(key)
        self._update_cache_gauges()
        return freed

    def stop(self, request_id: str) -> bool:
        """Ask the running generation `request_id` to end early; whether one runs here."""
        flight = self._flights.get(request_id)
        if flight is None:
            return False
        flight.plan.job.stop.set()
        return True

    async def generate(self, request: WorkRequest) -> AsyncIterator[pb.GenerateEvent]:
        """The event stream of one request (raises WorkerError subclasses before or during it)."""
        if self.draining:
            raise Draining("the worker is draining; send this request to another worker")
        req = validate(request, self.limits, self.description)
        self.agent.from_metadata(req.metadata)  # bad agent metadata fails here, before any work
        digest = None
        if not req.base_len and len(req.tokens) > _HASH_IN_THREAD_TOKENS:
            # Hashing a long full chain takes milliseconds of pure Python: keep the event loop free.
            digest = await asyncio.to_thread(ChainDigest, req.tokens)
        plan = self._plan(req, digest)
        self._active += 1
        self._idle.clear()
        try:
            async for event in self._run(plan):
                yield event
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    # ---------------------------------------------------------------------------------------- plan
    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _plan(self, req: WorkRequest, full_digest: ChainDigest | None = None) -> _Plan:
        if req.base_len:
            try:
                entry = self.cache.holding(req.cache_key, req.base_len, req.base_digest)
            except PreconditionFailed as exc:
                self.metrics.precondition_failures.labels(reason=exc.reason).inc()
                raise
            prompt = array("I", entry.tokens)
            prompt.extend(req.tokens)
            digest = entry.digest.copy()
            digest.extend(req.tokens)
            reuse = Reuse(entry.key, req.base_len)
        else:
            prompt = array("I", req.tokens)
            digest = full_digest if full_digest is not None else ChainDigest(prompt)
            reuse = self.cache.best_prefix(req.cache_key or None, prompt, digest.block_hashes)
            if not req.cache_key:
                self.metrics.prefix_lookups.labels(result="hit" if reuse.length else "miss").inc()
        # A warm-up (generate: false) holds only its prompt.
        self.cache.check_fits(len(prompt) + (req.max_output_tokens if req.generate else 0))
        # A generation needs the logits of the last prompt token, so at least that one is computed.
        reuse_len = min(reuse.length, len(prompt) - 1) if req.generate else reuse.length
        job = GenerationJob(
            request_id=req.request_id,
            key=req.cache_key or self._anonymous_key(digest),
            prompt=prompt,
            reuse_from=reuse.source if reuse_len > 0 else None,
            reuse_len=max(reuse_len, 0),
            max_output_tokens=req.max_output_tokens,
            tools=req.tools,
            tool_choice=req.tool_choice,
            agent=req.agent,
            metadata=req.metadata,
            seed=req.seed,
            temperature=req.temperature,
            top_p=req.top_p,
            generate=req.generate,
        )
        return _Plan(job, prompt, digest, keyless=not req.cache_key, retain_seconds=req.retain_seconds)

    def _anonymous_key(self, digest: ChainDigest) -> str:
        # Derived from the prompt, so a replayed keyless run gets the same agent decisions; made unique
        # while another request with the same prompt is in flight (the engine must not share its key).
        key = ANON_PREFIX + digest.digest().hex()
        while key in self._anon_keys:
            key = f"{ANON_PREFIX}{digest.digest().hex()}#{next(self._anon_seq)}"
        return key

    # ----------------------------------------------------------------------------------------- run
    async def _run(self, plan: _Plan) -> AsyncIterator[pb.GenerateEvent]:
        flight = self._begin(plan)
        try:
            for attempt in (1, 2):
                try:
                    async with closing_iterator(self._events(flight)) as events:
                        async for event in events:
                            flight.events += 1
                            yield event
                    return
                except PreconditionFailed:
                    # The engine does not hold `reuse_from` (evicted on its side): forget it, recompute.
                    source = plan.job.reuse_from
                    if flight.events or attempt == 2 or source is None:
                        raise
                    self._unpin(flight)
                    self.drop(source)
                    plan.job = replace(plan.job, reuse_from=None, reuse_len=0)
        except EngineFailure:
            self.drop(plan.job.key)  # the engine's state for the chain is unknown now
            raise
        except WorkerError:
            raise
        except Exception as exc:
            _LOG.exception("engine failed on request %s", plan.job.request_id)
            self.drop(plan.job.key)
            raise EngineFailure(f"engine error: {type(exc).__name__}") from exc
        finally:
            self._end(flight)

    def _begin(self, plan: _Plan) -> _Flight:
        source = plan.job.reuse_from
        self.cache.pin(source)
        if source is not None:
            self.cache.touch(source, self._now())
        if plan.keyless:
            self._anon_keys.add(plan.job.key)
        self.metrics.queue_depth.inc()
        flight = _Flight(plan)
        if plan.job.request_id:
            self._flights[plan.job.request_id] = flight
        return flight

    def _end(self, flight: _Flight) -> None:
        if self._flights.get(flight.plan.job.request_id) is flight:
            del self._flights[flight.plan.job.request_id]
        self._unpin(flight)
        self._anon_keys.discard(flight.plan.job.key)
        (self.metrics.running if flight.running else self.metrics.queue_depth).dec()

    def _unpin(self, flight: _Flight) -> None:
        if flight.pinned:
            self.cache.unpin(flight.plan.job.reuse_from)
            flight.pinned = False

    async def _events(self, flight: _Flight) -> AsyncIterator[pb.GenerateEvent]:
        async with closing_iterator(self.engine.generate(flight.plan.job)) as events:
            async for event in events:
                if isinstance(event, Prefilled):
                    yield self._prefilled(flight, event)
                elif isinstance(event, TextChunk):
                    yield pb.GenerateEvent(text=pb.TextDelta(text=event.text, tokens=event.tokens))
                elif isinstance(event, CallStart):
                    start = pb.FunctionCallStart(call_id=event.call_id, name=event.name)
                    yield pb.GenerateEvent(call_start=start)
                elif isinstance(event, ArgsChunk):
                    delta = pb.FunctionCallDelta(arguments=event.text, tokens=event.tokens)
                    yield pb.GenerateEvent(call_delta=delta)
                elif isinstance(event, Finished):
                    yield self._commit(flight, event)
                    return
        raise EngineFailure("the engine ended the generation without Finished")

    def _prefilled(self, flight: _Flight, event: Prefilled) -> pb.GenerateEvent:
        job = flight.plan.job
        if not flight.running:
            flight.running = True
            self.metrics.queue_depth.dec()
            self.metrics.running.inc()
        self.metrics.queue_wait.observe(max(event.queue_seconds, 0.0))
        # An engine with its own prefix cache (vLLM) counts what it reused; others reuse job.reuse_len.
        reported = job.reuse_len if event.cached_tokens is None else event.cached_tokens
        cached = min(max(reported, 0), len(job.prompt))
        flight.cached = cached
        self.metrics.prefill_tokens.labels(kind="cached").inc(cached)
        self.metrics.prefill_tokens.labels(kind="computed").inc(len(job.prompt) - cached)
        prefill = pb.Prefill(
            prompt_tokens=len(job.prompt),
            cached_tokens=cached,
            computed_tokens=len(job.prompt) - cached,
            queue_seconds=event.queue_seconds,
        )
        return pb.GenerateEvent(prefill=prefill)

    def _commit(self, flight: _Flight, finished: Finished) -> pb.GenerateEvent:
        plan, job = flight.plan, flight.plan.job
        output = finished.output_ids
        chain = array("I", plan.prompt)
        chain.extend(output)
        plan.digest.extend(output)
        self._unpin(flight)  # before the commit: a superseded anonymous source must not be pinned
        supersedes = job.reuse_from if plan.keyless else None
        now = self._now()
        evicted = self.cache.commit(
            job.key, chain, plan.digest, now, supersedes=supersedes, retain_seconds=plan.retain_seconds
        )
        retained = self._retained_seconds(job.key, now)
        if plan.retain_seconds:
            self.metrics.retention_requests.labels(result="granted" if retained else "denied").inc()
        self._forget_evicted(evicted)
        self.metrics.output_tokens.inc(len(output))
        counts = finished.tool_calls
        if counts is not None:
            self.metrics.tool_calls.labels(result="call").inc(counts.calls)
            self.metrics.tool_calls.labels(result="malformed").inc(counts.malformed)
            self.metrics.tool_calls.labels(result="text").inc(counts.text)
        stopped = job.stop.requested and finished.finish_reason == "length"
        done = pb.Done(
            finish_reason="stopped" if stopped else finished.finish_reason,
            prompt_tokens=len(plan.prompt),
            cached_tokens=job.reuse_len if flight.cached is None else flight.cached,
            output_tokens=len(output),
            output_token_ids=output,
            chain_len=len(chain),
            chain_digest=plan.digest.digest(),
            retained_seconds=retained,
        )
        return pb.GenerateEvent(done=done)

    def _retained_seconds(self, key: str, now: float) -> int:
        entry = self.cache.get(key)
        left = entry.retained_until - now if entry is not None else 0.0
        return max(round(left), 1) if left > 0 else 0  # whole seconds; 1 while any is left

    def _forget_evicted(self, evicted: list[Evicted]) -> None:
        for item in evicted:
            self.engine.drop(item.key)
            if item.reason == "lru":
                self.metrics.evictions.inc()
                self.metrics.evicted_tokens.inc(item.tokens)
            if item.retained:
                self.metrics.retained_evictions.inc()
        self._update_cache_gauges()

    def refresh_gauges(self) -> None:
        """Bring the cache gauges up to now (retention marks expire between commits)."""
        self._update_cache_gauges()

    def _update_cache_gauges(self) -> None:
        self.metrics.kv_tokens.set(self.cache.tokens_held)
        self.metrics.kv_chains.set(len(self.cache))
        retained = self.cache.retained_tokens(self._now())
        self.metrics.retained_tokens.set(retained)
        self.metrics.retained_bytes.set(retained * self.kv_bytes_per_token)
