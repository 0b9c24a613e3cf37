"""Settings of one worker process: a frozen dataclass built from the environment, CLI flags on top.

Environment (all optional; an empty variable is unset; a bad value fails start-up with the variable's name;
read by the shared loader, tether_runtime/settings.py, with the declarations at the end of this module):

    TETHER_WORKER_HOST                          127.0.0.1   gRPC bind address
    TETHER_WORKER_PORT                          50051       gRPC port (0: pick a free one)
    TETHER_WORKER_METRICS_PORT                  0           /metrics port (0: pick a free one, -1: off)
    TETHER_WORKER_ENGINE                        sim         sim | torch | vllm (TETHER_WORKER_TORCH_*,
                                                            TETHER_WORKER_VLLM_*)
    TETHER_WORKER_MODEL_NAME                    tether-sim  the name the sim and dummy weights answer to
    TETHER_WORKER_MODEL_PATH                    (none)      torch: a Hugging Face directory or a .gguf file;
                                                            vllm (required): a directory or a model name
    TETHER_WORKER_KV_BUDGET_TOKENS              400000      tokens of chains held (LRU beyond)
    TETHER_WORKER_RETAINED_SHARE                0.5         share of the budget retained chains may hold
    TETHER_WORKER_MAX_RETAIN_SECONDS            43200       retain_seconds cap (INVALID_ARGUMENT beyond)
    TETHER_WORKER_SPEED                         1.0         sim time scale (0: no delays)
    TETHER_WORKER_LOG_FORMAT                    text        text | json (docs/logging.md)
    TETHER_WORKER_LOG_LEVEL                     INFO        DEBUG | INFO | WARNING | ERROR | CRITICAL
    TETHER_WORKER_DRAIN_SECONDS                 30          in-flight budget on SIGTERM
    TETHER_WORKER_MAX_MESSAGE_BYTES             8388608     gRPC message size limit
    TETHER_WORKER_MAX_CONCURRENT_RPCS           8192
    TETHER_WORKER_MAX_PROMPT_TOKENS             131072      per request (INVALID_ARGUMENT beyond)
    TETHER_WORKER_MAX_OUTPUT_TOKENS             32768       max_output_tokens cap
    TETHER_WORKER_DEFAULT_MAX_OUTPUT_TOKENS     1024        when a request sends 0
    TETHER_WORKER_MAX_RUNNING                   1024        sim: batch slots
    TETHER_WORKER_MAX_QUEUE                     4096        sim: admission queue
    TETHER_WORKER_MAX_BATCHED_TOKENS            8192        sim: tokens per step
    TETHER_WORKER_PREFILL_SECONDS_PER_TOKEN     3.7e-05     sim timing (gpu_worker/core/timing.py)
    TETHER_WORKER_DECODE_STEP_SECONDS           0.0046
    TETHER_WORKER_DECODE_STEP_PER_SEQUENCE_SECONDS  3e-05
    TETHER_WORKER_REQUEST_OVERHEAD_SECONDS      0.003
    TETHER_WORKER_TOOL_CALLS_PER_MESSAGE        3           agent defaults (gpu_worker/core/agent.py)
    TETHER_WORKER_ANSWER_TOKENS                 60
    TETHER_WORKER_ARGUMENT_BYTES                80
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from gpu_worker.core.agent import AgentSettings
from gpu_worker.core.timing import TimingModel
from gpu_worker.core.validation import Limits
from tether_runtime.logs import LOG_FORMATS, LOG_LEVELS, LogFormat, LogLevel
from tether_runtime.settings import EnvLoader

__all__ = ["ENGINES", "ENV_LOADERS", "LOG_FORMATS", "SettingsError", "WorkerSettings", "env_variables"]

Engine = Literal["sim", "torch", "vllm"]  # any case from the environment
ENGINES: tuple[str, ...] = get_args(Engine)
_PREFIX = "TETHER_WORKER_"


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable or flag."""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Everything one worker process is configured with."""

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 0  # -1: off
    engine: Engine = "sim"
    model_name: str = "tether-sim"  # the name the sim and dummy weights answer to (DescribeModel)
    model_path: str = ""  # torch: a checkpoint, empty: dummy weights; vllm: the model (directory or name)
    kv_budget_tokens: int = 400_000
    # Retained chains (prompt_cache_options.ttl) may hold at most this share of kv_budget_tokens.
    retained_share: float = 0.5
    speed: float = 1.0
    log_format: LogFormat = "text"
    log_level: LogLevel = "INFO"
    drain_seconds: float = 30.0
    max_message_bytes: int = 8 * 1024 * 1024
    max_concurrent_rpcs: int = 8192
    limits: Limits = field(default_factory=Limits)
    timing: TimingModel = field(default_factory=TimingModel)
    agent: AgentSettings = field(default_factory=AgentSettings)

    def __post_init__(self) -> None:
        checks = (
            (0 <= self.port <= 65535, f"port {self.port} is outside 0..65535"),
            (-1 <= self.metrics_port <= 65535, f"metrics_port {self.metrics_port} is outside -1..65535"),
            (self.engine in ENGINES, f"engine {self.engine!r} is not one of {', '.join(ENGINES)}"),
            (
                not self.model_path or self.engine != "sim",
                "a model path needs the torch engine or the vllm engine",
            ),
            (bool(self.model_path) or self.engine != "vllm", "the vllm engine needs a model path"),
            (self.kv_budget_tokens > 0, "kv_budget_tokens must be > 0"),
            (
                math.isfinite(self.retained_share) and 0 <= self.retained_share <= 1,
                "retained_share must be within 0..1",
            ),
            (math.isfinite(self.speed) and self.speed >= 0, "speed must be a finite number >= 0"),
            (self.log_format in LOG_FORMATS, f"log_format must be one of {', '.join(LOG_FORMATS)}"),
            (self.log_level in LOG_LEVELS, f"log_level must be one of {', '.join(LOG_LEVELS)}"),
            (self.drain_seconds >= 0, "drain_seconds must be >= 0"),
            (self.max_message_bytes >= 64 * 1024, "max_message_bytes must be >= 65536"),
            (self.max_concurrent_rpcs >= 1, "max_concurrent_rpcs must be >= 1"),
        )
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> WorkerSettings:
        """Settings from TETHER_WORKER_* variables (defaults for the rest), with `overrides` (command-line
        flags; None: not given) on top before any check, so a flag and a variable may complete each other
        (`--engine torch` with TETHER_WORKER_MODEL_PATH)."""
        values = {**ENV.read(environ), **{k: v for k, v in overrides.items() if v is not None}}
        try:
            return ENV.build(
                {
                    **values,
                    "limits": _LIMITS_ENV.load(environ),
                    "timing": _TIMING_ENV.load(environ),
                    "agent": _AGENT_ENV.load(environ),
                }
            )
        except SettingsError:
            raise
        except ValueError as exc:  # the checks of Limits, TimingModel or AgentSettings
            raise SettingsError(str(exc)) from None

    def with_overrides(self, **values: Any) -> WorkerSettings:
        """A copy with the given top-level fields replaced (CLI flags); None values are ignored."""
        given = {k: v for k, v in values.items() if v is not None}
        return replace(self, **given) if given else self

    def metrics_enabled(self) -> bool:
        """Whether the /metrics port is served."""
        return self.metrics_port >= 0


# Field → variable. The worker's own fields are TETHER_WORKER_<FIELD>; the request limits, the sim's timing
# and its agent defaults are read from the TETHER_WORKER_* names of the table above.
ENV = EnvLoader(WorkerSettings, _PREFIX, exclude=("limits", "timing", "agent"), error=SettingsError)
_LIMITS_ENV = EnvLoader(
    Limits,
    _PREFIX,
    names={
        "max_retain_seconds": "MAX_RETAIN_SECONDS",
        "max_prompt_tokens": "MAX_PROMPT_TOKENS",
        "max_output_tokens": "MAX_OUTPUT_TOKENS",
        "default_max_output_tokens": "DEFAULT_MAX_OUTPUT_TOKENS",
    },
    error=SettingsError,
)
_TIMING_ENV = EnvLoader(
    TimingModel,
    _PREFIX,
    names={
        "max_running": "MAX_RUNNING",
        "max_queue": "MAX_QUEUE",
        "max_batched_tokens": "MAX_BATCHED_TOKENS",
        "prefill_seconds_per_token": "PREFILL_SECONDS_PER_TOKEN",
        "decode_step_base_seconds": "DECODE_STEP_SECONDS",
        "decode_step_per_sequence_seconds": "DECODE_STEP_PER_SEQUENCE_SECONDS",
        "request_overhead_seconds": "REQUEST_OVERHEAD_SECONDS",
    },
    error=SettingsError,
)
_AGENT_ENV = EnvLoader(
    AgentSettings,
    _PREFIX,
    names={
        "tool_calls_per_message": "TOOL_CALLS_PER_MESSAGE",
        "answer_tokens": "ANSWER_TOKENS",
        "argument_bytes": "ARGUMENT_BYTES",
    },
    error=SettingsError,
)
ENV_LOADERS = (ENV, _LIMITS_ENV, _TIMING_ENV, _AGENT_ENV)


def env_variables() -> frozenset[str]:
    """Every TETHER_WORKER_* variable WorkerSettings reads (the engines' own are in their modules)."""
    return frozenset(v for loader in ENV_LOADERS for v in loader.variables.values())
