"""A fake of exactly the part of vLLM 0.17.1 that gpu_worker/engines/vllm_engine.py calls.

Same names, signatures and output objects as the pinned version (vllm/v1/engine/async_llm.py,
vllm/outputs.py, vllm/sampling_params.py, vllm/engine/arg_utils.py, vllm/v1/engine/exceptions.py, vllm's
Prometheus stat logger), so that a call the real one would reject fails here too:

- `SamplingParams` and `AsyncEngineArgs` take keyword arguments and refuse unknown ones;
- `AsyncLLM.from_engine_args(engine_args)`, `generate(prompt, sampling_params, request_id, ...)` (an async
  generator of `RequestOutput`), `abort(request_id, internal=False)`, `shutdown()`, `model_config`
  (`max_model_len`, `get_vocab_size()`), `errored`, `dead_error`;
- outputs as vLLM streams them with `RequestOutputKind.DELTA`: no output while prefilling, then one
  `RequestOutput` per step with the step's new token ids in `outputs[0].token_ids`, `num_cached_tokens` on
  every output, `finished` with `finish_reason` "stop" (the stop id is the last token id; `stop_reason` is
  that id when it came from `stop_token_ids`, None for the model's EOS) or "length";
- automatic prefix caching as vLLM v1 counts it: full blocks of `BLOCK_SIZE` tokens, matched from the
  start, at most `len(prompt) - 1` tokens (the last prompt token is always computed); a finished request
  leaves its full blocks (prompt and output) in the cache;
- a prompt longer than the model's length is refused with a ValueError (VLLMValidationError is one), an
  engine failure is `EngineDeadError`, a failure inside one request `EngineGenerateError`;
- closing or cancelling `generate` aborts the request, as vLLM's does;
- the stat logger's series (`vllm:num_requests_running`, ... `vllm:prefix_cache_hits`) are registered in
  the `registry` the fake is given (vLLM uses prometheus_client's global one).

The "model" is a script: `FakeVllm.script` maps a prompt to the ids it samples, in steps.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from prometheus_client import CollectorRegistry, Counter, Gauge

from gpu_worker.engines.vllm_engine import VllmApi

BLOCK_SIZE = 16
Script = Callable[[list[int]], list[list[int]]]  # prompt -> the ids sampled at each step


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass(kw_only=True)
class SamplingParams:
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE


class TokensPrompt(TypedDict):
    prompt_token_ids: list[int]


@dataclass(kw_only=True)
class AsyncEngineArgs:
    model: str = "facebook/opt-125m"
    tokenizer: str | None = None
    revision: str | None = None
    dtype: str = "auto"
    seed: int = 0
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    enable_prefix_caching: bool | None = None
    max_num_seqs: int | None = None
    enforce_eager: bool = False
    kv_cache_dtype: str = "auto"
    quantization: str | None = None
    trust_remote_code: bool = False
    disable_log_stats: bool = False
    enable_log_requests: bool = False


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: Sequence[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    lora_request: Any = None


@dataclass
class RequestStateStats:
    num_generation_tokens: int = 0
    arrival_time: float = 0.0
    queued_ts: float = 0.0
    scheduled_ts: float = 0.0
    first_token_ts: float = 0.0
    last_token_ts: float = 0.0


class RequestOutput:
    def __init__(
        self,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int] | None,
        prompt_logprobs: Any,
        outputs: list[CompletionOutput],
        finished: bool,
        metrics: RequestStateStats | None = None,
        lora_request: Any = None,
        encoder_prompt: str | None = None,
        encoder_prompt_token_ids: list[int] | None = None,
        num_cached_tokens: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.prompt_logprobs = prompt_logprobs
        self.outputs = outputs
        self.finished = finished
        self.metrics = metrics
        self.lora_request = lora_request
        self.encoder_prompt = encoder_prompt
        self.encoder_prompt_token_ids = encoder_prompt_token_ids
        self.num_cached_tokens = num_cached_tokens


class EngineGenerateError(Exception):
    """Raised when a AsyncLLM.generate() fails. Recoverable."""


class EngineDeadError(Exception):
    """Raised when the EngineCore dies. Unrecoverable."""


class VLLMValidationError(ValueError):
    """vLLM's validation error for a request it refuses."""


@dataclass
class ModelConfig:
    max_model_len: int
    vocab_size: int

    def get_vocab_size(self) -> int:
        return self.vocab_size


@dataclass
class _Request:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    steps: list[list[int]]
    cached: int
    output: list[int] = field(default_factory=list)
    aborted: bool = False


class FakeVllm:
    """One fake vLLM: its script, its prefix cache, what it was asked (see the module docstring)."""

    def __init__(
        self,
        script: Script,
        *,
        max_model_len: int = 4096,
        vocab_size: int = 261,
        eos_token_id: int | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.script = script
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_id
        self.registry = registry if registry is not None else CollectorRegistry()
        self.engine_args: AsyncEngineArgs | None = None
        self.requests: list[_Request] = []
        self.aborted: list[str] = []
        self.cached_blocks: set[tuple[int, ...]] = set()
        self.shut_down = False
        self.dead = False
        self.fail_request: BaseException | None = None  # raised inside the next generate, after prefill
        self.gate: asyncio.Event | None = None  # when set: each step after the first waits for it
        self.step_started = asyncio.Event()
        self._metrics: dict[str, Any] = {}

    def api(self) -> VllmApi:
        """The VllmApi the engine takes instead of vLLM's own."""
        fake = self

        class AsyncLLM(_AsyncLLM):
            @classmethod
            def from_engine_args(
                cls,
                engine_args: AsyncEngineArgs,
                start_engine_loop: bool = True,
                usage_context: Any = None,
                stat_loggers: Any = None,
            ) -> _AsyncLLM:
                return cls(fake, engine_args)

        return VllmApi(
            AsyncLLM=AsyncLLM,
            AsyncEngineArgs=AsyncEngineArgs,
            SamplingParams=SamplingParams,
            TokensPrompt=TokensPrompt,
            RequestOutputKind=RequestOutputKind,
            EngineDeadError=EngineDeadError,
            EngineGenerateError=EngineGenerateError,
            client_errors=(ValueError,),
        )

    # ------------------------------------------------------------------------------- prefix cache
    def cached_prefix(self, prompt: Sequence[int]) -> int:
        """Tokens of `prompt` vLLM would serve from its prefix cache."""
        hit = 0
        limit = (len(prompt) - 1) // BLOCK_SIZE * BLOCK_SIZE
        while hit < limit and tuple(prompt[: hit + BLOCK_SIZE]) in self.cached_blocks:
            hit += BLOCK_SIZE
        return hit

    def _cache(self, tokens: Sequence[int]) -> None:
        for end in range(BLOCK_SIZE, len(tokens) + 1, BLOCK_SIZE):
            self.cached_blocks.add(tuple(tokens[:end]))

    # ------------------------------------------------------------------------------------ metrics
    def _register_metrics(self, model_name: str) -> None:
        labels = ["model_name", "engine"]
        values = (model_name, "0")
        made = {
            "running": Gauge("vllm:num_requests_running", "Running.", labels, registry=self.registry),
            "waiting": Gauge("vllm:num_requests_waiting", "Waiting.", labels, registry=self.registry),
            "kv": Gauge("vllm:kv_cache_usage_perc", "KV-cache usage.", labels, registry=self.registry),
            "queries": Counter(
                "vllm:prefix_cache_queries", "Queried tokens.", labels, registry=self.registry
            ),
            "hits": Counter("vllm:prefix_cache_hits", "Cached tokens.", labels, registry=self.registry),
            "prompt": Counter("vllm:prompt_tokens", "Prefill tokens.", labels, registry=self.registry),
            "generation": Counter("vllm:generation_tokens", "Generated.", labels, registry=self.registry),
        }
        self._metrics = {name: metric.labels(*values) for name, metric in made.items()}

    def _count(self, name: str, amount: float = 1.0) -> None:
        if self._metrics:
            self._metrics[name].inc(amount)

    def _gauge(self, name: str, value: float) -> None:
        if self._metrics:
            self._metrics[name].set(value)


class _AsyncLLM:
    """vllm.v1.engine.async_llm.AsyncLLM, as far as the engine uses it."""

    def __init__(self, fake: FakeVllm, engine_args: AsyncEngineArgs) -> None:
        self._fake = fake
        fake.engine_args = engine_args
        length = engine_args.max_model_len or fake.max_model_len
        self.model_config = ModelConfig(max_model_len=length, vocab_size=fake.vocab_size)
        if not engine_args.disable_log_stats:
            fake._register_metrics(engine_args.model)
        self._running: dict[str, _Request] = {}

    @property
    def errored(self) -> bool:
        return self._fake.dead

    @property
    def dead_error(self) -> BaseException:
        return EngineDeadError()

    def shutdown(self, timeout: float | None = None) -> None:
        self._fake.shut_down = True

    async def abort(self, request_id: str | Iterable[str], internal: bool = False) -> None:
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        for rid in ids:
            request = self._running.pop(rid, None)
            if request is not None:
                request.aborted = True
                self._fake.aborted.append(rid)

    async def generate(
        self,
        prompt: TokensPrompt,
        sampling_params: SamplingParams,
        request_id: str,
        *,
        prompt_text: str | None = None,
        lora_request: Any = None,
        tokenization_kwargs: dict[str, Any] | None = None,
        trace_headers: Any = None,
        priority: int = 0,
        data_parallel_rank: int | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        fake = self._fake
        if fake.dead:
            raise EngineDeadError()
        ids = list(prompt["prompt_token_ids"])
        if len(ids) > self.model_config.max_model_len:
            raise VLLMValidationError(
                f"The decoder prompt (length {len(ids)}) is longer than the maximum model length of "
                f"{self.model_config.max_model_len}."
            )
        if request_id in self._running:
            raise ValueError(f"Request id {request_id} already running.")
        request = _Request(request_id, ids, sampling_params, fake.script(ids), fake.cached_prefix(ids))
        fake.requests.append(request)
        self._running[request_id] = request
        try:
            async for out in self._steps(request):
                yield out
        except (asyncio.CancelledError, GeneratorExit):
            await self.abort(request_id, internal=True)
            raise
        except (EngineDeadError, ValueError):
            raise
        except Exception as exc:
            await self.abort(request_id, internal=True)
            raise EngineGenerateError() from exc

    async def _steps(self, request: _Request) -> AsyncGenerator[RequestOutput, None]:
        fake, params = self._fake, request.params
        fake._gauge("running", len(self._running))
        fake._count("queries", len(request.prompt))
        fake._count("hits", request.cached)
        fake._count("prompt", len(request.prompt) - request.cached)
        stops = set(params.stop_token_ids or ())
        if fake.eos_token_id is not None and not params.ignore_eos:
            stops.add(fake.eos_token_id)
        limit = min(params.max_tokens or self.model_config.max_model_len, self.model_config.max_model_len)
        limit = min(limit, self.model_config.max_model_len - len(request.prompt))
        first = True
        for step in request.steps:
            if not first and fake.gate is not None:
                fake.step_started.set()
                await fake.gate.wait()
            await asyncio.sleep(0)
            if fake.fail_request is not None:
                failure, fake.fail_request = fake.fail_request, None
                if isinstance(failure, EngineDeadError):
                    fake.dead = True
                raise failure
            new: list[int] = []
            reason: str | None = None
            stop_reason: int | None = None
            for token in step:
                new.append(token)
                request.output.append(token)
                if token in stops:
                    reason = "stop"
                    stop_reason = token if token in (params.stop_token_ids or ()) else None
                    break
                if len(request.output) >= limit:
                    reason = "length"
                    break
            fake._count("generation", len(new))
            first = False
            finished = reason is not None
            if finished:
                self._finish(request)
            yield self._output(request, new, reason, stop_reason, finished)
            if finished:
                return
        # The script ran out without a stop: vLLM would go on to max_tokens; a test script must end.
        raise AssertionError(f"the script of {request.request_id} ended without a stop id or the limit")

    def _finish(self, request: _Request) -> None:
        self._running.pop(request.request_id, None)
        self._fake._cache(request.prompt + request.output)
        self._fake._gauge("running", len(self._running))

    def _output(
        self, request: _Request, new: list[int], reason: str | None, stop_reason: int | None, finished: bool
    ) -> RequestOutput:
        completion = CompletionOutput(
            index=0,
            text="",  # detokenize=False
            token_ids=list(new),
            cumulative_logprob=None,
            logprobs=None,
            finish_reason=reason,
            stop_reason=stop_reason,
        )
        return RequestOutput(
            request_id=request.request_id,
            prompt=None,
            prompt_token_ids=request.prompt,
            prompt_logprobs=None,
            outputs=[completion],
            finished=finished,
            metrics=RequestStateStats(queued_ts=10.0, scheduled_ts=10.25),
            num_cached_tokens=request.cached,
        )
