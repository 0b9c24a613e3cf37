"""The torch engine: a real transformer with a real KV cache per chain (CUDA when present, else CPU).

A turn prefills only what the chain's cached keys and values do not cover, then generates. With the
default dummy weights the output item is the one the shared agent policy (gpu_worker/core/agent.py)
chose, its tokens drawn from the model's logits (gpu_worker/engines/torch_output.py): the text is
meaningless, the compute is the real thing. A real checkpoint (a Hugging Face directory or a GGUF file,
`TorchSettings.checkpoint`) brings its own tokenizer and chat format, which the engine describes
(`describe()`, the DescribeModel RPC), and the model writes the output itself
(gpu_worker/engines/model_plan.py): sampled with temperature and top_p, stopped at its stop ids,
streamed through its tool-call parser (gpu_worker/engines/model_output.py, shared with the vllm
engine), and constrained to a valid call when `tool_choice` requires one
(gpu_worker/engines/constrained.py). See docs/torch_engine.md.

Concurrency: `generate` queues a sequence (bounded); one scheduler task admits sequences into the running
batch (at most `max_batch`, each with a KV lease, see torch_kv.py) and runs steps in a dedicated worker
thread, so the event loop never waits on the model. A step feeds every running sequence its next tokens
in one forward pass (decode tokens first, prefill chunks share the rest of `step_tokens`) and samples the
sequences that need a token. Cancellation is seen at the next step boundary: the sequence leaves the
batch and its lease is released, which leaves the chain as it was. So is a stop (`job.stop`, a steered
response): an output that is plain text so far ends there with the ids sampled so far, committed as at
a length limit; an output with a tool call runs to its end.

Errors come from the worker's tree (gpu_worker/core/errors.py): InvalidRequest, OverBudget, QueueFull,
PreconditionFailed (`reuse_from` is not held: the engine evicted it under its KV budget, so the box must
resend the full chain, exactly as with the sim), Draining, EngineFailure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from gpu_worker.core.agent import AgentSettings, decide
from gpu_worker.core.errors import Draining, EngineFailure, InvalidRequest, QueueFull, WorkerError
from gpu_worker.engines.base import EngineEvent, Finished, GenerationJob, Prefilled
from gpu_worker.engines.checkpoint import open_checkpoint
from gpu_worker.engines.constrained import CALL_SYNTAX, call_program
from gpu_worker.engines.describe import describe_checkpoint
from gpu_worker.engines.model_output import ModelOutput
from gpu_worker.engines.model_plan import Constraint, ModelPlan, TokenTable
from gpu_worker.engines.torch_kv import KvStats, KvStore, Lease
from gpu_worker.engines.torch_model import (
    Chunk,
    Transformer,
    dummy_model,
    load_model,
    preset,
    require_tether_vocabulary,
)
from gpu_worker.engines.torch_output import PLAIN_VOCAB, OutputPlan, common_prefix, plan_for
from gpu_worker.wire.model import ModelDescription, tether_description
from gpu_worker.wire.tokenizer import Tokenizer, tokenizer_for
from tether_runtime.settings import EnvLoader

__all__ = ["TORCH_ENV", "TorchEngine", "TorchSettings", "TorchStats"]

log = logging.getLogger("gpu_worker.torch")

_ENV_PREFIX = "TETHER_WORKER_TORCH_"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True, slots=True)
class TorchSettings:
    """Settings of the torch engine; env names are TETHER_WORKER_TORCH_<FIELD in upper case>."""

    preset: str = "small"  # dummy-weight shape (torch_model.PRESETS) when no checkpoint is given
    checkpoint: str = ""  # a Hugging Face directory or a .gguf file (Llama architecture)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16
    seed: int = 0  # seed of the dummy weights
    kv_budget_bytes: int = 1 << 30
    kv_chunk_tokens: int = 256
    max_batch: int = 16  # sequences in the running batch
    max_queue: int = 256  # sequences waiting for a slot
    step_tokens: int = 2048  # tokens fed per step, all sequences together (chunked prefill)
    threads: int = 0  # torch CPU threads (0: torch's default)

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be auto or one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("kv_budget_bytes", "kv_chunk_tokens", "max_batch", "max_queue", "step_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if not self.checkpoint:
            preset(self.preset)  # raises on an unknown name

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TorchSettings:
        """Build from TETHER_WORKER_TORCH_* variables (others are ignored); bad values raise ValueError."""
        return TORCH_ENV.load(environ)

    def torch_device(self) -> torch.device:
        """The device to run on: CUDA when available (auto), else the CPU."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} requested but CUDA is not available")
        return device

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        """The weight and KV dtype."""
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return _DTYPES[self.dtype]


# Field → variable: TETHER_WORKER_TORCH_<FIELD> (tether_runtime/settings.py reads them).
TORCH_ENV = EnvLoader(TorchSettings, _ENV_PREFIX)


@dataclass(frozen=True, slots=True)
class TorchStats:
    """Engine sizes, for the worker's gauges and for reports."""

    running: int
    waiting: int
    kv: KvStats
    prompt_tokens_reused: int  # since start: prompt tokens whose KV came from the cache
    prompt_tokens_computed: int  # since start: prompt tokens prefilled (including a recomputed tail)


@dataclass(eq=False)
class _Sequence:
    job: GenerationJob
    plan: OutputPlan | ModelPlan | None  # None: prefill only (generate=False)
    total: int  # most tokens this sequence will hold (prompt + fed output)
    submitted: float
    events: asyncio.Queue[EngineEvent | WorkerError] = field(default_factory=asyncio.Queue)
    lease: Lease | None = None
    pending: list[int] = field(default_factory=list)  # tokens to feed next
    prompt_left: int = 0  # of `pending`, prompt tokens (Prefilled goes out once they are fed)
    start_events: tuple[EngineEvent, ...] = ()
    queue_seconds: float = 0.0
    done: bool = False  # nothing more to sample: finish once `pending` is fed
    finished: bool = False
    cancelled: bool = False
    generator: torch.Generator | None = None


class TorchEngine:
    """The Engine protocol (gpu_worker/engines/base.py) on a PyTorch transformer."""

    name = "torch"

    def __init__(
        self,
        settings: TorchSettings,
        *,
        agent: AgentSettings | None = None,
        model: Transformer | None = None,
        description: ModelDescription | None = None,
        names: tuple[str, ...] = (),
    ) -> None:
        """`model` (optional) is an already loaded model to use instead of the one `settings` name, and
        `description` its description (default: dummy weights on Tether's vocabulary). `names` are the
        model names to answer to (default: the checkpoint's name, or `tether-torch-dummy-<preset>`)."""
        self.settings = settings
        self._agent = agent or AgentSettings()
        self._preloaded = model
        self._names = names
        self._description = description
        self._device = settings.torch_device() if model is None else model.device
        self._dtype = settings.torch_dtype(self._device) if model is None else model.dtype
        self._model: Transformer | None = None
        self._kv: KvStore | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._stopping = False
        self._reused_total = 0
        self._computed_total = 0
        # A real checkpoint's own tokenizer (None: dummy weights on o200k ids, the agent policy decides).
        self._tokenizer: Tokenizer | None = None
        self._table: TokenTable | None = None
        self._sample_vocab = PLAIN_VOCAB
        self._class_ids: dict[str, torch.Tensor] = {}
        self._masks: dict[Constraint, torch.Tensor] = {}

    # ------------------------------------------------------------------------------------ lifecycle
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def model(self) -> Transformer:
        if self._model is None:
            raise EngineFailure("the torch engine is not started")
        return self._model

    def describe(self) -> ModelDescription:
        """What the engine serves (names, tokenizer, chat format, stops, context); known once started."""
        if self._description is None:
            raise EngineFailure("the torch engine is not started")
        return self._description

    async def start(self) -> None:
        """Load the model in the engine's thread and start the scheduler."""
        if self._scheduler is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch-engine")
        loop = asyncio.get_running_loop()
        self._model = await loop.run_in_executor(self._executor, self._load)
        await loop.run_in_executor(self._executor, self._load_tokenizer)
        cfg = self._model.cfg
        self._kv = KvStore(
            self._model.new_kv,
            bytes_per_token=cfg.kv_bytes_per_token(self._dtype),
            budget_bytes=self.settings.kv_budget_bytes,
            chunk_tokens=self.settings.kv_chunk_tokens,
        )
        self._stopping = False
        self._scheduler = asyncio.create_task(self._schedule(), name="torch-engine-scheduler")
        log.info(
            "torch engine on %s (%s): %d layers, hidden %d, %d parameters, %d B KV per token",
            self._device,
            self._dtype,
            cfg.num_layers,
            cfg.hidden_size,
            cfg.parameter_count(),
            cfg.kv_bytes_per_token(self._dtype),
        )

    def _load(self) -> Transformer:
        if self.settings.threads and self._device.type == "cpu":
            torch.set_num_threads(self.settings.threads)
        if self._preloaded is not None:
            model = self._preloaded
        elif self.settings.checkpoint:
            checkpoint = open_checkpoint(self.settings.checkpoint)
            model = load_model(checkpoint, device=self._device, dtype=self._dtype)
            self._description = describe_checkpoint(
                checkpoint,
                vocab_size=model.cfg.vocab_size,
                context_length=model.cfg.max_position_embeddings,
                engine=self.name,
                names=self._names,
            )
        else:
            cfg = preset(self.settings.preset)
            model = dummy_model(cfg, seed=self.settings.seed, device=self._device, dtype=self._dtype)
        if self._description is None:  # dummy weights speak Tether's format on o200k ids
            require_tether_vocabulary(model.cfg)
            self._description = tether_description(
                self._names or (f"tether-torch-dummy-{self.settings.preset}",),
                engine=self.name,
                context_length=model.cfg.max_position_embeddings,
            )
        return model

    def _load_tokenizer(self) -> None:
        description = self.describe()
        if description.tokenizer_kind != "hf":
            return
        tokenizer = tokenizer_for(description)
        size = min(
            int(getattr(tokenizer, "vocab_size", self.model.cfg.vocab_size)), self.model.cfg.vocab_size
        )
        self._tokenizer = tokenizer
        self._sample_vocab = size  # embedding rows past the tokenizer (padding) are never sampled
        self._table = TokenTable(tokenizer, size, description.special_token_ids)
        self._class_ids = {
            name: torch.tensor(ids, dtype=torch.long, device=self._device)
            for name, ids in self._table.classes.items()
        }

    @property
    def model_output(self) -> bool:
        """Whether the model writes its output (a real checkpoint) rather than the agent policy."""
        return self._tokenizer is not None

    async def stop(self) -> None:
        """Stop the scheduler; sequences still queued or running get Draining."""
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
            self._scheduler = None
        for seq in [*self._waiting, *self._running]:
            self._fail(seq, Draining("the torch engine is stopping"))
        self._waiting.clear()
        self._running.clear()
        if self._executor is not None:
            # Waits for a step already running in the thread; off the loop.
            await asyncio.to_thread(self._executor.shutdown, True)
            self._executor = None

    @property
    def running(self) -> int:
        """Sequences in the running batch."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Sequences queued for a batch slot."""
        return len(self._waiting)

    def stats(self) -> TorchStats:
        """Running and waiting sequences and KV sizes."""
        if self._kv is None:
            raise EngineFailure("the torch engine is not started")
        return TorchStats(
            running=len(self._running),
            waiting=len(self._waiting),
            kv=self._kv.stats(),
            prompt_tokens_reused=self._reused_total,
            prompt_tokens_computed=self._computed_total,
        )

    def drop(self, key: str) -> None:
        """Forget a chain's KV (evicted or dropped by the shell); unknown keys are ignored."""
        if self._kv is not None:
            self._kv.drop(key)

    # ----------------------------------------------------------------------------------- generation
    async def generate(self, job: GenerationJob) -> AsyncIterator[EngineEvent]:
        """Prefilled, then text or call chunks, then Finished (see base.py)."""
        seq = self._submit(job)
        try:
            while True:
                item = await seq.events.get()
                if isinstance(item, WorkerError):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            if not seq.finished:
                seq.cancelled = True
                if seq in self._waiting:
                    self._waiting.remove(seq)
                self._wake.set()

    def _submit(self, job: GenerationJob) -> _Sequence:
        if self._stopping or self._kv is None or self._model is None:
            raise Draining("the torch engine is not running")
        self._validate(job)
        window = self._model.cfg.max_position_embeddings
        plan: OutputPlan | ModelPlan | None = None
        if job.generate and self.model_output:
            plan = self._model_plan(job, window)
        elif job.generate:
            decision = decide(job, self._agent.from_metadata(job.metadata))
            plan = plan_for(decision, job.max_output_tokens)
        total = len(job.prompt) + (plan.fed_bound() if plan is not None else 0)
        if total > window:
            raise InvalidRequest(f"{total} tokens (prompt and output) exceed the model's window of {window}")
        self._kv.check_fits(total)
        if len(self._waiting) >= self.settings.max_queue:
            raise QueueFull(f"{len(self._waiting)} sequences are waiting for the torch engine")
        self._kv.touch(job.reuse_from)
        seq = _Sequence(job=job, plan=plan, total=total, submitted=asyncio.get_running_loop().time())
        if job.temperature > 0:
            seq.generator = torch.Generator(device=self._device).manual_seed(job.seed & 0xFFFF_FFFF_FFFF_FFFF)
        self._waiting.append(seq)
        self._wake.set()
        return seq

    def _model_plan(self, job: GenerationJob, window: int) -> ModelPlan:
        """The real model's output plan: free, or a forced call for tool_choice required/named."""
        assert self._tokenizer is not None
        assert self._table is not None
        description = self.describe()
        limit = min(job.max_output_tokens, window - len(job.prompt))
        if limit < 1:
            raise InvalidRequest(
                f"the prompt ({len(job.prompt)} tokens) fills the model's window of {window}"
            )
        choice = job.tool_choice or "auto"
        output = ModelOutput(
            description, self._tokenizer, tool_names=[tool.name for tool in job.tools], tool_choice=choice
        )
        if choice in ("auto", "none"):
            return ModelPlan(output, limit)
        forced = [tool for tool in job.tools if choice in ("required", tool.name)]
        if not forced:
            raise InvalidRequest(f"tool_choice {choice!r} names no offered tool")
        if not self._table.can_constrain:
            raise InvalidRequest("this model's tokenizer cannot force a tool call (tool_choice must be auto)")
        syntax = CALL_SYNTAX[description.tool_call_format]
        return ModelPlan(
            output,
            limit,
            program=call_program(syntax, {tool.name: _schema(tool.parameters_json) for tool in forced}),
            table=self._table,
            end_id=self._end_id(syntax.end_tokens, description),
        )

    def _end_id(self, names: tuple[str, ...], description: ModelDescription) -> int:
        assert self._tokenizer is not None
        for name in names:
            with contextlib.suppress(KeyError):
                return self._tokenizer.special_id(name)
        return description.stop_token_ids[0]

    def _validate(self, job: GenerationJob) -> None:
        if not job.prompt:
            raise InvalidRequest("the prompt is empty")
        vocab = self.model.cfg.vocab_size
        if min(job.prompt) < 0 or max(job.prompt) >= vocab:
            raise InvalidRequest(f"prompt token ids must be in 0..{vocab - 1}")
        if not 0 <= job.reuse_len <= len(job.prompt):
            raise InvalidRequest(f"reuse_len {job.reuse_len} is outside the prompt (0..{len(job.prompt)})")
        if job.max_output_tokens < 1:
            raise InvalidRequest("max_output_tokens must be positive")

    # ------------------------------------------------------------------------------------ scheduler
    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._tick(loop)
            except Exception as exc:  # a bug or a device error must fail the generations, not hang them
                log.exception("torch engine scheduler failed")
                for seq in [*self._running, *self._waiting]:
                    self._remove(seq)
                    self._fail(seq, EngineFailure(f"the torch engine failed: {exc.__class__.__name__}"))
                self._waiting.clear()

    async def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """Admit, run one step in the engine's thread, and hand out its results."""
        self._retire_cancelled()
        self._end_stopped()
        self._admit(loop.time())
        if not self._running:
            self._wake.clear()
            await self._wake.wait()
            return
        work = self._plan_step()
        try:
            sampled = await loop.run_in_executor(self._executor, self._compute, work)
        except Exception:  # the step failed (e.g. out of device memory): only its sequences fail
            log.exception("torch engine step failed")
            for w in work:
                self._remove(w.seq)
                self._fail(w.seq, EngineFailure("the torch engine failed a step"))
            return
        for w, token in zip(work, sampled, strict=True):
            self._advance(w.seq, w.feed, token)

    def _retire_cancelled(self) -> None:
        for seq in [s for s in self._running if s.cancelled]:
            self._remove(seq)

    def _end_stopped(self) -> None:
        """Sequences asked to stop (`job.stop`, a steered response) end here, between two steps, once
        their prompt is in and while their output is plain text: Finished("length", the ids so far), as
        at a length limit. The last sampled id was never fed; the KV holds the rest, as it would then."""
        for seq in [s for s in self._running if s.job.stop.requested and not s.done and not s.prompt_left]:
            if seq.plan is None or not seq.plan.stoppable:
                continue  # a call runs to its end
            for event in seq.plan.stop():
                seq.events.put_nowait(event)
            seq.done = True
            self._finish(seq)

    def _remove(self, seq: _Sequence) -> None:
        if seq in self._running:
            self._running.remove(seq)
        if seq.lease is not None and self._kv is not None:
            self._kv.release(seq.lease)
            seq.lease = None

    def _admit(self, now: float) -> None:
        assert self._kv is not None
        while self._waiting and len(self._running) < self.settings.max_batch:
            seq = self._waiting[0]
            job = seq.job
            try:
                lease = self._kv.lease(job.key, job.reuse_from, job.reuse_len, job.prompt, seq.total)
            except WorkerError as exc:
                self._waiting.popleft()
                self._fail(seq, exc)
                continue
            except Exception:  # e.g. the device is out of memory for the new tensor
                log.exception("torch engine could not allocate KV")
                self._waiting.popleft()
                self._fail(seq, EngineFailure("the torch engine could not allocate KV memory"))
                continue
            if lease is None:
                return  # KV memory is held by running sequences: wait for one to finish
            self._waiting.popleft()
            if seq.plan is not None and lease.kv_len >= len(job.prompt):
                # The cache holds the whole prompt: feed its last token again for logits to sample from.
                lease.kv_len = len(job.prompt) - 1
                del lease.tokens[lease.kv_len :]
            seq.lease = lease
            seq.queue_seconds = now - seq.submitted
            self._reused_total += lease.kv_len
            self._computed_total += len(job.prompt) - lease.kv_len
            self._running.append(seq)
            self._start(seq, list(job.prompt[lease.kv_len :]))

    def _start(self, seq: _Sequence, prompt_rest: list[int]) -> None:
        seq.pending = prompt_rest
        seq.prompt_left = len(prompt_rest)
        if seq.plan is None:
            seq.done = True
        else:
            start = seq.plan.start()
            seq.pending += start.feed
            seq.start_events = start.events
            seq.done = start.done
        if not seq.prompt_left:
            self._prefilled(seq)
        if not seq.pending:
            self._finish(seq)

    def _plan_step(self) -> list[_Work]:
        """What each sequence feeds and whether it samples after; decode first, prefill shares the rest."""
        budget = self.settings.step_tokens
        work = []
        for seq in sorted(self._running, key=lambda s: len(s.pending)):
            if budget <= 0:
                break
            feed = seq.pending[:budget]
            budget -= len(feed)
            sample = len(feed) == len(seq.pending) and not seq.done
            constraint = seq.plan.constraint() if sample and isinstance(seq.plan, ModelPlan) else None
            work.append(_Work(seq, feed, sample, None if constraint is None else self._mask(constraint)))
        return work

    def _mask(self, constraint: Constraint) -> torch.Tensor:
        """The allowed ids of a constraint as a bool tensor over the sampled vocabulary (cached)."""
        mask = self._masks.get(constraint)
        if mask is None:
            mask = torch.zeros(self._sample_vocab, dtype=torch.bool, device=self._device)
            for name in constraint.classes:
                mask[self._class_ids[name]] = True
            if constraint.ids:
                mask[torch.tensor(constraint.ids, dtype=torch.long, device=self._device)] = True
            if len(self._masks) >= _MASK_CACHE:
                self._masks.clear()
            self._masks[constraint] = mask
        return mask

    def _compute(self, work: list[_Work]) -> list[int | None]:
        """One forward pass over all fed tokens, then sampling; runs in the engine's thread."""
        model = self.model
        flat = torch.tensor([t for w in work for t in w.feed], dtype=torch.long)
        flat = flat.to(self._device, non_blocking=True)
        chunks, offset = [], 0
        for w in work:
            assert w.seq.lease is not None
            chunks.append(
                Chunk(tokens=flat[offset : offset + len(w.feed)], start=w.seq.lease.kv_len, kv=w.seq.lease.kv)
            )
            offset += len(w.feed)
        logits = model(chunks)[:, : self._sample_vocab]
        picks = logits.argmax(dim=-1)
        for row, w in enumerate(work):
            if w.sample and (w.mask is not None or w.seq.job.temperature > 0):
                picks[row] = _sample(logits[row], w.seq.job, w.mask, w.seq.generator)
        tokens: list[int] = picks.tolist()
        return [tok if w.sample else None for tok, w in zip(tokens, work, strict=True)]

    def _advance(self, seq: _Sequence, fed: list[int], token: int | None) -> None:
        lease = seq.lease
        if seq.cancelled or lease is None:
            self._remove(seq)
            return
        lease.tokens += fed
        lease.kv_len += len(fed)
        del seq.pending[: len(fed)]
        if seq.prompt_left:
            seq.prompt_left = max(0, seq.prompt_left - len(fed))
            if not seq.prompt_left:
                self._prefilled(seq)
        if token is not None:
            assert seq.plan is not None
            step = seq.plan.sampled(token)
            for event in step.events:
                seq.events.put_nowait(event)
            seq.pending = [token, *step.feed]
            seq.done = step.done
            if step.done:
                self._finish(seq)  # the last sampled token and what follows it are never fed
                return
        if not seq.pending:
            self._finish(seq)

    def _prefilled(self, seq: _Sequence) -> None:
        seq.events.put_nowait(Prefilled(queue_seconds=seq.queue_seconds))
        for event in seq.start_events:
            seq.events.put_nowait(event)

    def _finish(self, seq: _Sequence) -> None:
        assert seq.lease is not None
        assert self._kv is not None
        lease, prompt = seq.lease, list(seq.job.prompt)
        finished = seq.plan.finish() if seq.plan is not None else Finished("stop", ())
        output = list(finished.output_ids)
        fed_output = lease.tokens[len(prompt) : lease.kv_len]
        lease.kv_len = len(prompt) + common_prefix(fed_output, output)
        self._kv.commit(lease, prompt + output)
        seq.lease = None
        seq.finished = True
        if seq in self._running:
            self._running.remove(seq)
        seq.events.put_nowait(finished)

    def _fail(self, seq: _Sequence, exc: WorkerError) -> None:
        seq.finished = True
        seq.events.put_nowait(exc)


_MASK_CACHE = 256


@dataclass(frozen=True, slots=True)
class _Work:
    """One sequence's part of a step: the ids it feeds, whether it samples after them, under which mask."""

    seq: _Sequence
    feed: list[int]
    sample: bool
    mask: torch.Tensor | None


def _sample(
    logits: torch.Tensor, job: GenerationJob, mask: torch.Tensor | None, generator: torch.Generator | None
) -> int:
    """One id from a row of logits: allowed ids only, greedy at temperature 0, else nucleus (top_p)."""
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    if job.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / job.temperature, dim=-1)
    if 0 < job.top_p < 1:
        ordered, order = probs.sort(descending=True)
        keep = (ordered.cumsum(0) - ordered) < job.top_p  # the smallest head holding top_p of the mass
        probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
    return int(torch.multinomial(probs, 1, generator=generator)[0])


def _schema(parameters_json: str) -> dict[str, Any]:
    """A tool's parameters schema (an object schema; anything else counts as no parameters)."""
    try:
        schema = json.loads(parameters_json or "{}")
    except ValueError:
        return {}
    return schema if isinstance(schema, dict) else {}
