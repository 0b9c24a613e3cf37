"""BenchSettings: everything `tether bench` does, from `TETHER_BENCH_*` variables with flags on top.

Each field has an environment variable `TETHER_BENCH_<FIELD IN UPPER CASE>` (tuples are comma-separated,
booleans 1/0/true/false/yes/no); tether/bench.py applies the command-line flags over them. Bad values fail
loudly with BenchConfigError naming the variable or field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from loadtest.workload import MAX_HISTORY_TOKENS, MAX_OUTPUT_BYTES, MAX_TOOL_CALLS, MODES, Mode, check_mode

ENV_PREFIX = "TETHER_BENCH_"
LINKS = ("loopback", "shaped")


class BenchConfigError(ValueError):
    """A benchmark setting is out of range; the message names it."""


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """See `tether bench --help` for what each field means."""

    base_url: str = ""  # empty: start a local cluster
    metrics: tuple[str, ...] = ()  # /metrics URLs of a running cluster's boxes, routers and workers
    api_key: str = "tether-dev-key"
    modes: tuple[str, ...] = MODES
    links: tuple[str, ...] = LINKS
    concurrency: int = 4
    runs: int = 2
    tool_calls: tuple[int, ...] = (1, 5, 10, 20)
    headline_tool_calls: int = 20
    output_bytes: int = 4096
    rtt_ms: float = 20.0
    rate_mbit: float = 50.0
    overhead: bool = True
    history_tokens: tuple[int, ...] = (1_000, 10_000, 30_000, 100_000)
    history_seconds: float = 5.0
    capacity: bool = True
    capacity_tokens: int = 100_000
    capacity_levels: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    capacity_seconds: float = 6.0
    capacity_output_bytes: int = 512
    capacity_modes: tuple[str, ...] = ("ws", "http_full")
    slo_ttft_ms: float = 500.0
    boxes: int = 1
    workers: int = 1
    speed: float = 1.0
    pin: bool = True
    turn_timeout: float = 60.0
    deadline: float = 1800.0
    out: str = ""  # empty: results/bench-<UTC time>
    plots: bool = True

    def __post_init__(self) -> None:
        checks: dict[str, bool] = {
            "base_url": not self.base_url or self.base_url.startswith(("http://", "https://")),
            "modes": bool(self.modes) and all(m in MODES for m in self.modes),
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
            "speed": math.isfinite(self.speed) and self.speed >= 0,
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
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            if name in env:
                values[f.name] = _convert(name, env[name], hints[f.name])
        return cls(**values)

    def replace(self, **changes: Any) -> BenchSettings:
        """A copy with the given fields changed (None values are ignored: flags not given)."""
        try:
            return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        except TypeError as exc:
            raise BenchConfigError(str(exc)) from None


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
    "capacity_seconds": 1.0,
    "capacity_output_bytes": 256,
    "turn_timeout": 20.0,
    "deadline": 120.0,
    "speed": 0.0,
}


def _convert(name: str, raw: str, kind: Any) -> Any:
    text = raw.strip()
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind == tuple[int, ...]:
            return tuple(int(part) for part in text.split(",") if part.strip())
        if kind == tuple[str, ...]:
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return text
    except ValueError:
        raise BenchConfigError(f"{name}={raw!r} is not a valid {getattr(kind, '__name__', kind)}") from None
