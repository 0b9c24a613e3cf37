"""The benchmark's arms and the worker KV budgets they run under. Pure.

An arm is a client mode with the box's worker routing and, for WebSocket mode, whether the client offers
permessage-deflate: `ws:affinity` (deflate offered), `ws:affinity:plain` (not offered),
`http_full:round-robin` (the stateless client behind what a Service in front of replicas gives),
`http_full:affinity` (the fair baseline: the same client meeting its worker's prefix cache),
`http_chained:affinity`.

KV regimes: `bounded` gives each worker `copies × agents × conversation / workers` tokens, so the cluster
holds every live conversation `copies` times (2.5 by default): enough under affinity, where each
conversation lives on one worker, and too little under round-robin, where every worker it visits keeps a
copy (4 with 4 workers). `unbounded` holds every conversation of the job on every worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from gpu_worker.client import ROUTINGS, WorkerRouting, check_routing
from loadtest.corpus import BYTES_PER_TOKEN
from loadtest.workload import MODE_LABELS, Mode, WorkloadError, check_mode

__all__ = [
    "DEFAULT_ARMS",
    "KV_REGIMES",
    "Arm",
    "conversation_tokens",
    "kv_budget",
    "parse_arm",
    "routings_of",
]

KV_REGIMES: Final = ("bounded", "unbounded")
DEFAULT_ARMS: Final = (
    "ws:affinity",
    "ws:affinity:plain",
    "http_full:round-robin",
    "http_full:affinity",
    "http_chained:affinity",
)
HEADER_TOKENS: Final = 700  # instructions, tool definitions, the user message and the chat format
CALL_TOKENS: Final = 80  # a function call item and the model's few words around it, per tool call
UNBOUNDED_FLOOR: Final = 400_000


@dataclass(frozen=True, slots=True)
class Arm:
    """One arm: a client mode, the box's worker routing, and whether a WebSocket client offers deflate."""

    mode: Mode
    routing: WorkerRouting
    deflate: bool = True

    @property
    def name(self) -> str:
        """The arm as written on the command line (`mode:routing[:plain]`)."""
        plain = ":plain" if self.mode == "ws" and not self.deflate else ""
        return f"{self.mode}:{self.routing}{plain}"

    @property
    def label(self) -> str:
        """A readable name for reports and charts."""
        mode = {"ws": "WebSocket", "http_full": "HTTP full context", "http_chained": "HTTP chained"}[
            self.mode
        ]
        extra = " (no deflate)" if self.mode == "ws" and not self.deflate else ""
        return f"{mode} + {self.routing}{extra}"

    @property
    def description(self) -> str:
        """What the client sends, and how the box picks workers."""
        return f"{MODE_LABELS[self.mode]}, box worker routing {self.routing}"


def parse_arm(text: str) -> Arm:
    """`mode:routing[:plain]` as an Arm; ValueError naming what is wrong."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "plain"):
        raise ValueError(f"arm {text!r} is not mode:routing[:plain]")
    try:
        mode = check_mode(parts[0])
        routing = check_routing(parts[1])
    except (WorkloadError, ValueError) as exc:
        raise ValueError(f"arm {text!r}: {exc}") from None
    if len(parts) == 3 and mode != "ws":
        raise ValueError(f"arm {text!r}: only WebSocket mode negotiates deflate (drop ':plain')")
    return Arm(mode, routing, deflate=len(parts) == 2)


def conversation_tokens(first_turn_tokens: int, tool_calls: int, output_bytes: int) -> int:
    """An upper estimate of one agent run's chain at its end, in tokens."""
    per_call = math.ceil(output_bytes / (BYTES_PER_TOKEN * 0.8)) + CALL_TOKENS
    return HEADER_TOKENS + first_turn_tokens + tool_calls * per_call


def kv_budget(regime: str, *, agents: int, runs: int, workers: int, conversation: int, copies: float) -> int:
    """Tokens each worker may hold in `regime` (see the module docstring)."""
    if regime == "bounded":
        share = math.ceil(copies * agents * conversation / workers)
        return max(share, 2 * conversation)  # a worker must at least fit the chain it is building
    if regime == "unbounded":
        return max(UNBOUNDED_FLOOR, 2 * agents * (runs + 1) * conversation)
    raise ValueError(f"unknown KV regime {regime!r}: expected one of {', '.join(KV_REGIMES)}")


def routings_of(arms: tuple[Arm, ...]) -> tuple[WorkerRouting, ...]:
    """The routings the arms need, in the order of ROUTINGS."""
    wanted = {arm.routing for arm in arms}
    return tuple(r for r in ROUTINGS if r in wanted)
