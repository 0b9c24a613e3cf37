"""The vllm engine: vLLM's `AsyncLLM` inside the worker process, behind Tether's per-conversation protocol.

`tether-gpu-worker --engine vllm --model-path PATH_OR_NAME` (the `vllm` extra, pinned in pyproject.toml;
docs/vllm.md). The worker keeps its delta protocol: `WorkerService` holds each chain's ids and answers
FAILED_PRECONDITION as with every engine; the engine gets the whole chain (`job.prompt`) each turn and
hands it to vLLM as token ids (`TokensPrompt`). vLLM's automatic prefix caching is always on, so the part
of the chain whose KV blocks are still on the GPU is not recomputed; the count vLLM reports
(`RequestOutput.num_cached_tokens`) is what the worker reports as cached tokens (`Prefilled.cached_tokens`,
then `usage.input_tokens_details.cached_tokens` at the box).

Per generation:

- sampling: `temperature`, `top_p`, `seed` (when sampling), `max_tokens` (the request's limit, capped by
  what the context leaves), `stop_token_ids` from the model's description, streaming deltas
  (`RequestOutputKind.DELTA`); vLLM does not detokenize (`detokenize=False`): Tether's own
  `IncrementalDetokenizer` over the described tokenizer makes the text, and the model's tool-call parser
  turns it into calls (gpu_worker/engines/model_output.py, shared with the torch engine);
- `Finished` carries vLLM's exact sampled ids, the stop id included;
- a consumer that goes away (the client cancelled, the box closed the stream) aborts the vLLM request
  (`AsyncLLM.abort` in a `finally`), so its batch slot and KV blocks are freed;
- a stop (`job.stop`, a steered response) while the output holds no tool call aborts the vLLM request
  and finishes with the ids sampled so far, as at a length limit; the prefix cache keeps their blocks;
- errors map onto the worker's tree: a request vLLM refuses is InvalidRequest, a dead or failing engine
  EngineFailure, a stopped engine Draining.

`tool_choice` "required" or a named function needs constrained decoding, which this engine does not do
yet: such a request is refused (InvalidRequest) rather than answered unconstrained.

vLLM is imported only when the engine is built (`load_vllm`), so this module imports without it; the tests
pass a fake of the same surface (tests/fake_vllm.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from gpu_worker.core.errors import Draining, EngineFailure, InvalidRequest
from gpu_worker.engines.base import EngineEvent, Finished, GenerationJob, Prefilled
from gpu_worker.engines.checkpoint import CheckpointError, open_checkpoint
from gpu_worker.engines.describe import describe_checkpoint
from gpu_worker.engines.model_output import ModelOutput, new_call_id
from gpu_worker.engines.vllm_metrics import VllmMetricsBridge
from gpu_worker.wire.model import ModelDescription
from gpu_worker.wire.tokenizer import Tokenizer, tokenizer_for
from tether_runtime.settings import EnvLoader

__all__ = ["VLLM_ENV", "VllmApi", "VllmEngine", "VllmSettings", "load_vllm"]

_LOG = logging.getLogger("gpu_worker.vllm")
_ENV_PREFIX = "TETHER_WORKER_VLLM_"
_DTYPES = ("auto", "bfloat16", "float16", "float32", "half", "float")
# Engine arguments Tether sets itself: never from TETHER_WORKER_VLLM_ENGINE_ARGS.
_OWN_ARGS = frozenset({"model", "enable_prefix_caching", "disable_log_stats"})


@dataclass(frozen=True, slots=True)
class VllmSettings:
    """Settings of the vllm engine; env names are TETHER_WORKER_VLLM_<FIELD in upper case>.

    `model` comes from the worker's --model-path. Zero or empty means vLLM's own default.
    """

    model: str = ""
    tokenizer: str = ""  # vLLM's tokenizer source when not the model's own (e.g. for a .gguf model)
    revision: str = ""
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    max_model_len: int = 0
    tensor_parallel_size: int = 1
    max_num_seqs: int = 0
    enforce_eager: bool = False
    kv_cache_dtype: str = "auto"
    quantization: str = ""
    seed: int = 0
    trust_remote_code: bool = False
    engine_args: str = ""  # a JSON object of further AsyncEngineArgs fields

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        for name in ("max_model_len", "max_num_seqs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: vLLM's default), got {getattr(self, name)}")
        self.extra_args()  # raises on bad JSON

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> VllmSettings:
        """Build from TETHER_WORKER_VLLM_* variables (others are ignored); bad values raise ValueError."""
        return VLLM_ENV.load(environ)

    def extra_args(self) -> dict[str, Any]:
        """TETHER_WORKER_VLLM_ENGINE_ARGS as a dict (ValueError if it is not a JSON object of other args)."""
        if not self.engine_args:
            return {}
        try:
            extra = json.loads(self.engine_args)
        except ValueError as exc:
            raise ValueError(f"engine_args is not JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise ValueError("engine_args must be a JSON object of AsyncEngineArgs fields")
        own = sorted(_OWN_ARGS & extra.keys())
        if own:
            raise ValueError(f"engine_args may not set {', '.join(own)} (Tether sets them)")
        return extra

    def engine_kwargs(self) -> dict[str, Any]:
        """The AsyncEngineArgs of these settings: prefix caching on, stats on (they feed /metrics)."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "enable_prefix_caching": True,
            "disable_log_stats": False,
            "dtype": self.dtype,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enforce_eager": self.enforce_eager,
            "kv_cache_dtype": self.kv_cache_dtype,
            "seed": self.seed,
            "trust_remote_code": self.trust_remote_code,
        }
        optional = {
            "tokenizer": self.tokenizer,
            "revision": self.revision,
            "quantization": self.quantization,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
        }
        kwargs.update({name: value for name, value in optional.items() if value})
        kwargs.update(self.extra_args())
        return kwargs


# Field → variable: TETHER_WORKER_VLLM_<FIELD> (tether_runtime/settings.py reads them).
VLLM_ENV = EnvLoader(VllmSettings, _ENV_PREFIX)


@dataclass(frozen=True, slots=True)
class VllmApi:
    """The part of vLLM the engine uses, resolved once (`load_vllm`); the tests pass a fake of it."""

    AsyncLLM: Any  # vllm.v1.engine.async_llm.AsyncLLM
    AsyncEngineArgs: Any  # vllm.engine.arg_utils.AsyncEngineArgs
    SamplingParams: Any  # vllm.SamplingParams
    TokensPrompt: Any  # vllm.TokensPrompt
    RequestOutputKind: Any  # vllm.sampling_params.RequestOutputKind
    EngineDeadError: type[BaseException]  # vllm.v1.engine.exceptions
    EngineGenerateError: type[BaseException]
    client_errors: tuple[type[BaseException], ...]  # what vLLM raises for a request it refuses


def load_vllm() -> VllmApi:
    """Import vLLM (the `vllm` extra); ImportError when it is not installed."""
    import importlib

    from vllm import SamplingParams, TokensPrompt
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    exceptions = importlib.import_module("vllm.exceptions")
    client_errors: tuple[type[BaseException], ...] = (ValueError,)
    for name in ("VLLMClientError", "VLLMValidationError"):
        found = getattr(exceptions, name, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            client_errors += (found,)
    return VllmApi(
        AsyncLLM=AsyncLLM,
        AsyncEngineArgs=AsyncEngineArgs,
        SamplingParams=SamplingParams,
        TokensPrompt=TokensPrompt,
        RequestOutputKind=RequestOutputKind,
        EngineDeadError=EngineDeadError,
        EngineGenerateError=EngineGenerateError,
        client_errors=client_errors,
    )


class VllmEngine:
    """The Engine protocol (gpu_worker/engines/base.py) over vLLM's AsyncLLM; see the module docstring."""

    name = "vllm"

    def __init__(
        self,
        settings: VllmSettings,
        *,
        api: VllmApi | None = None,
        names: tuple[str, ...] = (),
        metrics_source: CollectorRegistry | None = None,
        call_id: Callable[[], str] = new_call_id,
    ) -> None:
        """`api`: vLLM itself by default (imported here). `names`: the model names to answer to (default:
        the model's name). `metrics_source`: the registry vLLM's Prometheus logger writes to (default:
        prometheus_client's global registry, where vLLM registers)."""
        if not settings.model:
            raise ValueError("the vllm engine needs a model (--model-path)")
        self.settings = settings
        self._api = api if api is not None else load_vllm()
        self._names = names
        self._metrics_source = metrics_source
        self._call_id = call_id
        self._llm: Any = None
        self._description: ModelDescription | None = None
        self._tokenizer: Tokenizer | None = None
        self._seq = itertools.count(1)
        self._in_flight: set[str] = set()

    # ---------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Create the AsyncLLM (loads the weights: minutes for a large model), then describe the model."""
        if self._llm is not None:
            return
        args = self._api.AsyncEngineArgs(**self.settings.engine_kwargs())
        # In the serving loop, as vLLM's own server does: AsyncLLM starts its output handler on this loop.
        self._llm = self._api.AsyncLLM.from_engine_args(args)
        try:
            config = self._llm.model_config
            description = await asyncio.to_thread(
                self._describe, int(config.get_vocab_size()), int(config.max_model_len)
            )
            self._tokenizer = tokenizer_for(description)
        except BaseException:
            await self.stop()
            raise
        self._description = description
        _LOG.info(
            "vllm engine serving %s (context %d, %s tools)",
            description.name,
            description.context_length,
            description.tool_call_format,
        )

    def _describe(self, vocab_size: int, context_length: int) -> ModelDescription:
        source = self.settings.tokenizer or self.settings.model
        try:
            checkpoint = open_checkpoint(self._model_files(source))
            if not checkpoint.has_tokenizer():
                raise CheckpointError(
                    f"{source} has no tokenizer.json; the vllm engine needs the model's own"
                )
            names = self._names or (
                () if Path(self.settings.model).expanduser().exists() else (self.settings.model,)
            )
            return describe_checkpoint(
                checkpoint,
                vocab_size=vocab_size,
                context_length=context_length,
                engine=self.name,
                names=names,
            )
        except CheckpointError as exc:
            raise EngineFailure(f"cannot describe the vllm model: {exc}") from exc

    def _model_files(self, source: str) -> Path:
        """A local directory or file; a Hugging Face name resolves to the snapshot vLLM downloaded."""
        local = Path(source).expanduser()
        if local.exists():
            return local
        try:
            from huggingface_hub import snapshot_download
        except ImportError as exc:  # a dependency of vLLM
            raise CheckpointError(f"{source} is not a local path and huggingface_hub is missing") from exc
        try:
            found = snapshot_download(
                repo_id=source, revision=self.settings.revision or None, local_files_only=True
            )
        except Exception as exc:  # huggingface_hub raises its own errors for a missing snapshot
            raise CheckpointError(f"no local snapshot of {source}: {exc}") from exc
        return Path(found)

    async def stop(self) -> None:
        """Shut vLLM down (its engine-core process and sockets); in-flight generations were cancelled."""
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.shutdown()

    def describe(self) -> ModelDescription:
        """What the worker serves (DescribeModel): from the model's own tokenizer and chat template."""
        if self._description is None:
            raise EngineFailure("the vllm engine is not started")
        return self._description

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Export vLLM's own series (`vllm:*`) on the worker's registry, next to Tether's."""
        registry.register(VllmMetricsBridge(self._metrics_source))

    def drop(self, key: str) -> None:
        """Nothing to free: vLLM's prefix cache owns the KV blocks and evicts them itself."""

    @property
    def in_flight(self) -> int:
        """vLLM requests submitted and not finished or aborted."""
        return len(self._in_flight)

    # ---------------------------------------------------------------------------------- generation
    async def generate(self, job: GenerationJob) -> AsyncIterator[EngineEvent]:
        """Prefilled (with vLLM's cached-token count), the output's chunks, then Finished."""
        llm, description, tokenizer = self._ready()
        room = description.context_length - len(job.prompt)
        if not job.prompt:
            raise InvalidRequest("the prompt is empty")
        if room < 1:
            raise InvalidRequest(
                f"the prompt has {len(job.prompt)} tokens and fills the model's context of "
                f"{description.context_length}; nothing is left for the output"
            )
        if job.tool_choice not in ("auto", "none"):
            raise InvalidRequest(
                f"tool_choice {job.tool_choice!r} needs constrained decoding, which the vllm engine does "
                'not do yet; send "auto"'
            )
        params = self._sampling(job, description, min(job.max_output_tokens, room) if job.generate else 1)
        output = ModelOutput(
            description,
            tokenizer,
            tool_names=[tool.name for tool in job.tools],
            tool_choice=job.tool_choice,
            call_id=self._call_id,
        )
        # Unique per submission: the box's request id may come back (a retry), vLLM wants one per request.
        request_id = f"{job.request_id or 'tether'}-{next(self._seq)}"
        prompt = self._api.TokensPrompt(prompt_token_ids=list(job.prompt))
        self._in_flight.add(request_id)
        done = False
        try:
            prefilled = False
            reason: str | None = None
            async with contextlib.aclosing(self._outputs(llm, prompt, params, request_id)) as outputs:
                async for out in outputs:
                    if not prefilled:
                        prefilled = True
                        # vLLM counts the prompt tokens its prefix cache served (None: not reported, say 0).
                        cached = out.num_cached_tokens or 0
                        yield Prefilled(queue_seconds=_queue_seconds(out), cached_tokens=cached)
                    completion = out.outputs[0] if out.outputs else None
                    if job.generate and completion is not None:
                        for event in output.push(completion.token_ids):
                            yield event
                    if out.finished:
                        reason = completion.finish_reason if completion is not None else None
                        break
                    if job.stop.requested and job.generate and output.stoppable:
                        reason = "stopped"  # steered: end here, as at a length limit
                        break
            if reason == "stopped":
                await self._abort(llm, request_id)  # vLLM is still decoding it
                done = True
                for event in output.finish("length"):
                    yield event
                return
            done = True
            if not prefilled or reason is None:
                raise EngineFailure(f"vLLM ended request {request_id} without a finished output")
            if reason == "abort":
                raise EngineFailure(f"vLLM aborted request {request_id}")
            if not job.generate:  # warm the prefix cache only: the sampled token is not part of the chain
                yield Finished(finish_reason="stop", output_ids=())
                return
            if reason not in ("stop", "length"):
                raise EngineFailure(f"vLLM finished request {request_id} with reason {reason!r}")
            for event in output.finish(reason):
                yield event
        finally:
            self._in_flight.discard(request_id)
            if not done:
                await self._abort(llm, request_id)

    def _ready(self) -> tuple[Any, ModelDescription, Tokenizer]:
        llm = self._llm
        if llm is None or self._description is None or self._tokenizer is None:
            raise Draining("the vllm engine is not running")
        if llm.errored:
            raise EngineFailure(f"the vLLM engine has failed: {llm.dead_error}")
        return llm, self._description, self._tokenizer

    def _sampling(self, job: GenerationJob, description: ModelDescription, max_tokens: int) -> Any:
        return self._api.SamplingParams(
            n=1,
            temperature=job.temperature,
            top_p=job.top_p,
            seed=job.seed if job.temperature > 0 else None,
            max_tokens=max_tokens,
            stop_token_ids=list(description.stop_token_ids),
            detokenize=False,
            skip_special_tokens=False,
            output_kind=self._api.RequestOutputKind.DELTA,
        )

    async def _outputs(
        self, llm: Any, prompt: Any, params: Any, request_id: str
    ) -> AsyncGenerator[Any, None]:
        """vLLM's RequestOutputs of one request, its errors turned into the worker's."""
        api = self._api
        stream = llm.generate(prompt, params, request_id)
        try:
            async for out in stream:
                yield out
        except api.EngineDeadError as exc:
            raise EngineFailure(f"the vLLM engine died: {exc}") from exc
        except api.EngineGenerateError as exc:
            cause = exc.__cause__
            if isinstance(cause, api.client_errors):
                raise InvalidRequest(f"vLLM refused the request: {cause}") from exc
            raise EngineFailure(f"vLLM failed the request: {cause or exc}") from exc
        except api.client_errors as exc:
            raise InvalidRequest(f"vLLM refused the request: {exc}") from exc
        finally:
            await stream.aclose()

    async def _abort(self, llm: Any, request_id: str) -> None:
        try:
            await llm.abort(request_id)
        except Exception:  # the engine is gone; nothing is left to free
            _LOG.warning("could not abort vLLM request %s", request_id, exc_info=True)


def _queue_seconds(out: Any) -> float:
    """Time the request waited for vLLM's scheduler (RequestStateStats; 0 when stats are off)."""
    stats = getattr(out, "metrics", None)
    queued = getattr(stats, "queued_ts", 0.0) or 0.0
    scheduled = getattr(stats, "scheduled_ts", 0.0) or 0.0
    return max(scheduled - queued, 0.0) if queued and scheduled else 0.0
