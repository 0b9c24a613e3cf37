"""Run one response end to end, for every mode (WebSocket, HTTP JSON, HTTP SSE): `TurnRunner.run`.

    find the base response (connection cache → session store → cold store) → the model a worker
    describes for `model` (its chat format and tokenizer) → render and tokenize the new items (off the
    event loop past 256 KiB) and plan the turn (api_box/core/chain.py: new tokens only, or a whole new
    chain) → response.created, response.in_progress → stream the worker's events (WorkerPool.generate)
    as response events → commit the worker's output to the chain → keep the record (store:true: the
    session store, then write-behind to the cold store) → the terminal event.

A refusal before the response exists (previous_response_not_found, model_not_found, unknown_call_id,
missing input, ...) raises the RequestError; the caller answers it (an error event, or an HTTP error with its
status). A failure after response.created ends the response with response.failed carrying
`as_box_error`'s mapping (api_box/io/errors.py): a worker's refusal request_rejected_by_model or
model_overloaded, a worker that failed or timed out server_error. A stateless turn (HTTP, store:false, no
previous_response_id) keeps nothing: no chain is committed and no record is made. The record of a
store:false turn goes back to the caller in `TurnResult.outcome` (WebSocket mode keeps it per lane).

Steering (WebSocket): the caller may pass a `TurnControl`; it learns the response id before
`response.created` goes out, numbers its own events in the response's stream, and when a steer sets
`stop_requested` the worker is asked to end the generation early (`WorkerPool.stop`, sent at the next
worker event until the worker has it); the response then ends incomplete with reason `steered`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import orjson

from api_box.config import Settings
from api_box.core.chain import (
    ChainRef,
    Header,
    HeaderCache,
    PendingTurn,
    abort_turn,
    begin_turn,
    commit_turn,
    render_items,
)
from api_box.core.compaction import (
    NONCE_BYTES,
    aead_key,
    compact_for_turn,
    expand,
    open_items,
    parse_key,
    seal_items,
)
from api_box.core.errors import (
    BoxError,
    MissingParameter,
    ModelNotFound,
    PreviousResponseNotFound,
    RequestError,
)
from api_box.core.events import Event, ResponseEvents, Usage, response_template
from api_box.core.handoff import record_from_snapshot, turn_record
from api_box.core.protocol import (
    CreateRequest,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputItem,
    item_json,
)
from api_box.core.session import ConnectionSession, TurnOutcome
from api_box.core.store import ResponseRecord, SessionStore
from api_box.io.cold_store import ColdStore
from api_box.io.errors import ClientGone, as_box_error
from api_box.io.logctx import RESPONSE_ID
from api_box.io.metrics import BoxMetrics
from gpu_worker.client import (
    AgentState,
    CallDelta,
    CallStart,
    Done,
    GenerationRequest,
    TextDelta,
    ToolSpec,
    WorkerPool,
)
from gpu_worker.wire.chat import Renderer, renderer_for
from gpu_worker.wire.model import ModelDescription, tether_description

_LOG = logging.getLogger("api_box.turns")
# One line per finished response (the box's access log for turns); the ids come from api_box.io.logctx.
_ACCESS = logging.getLogger("api_box.access")
Emit = Callable[[Event], Awaitable[None]]
_RENDER_IN_THREAD_BYTES = 256 * 1024  # requests larger than this are tokenized off the event loop
_UNTYPED_CONTEXT = 1 << 31  # workers that do not describe a model state their limits by refusing


def new_id(prefix: str) -> str:
    """A fresh id such as resp_<32 hex> (responses), msg_/fc_ (items), ck_ (chain cache keys)."""
    return f"{prefix}_{secrets.token_hex(16)}"


@dataclass(frozen=True, slots=True)
class TurnResult:
    """How a response ended: its terminal ResponseResource and the outcome for the connection."""

    outcome: TurnOutcome
    resource: dict[str, Any]
    error: BoxError | None = None

    @property
    def status(self) -> str:
        """completed | incomplete | failed."""
        return str(self.resource["status"])


class TurnControl:
    """The WebSocket shell's handle on one response (api_box/io/ws.py): see the module docstring."""

    __slots__ = ("events", "on_created", "response_id", "stop_requested", "stop_sent")

    def __init__(self, on_created: Callable[[str], None] | None = None) -> None:
        self.on_created = on_created
        self.events: ResponseEvents | None = None
        self.response_id: str | None = None
        self.stop_requested = False
        self.stop_sent = False

    def created(self, events: ResponseEvents) -> None:
        """The response exists (called before response.created is sent)."""
        self.events, self.response_id = events, events.response_id
        if self.on_created is not None:
            self.on_created(events.response_id)

    def sequence_number(self) -> int:
        """The next sequence number of the response's stream (0 before it exists)."""
        return self.events.take_sequence_number() if self.events is not None else 0


@dataclass(frozen=True, slots=True)
class _Turn:
    """One response in progress: what `run` decided, shared by the steps that stream and finish it."""

    create: CreateRequest
    model: ModelDescription
    tenant: str
    base: ResponseRecord | None
    header: Header
    pending: PendingTurn
    response_id: str
    emit: Emit
    mode: str
    received_at: float
    context_bytes: int
    stateless: bool  # HTTP full context: nothing is kept and the worker gets no cache key
    compaction: str | None = None  # the input was compacted (context_management): the item's content
    control: TurnControl | None = None


class _Timing:
    """Time to first output delta and inter-token latency of one response."""

    __slots__ = ("clock", "itl", "last", "received_at", "ttft")

    def __init__(
        self, metrics: BoxMetrics, mode: str, received_at: float, clock: Callable[[], float]
    ) -> None:
        self.ttft = metrics.time_to_first_token.labels(mode)
        self.itl = metrics.inter_token_latency.labels(mode)
        self.received_at, self.clock = received_at, clock
        self.last: float | None = None

    def delta(self) -> None:
        now = self.clock()
        if self.last is None:
            self.ttft.observe(now - self.received_at)
        else:
            self.itl.observe(now - self.last)
        self.last = now


class TurnRunner:
    """Shared by the WebSocket and HTTP shells: one instance per app."""

    def __init__(
        self,
        *,
        settings: Settings,
        pool: WorkerPool,
        store: SessionStore,
        cold: ColdStore,
        metrics: BoxMetrics,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.store = store
        self.cold = cold
        self.metrics = metrics
        self.clock = clock
        self.wall = wall
        self.headers = HeaderCache()
        self._tool_specs: dict[bytes, tuple[ToolSpec, ...]] = {}
        if not settings.compaction_key:
            _LOG.info("compaction items are sealed under a key of this process (no compaction_key set)")
        secret = parse_key(settings.compaction_key) if settings.compaction_key else secrets.token_bytes(32)
        self.compaction_key = aead_key(secret)

    def open_compactions(self, create: CreateRequest, tenant: str) -> CreateRequest:
        """The request with its compaction items replaced by the messages they hold (a RequestError when
        one does not open); its images and compaction items are counted."""
        if create.images_replaced:
            self.metrics.input_images.labels("placeholder").inc(create.images_replaced)
        if not create.compactions:
            return create
        opener = partial(
            open_items, tenant=tenant, key=self.compaction_key, max_bytes=self.settings.max_body_bytes
        )
        try:
            expanded = expand(create, opener, self.settings.limits)
        except RequestError:
            self.metrics.compactions.labels("rejected").inc()
            raise
        self.metrics.compactions.labels("expanded").inc(len(create.compactions))
        return expanded

    def seal_compaction(self, items: Sequence[InputItem], tenant: str) -> str:
        """The encrypted_content of a compaction item holding `items` for `tenant`."""
        self.metrics.compactions.labels("made").inc()
        return seal_items(
            items, tenant=tenant, key=self.compaction_key, nonce=secrets.token_bytes(NONCE_BYTES)
        )

    # ------------------------------------------------------------------------------------- lookups
    async def find(
        self, tenant: str, response_id: str, local: ConnectionSession | None = None
    ) -> ResponseRecord:
        """The response to continue from: connection cache, session store, then cold store."""
        record = local.lookup(response_id) if local is not None else None
        if record is None:
            record = self.store.get(tenant, response_id)
        if record is not None:
            self.metrics.session_lookups.labels("memory").inc()
            return record
        record = await self.restore(tenant, response_id)
        if record is None:
            self.metrics.session_lookups.labels("miss").inc()
            raise PreviousResponseNotFound(response_id)
        self.metrics.session_lookups.labels("redis").inc()
        return record

    async def restore(self, tenant: str, response_id: str) -> ResponseRecord | None:
        """A store:true response from the cold store (kept in memory again), or None."""
        if not self.cold.enabled:
            return None
        started = self.clock()
        try:
            snapshot = await self.cold.restore(tenant, response_id)
        except Exception:
            _LOG.warning("cold restore of a response failed; treated as a miss", exc_info=True)
            return None
        self.metrics.cold_restore_seconds.observe(self.clock() - started)
        if snapshot is None or snapshot.tenant != tenant:
            return None
        record = record_from_snapshot(snapshot)
        self._keep(record)
        return record

    # --------------------------------------------------------------------------------------- models
    async def model(self, name: str) -> ModelDescription:
        """The model a request names, as a worker described it; ModelNotFound when no worker serves it.

        Workers that do not describe their model (no DescribeModel RPC) serve any name in Tether's own
        format, and so does a pool none of whose workers has answered yet (the request then fails as
        an unreachable worker does, not as an unknown model).
        """
        found = self.pool.description(name)
        if found is None:
            await self.pool.describe()
            found = self.pool.description(name)
        if found is not None:
            return found
        if self.pool.has_untyped_workers() or not self.pool.descriptions:
            return tether_description((name or "tether-sim",), engine="sim", context_length=_UNTYPED_CONTEXT)
        raise ModelNotFound(f"The model '{name[:200]}' does not exist.", param="model")

    def model_names(self) -> list[str]:
        """What GET /v1/models lists: every name a worker serves (the configured names for untyped ones)."""
        names: list[str] = []
        for description in self.pool.descriptions.values():
            for name in description.names if description is not None else self.settings.models:
                if name not in names:
                    names.append(name)
        return names or list(self.settings.models)

    # ----------------------------------------------------------------------------------------- run
    async def run(
        self,
        create: CreateRequest,
        *,
        tenant: str,
        mode: str,
        emit: Emit,
        received_at: float,
        request_bytes: int,
        local: ConnectionSession | None = None,
        control: TurnControl | None = None,
    ) -> TurnResult:
        """Run one response; raises the RequestError that refuses it before it is created."""
        create = self.open_compactions(create, tenant)
        base = None
        if create.previous_response_id is not None:
            base = await self.find(tenant, create.previous_response_id, local)
        model = await self.model(create.model)
        renderer = renderer_for(model)
        header = self.headers.header(
            create.instructions,
            create.tools,
            renderer=renderer,
            renderer_key=model.fingerprint + renderer.format,
        )
        stateless = mode != "ws" and not create.store and base is None
        rendered: Sequence[int] | None = None
        if request_bytes > _RENDER_IN_THREAD_BYTES:
            # Tokenizing megabytes takes a while: keep the event loop serving the other connections.
            rendered = await asyncio.to_thread(render_items, create.input, renderer)
        compaction = None
        if create.compact_threshold is not None and base is None:
            create, compaction, rendered = self._compact(create, tenant, model, header, renderer, rendered)
        pending = begin_turn(
            base.ref if base is not None else None,
            header,
            create.input,
            new_cache_key=new_id("ck"),
            max_tokens=min(self.settings.max_chain_tokens, model.context_length - 1),
            renderer=renderer,
            generate=create.generate,
            rendered=rendered,
        )
        if pending.start_reason:
            self.metrics.chain_starts.labels(pending.start_reason).inc()
        if pending.prompt_len == 0:
            abort_turn(pending)
            raise MissingParameter("Missing required parameter: 'input'.", param="input")
        context_bytes = (base.ref.context_bytes if base is not None else 0) + request_bytes
        self.metrics.full_context_bytes.labels(mode).inc(context_bytes)
        turn = _Turn(
            create=create,
            model=model,
            tenant=tenant,
            base=base,
            header=header,
            pending=pending,
            response_id=new_id("resp"),
            emit=emit,
            mode=mode,
            received_at=received_at,
            context_bytes=context_bytes,
            stateless=stateless,
            compaction=compaction,
            control=control,
        )
        token = RESPONSE_ID.set(turn.response_id)  # every log line of this turn names its response
        try:
            return await self._respond(turn)
        finally:
            RESPONSE_ID.reset(token)

    def _compact(
        self,
        create: CreateRequest,
        tenant: str,
        model: ModelDescription,
        header: Header,
        renderer: Renderer,
        rendered: Sequence[int] | None,
    ) -> tuple[CreateRequest, str | None, Sequence[int] | None]:
        """context_management: a full-context input whose prompt is over the threshold (by default 4/5 of
        the model's context) is compacted before it becomes a chain (compact_for_turn); returns the request
        to run, the compaction item's content (None: not compacted) and the input's tokens when known."""
        threshold = create.compact_threshold or model.context_length * 4 // 5
        tokens = rendered if rendered is not None else render_items(create.input, renderer)
        if len(header.tokens) + len(tokens) <= threshold:
            return create, None, tokens
        window = compact_for_turn(create.input)
        if len(window) == len(create.input):
            return create, None, tokens  # nothing to leave out: the turn runs as sent
        return replace(create, input=tuple(window)), self.seal_compaction(window, tenant), None

    async def _respond(self, turn: _Turn) -> TurnResult:
        template = response_template(
            turn.create,
            response_id=turn.response_id,
            created_at=int(self.wall()),
            default_temperature=self.settings.default_temperature,
        )
        events = ResponseEvents(template, new_id, turn.create.tools)
        if turn.control is not None:
            turn.control.created(events)
        try:
            done = await self._stream(turn, self._request(turn), events)
        except BaseException as exc:
            abort_turn(turn.pending)
            if isinstance(exc, ClientGone) or not isinstance(exc, Exception):
                raise  # cancelled, or the client's stream broke: the connection went away, nobody to answer
            return await self._failed(turn, events, exc)
        return await self._completed(turn, events, done)

    def _request(self, turn: _Turn) -> GenerationRequest:
        create, pending, stateless = turn.create, turn.pending, turn.stateless
        agent = pending.agent
        return GenerationRequest(
            request_id=turn.response_id,
            cache_key=None if stateless else pending.chain.cache_key,
            chain=pending.chain.tokens,
            held_len=0 if stateless else pending.held_len,
            held_digest=b"" if stateless else pending.held_digest,
            # Never past the model's context: what is left of it after the prompt.
            max_output_tokens=min(
                create.max_output_tokens or self.settings.default_max_output_tokens,
                turn.model.context_length - pending.prompt_len,
            ),
            tools=self._specs(create, turn.header),
            tool_choice=create.tool_choice,
            agent=AgentState(
                agent.tool_calls_since_user_message, agent.user_messages, agent.last_item_is_tool_output
            ),
            metadata=create.metadata,
            model=create.model,
            temperature=self.settings.default_temperature
            if create.temperature is None
            else create.temperature,
            top_p=1.0 if create.top_p is None else create.top_p,
            generate=create.generate,
            tokenizer_fingerprint=turn.model.fingerprint,
            timeout=self.settings.worker_request_timeout,
            # A keyless (stateless) request goes to a worker by the client's prompt_cache_key when it sends
            # one (Codex: its session), not by the chain's first block that every session shares.
            routing_key=create.prompt_cache_key,
            # Opt-in retention through tool pauses (docs/retention.md): only with prompt_cache_options.
            retain_seconds=options.retain_seconds if (options := create.prompt_cache_options) else 0,
        )

    def _specs(self, create: CreateRequest, header: Header) -> tuple[ToolSpec, ...]:
        specs = self._tool_specs.get(header.key)
        if specs is None:
            specs = tuple(
                ToolSpec(t.model_name, t.description or "", orjson.dumps(t.parameters or {}).decode())
                for t in create.tools
            )
            if len(self._tool_specs) >= 256:
                self._tool_specs.clear()
            self._tool_specs[header.key] = specs
        return specs

    async def _stream(self, turn: _Turn, request: GenerationRequest, events: ResponseEvents) -> Done:
        emit = turn.emit
        for event in events.start(in_progress=request.generate):
            await emit(event)
        if turn.compaction is not None:
            for event in events.compaction(turn.compaction, compacting_event=turn.mode == "ws"):
                await emit(event)
        timing = _Timing(self.metrics, turn.mode, turn.received_at, self.clock)
        stream = self.pool.generate(request)
        done: Done | None = None
        try:
            # Iterate to the end, past Done: the pool counts a call once its stream has finished.
            async for worker_event in stream:
                if isinstance(worker_event, TextDelta):
                    out = events.text(worker_event.text)
                elif isinstance(worker_event, CallDelta):
                    out = events.call_arguments(worker_event.arguments)
                elif isinstance(worker_event, CallStart):
                    out = events.call_start(worker_event.call_id, worker_event.name)
                elif isinstance(worker_event, Done):
                    done = worker_event
                    continue
                else:
                    continue
                if out:
                    timing.delta()
                for event in out:
                    await emit(event)
                control = turn.control
                if control is not None and control.stop_requested and not control.stop_sent:
                    control.stop_sent = await self.pool.stop(request.request_id)
        finally:
            # Leaving early (the client went away) must cancel the RPC now, not at garbage collection.
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
        if done is None:
            raise BoxError("the worker stream ended without Done")
        return done

    async def _failed(self, turn: _Turn, events: ResponseEvents, exc: Exception) -> TurnResult:
        error = as_box_error(exc)
        _LOG.warning("response failed: %s (%s)", error.code, exc)
        self.metrics.errors.labels(error.code).inc()
        self._finished(turn, "failed")
        for event in events.fail(error):
            await turn.emit(event)  # may raise when the client is the one that went away
        return TurnResult(TurnOutcome(None, turn.create.previous_response_id), events.resource, error)

    async def _completed(self, turn: _Turn, events: ResponseEvents, done: Done) -> TurnResult:
        """Finish the response; keep its record unless the turn was stateless (HTTP full context)."""
        create, pending = turn.create, turn.pending
        if create.generate:
            usage = Usage(done.prompt_tokens, done.cached_tokens, done.output_tokens)
            final = events.finish(usage, finish_reason=done.finish_reason, completed_at=int(self.wall()))
        else:
            final = events.warmed(completed_at=int(self.wall()))
        if turn.stateless:
            # Nothing of a stateless turn is kept: no commit (no digest of the whole chain), no record.
            abort_turn(pending)
            for event in final:
                await turn.emit(event)
            self._finished(turn, events.resource["status"])
            return TurnResult(TurnOutcome(None, None), events.resource)
        output_bytes = len(orjson.dumps(events.resource["output"]))
        ref = commit_turn(
            pending,
            done.output_token_ids,
            [call.call_id for call in events.function_calls],
            worker_len=done.chain_len,
            worker_digest=done.chain_digest,
            context_bytes=turn.context_bytes + output_bytes,
        )
        record = self._record(create, turn.tenant, ref, events)
        if create.store:
            self._keep(record)
            await self._write_behind(record, turn.base, pending, create)
        for event in final:
            await turn.emit(event)
        self._finished(turn, events.resource["status"])
        return TurnResult(TurnOutcome(record, create.previous_response_id), events.resource)

    def _record(
        self, create: CreateRequest, tenant: str, ref: ChainRef, events: ResponseEvents
    ) -> ResponseRecord:
        if not create.store:
            return ResponseRecord(tenant, events.response_id, ref, store=False)
        items = [item_json(item, item.item_id or new_id(_item_prefix(item))) for item in create.input]
        return ResponseRecord(
            tenant,
            events.response_id,
            ref,
            store=True,
            resource=orjson.dumps(events.resource),
            input_items=orjson.dumps(items),
        )

    def _keep(self, record: ResponseRecord) -> None:
        evicted = self.store.put(record)
        if evicted:
            _LOG.debug("session store evicted %d responses", len(evicted))
        self.metrics.sessions.set(len(self.store))
        self.metrics.session_store_bytes.set(self.store.nbytes)

    async def _write_behind(
        self, record: ResponseRecord, base: ResponseRecord | None, pending: PendingTurn, create: CreateRequest
    ) -> None:
        if not self.cold.enabled:
            return
        # A whole record when the chain is new, or when the cold store lacks its earlier records.
        whole = pending.fresh or self.cold.needs_whole(pending.chain.cache_key)
        turn = turn_record(
            record,
            base=None if whole else base,
            previous_response_id=create.previous_response_id,
            start=pending.start,
            created_at=self.wall(),
        )
        try:
            await self.cold.append(turn)
        except Exception:
            _LOG.warning("cold store append failed", exc_info=True)

    def _finished(self, turn: _Turn, status: str) -> None:
        elapsed = self.clock() - turn.received_at
        self.metrics.responses.labels(turn.mode, status).inc()
        self.metrics.turn_duration.labels(turn.mode).observe(elapsed)
        _ACCESS.info("response %s mode=%s duration_ms=%.1f", status, turn.mode, elapsed * 1000)


def _item_prefix(item: object) -> str:
    if isinstance(item, FunctionCallItem):
        return "ctc" if item.kind == "custom" else "fc"
    if isinstance(item, FunctionCallOutputItem):
        return "ctco" if item.kind == "custom" else "fco"
    return "msg"
