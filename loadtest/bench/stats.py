"""Pure figures over the client's turn and run records (dicts as the load generator emits them)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Record = Mapping[str, Any]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation between closest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def mean(values: Iterable[float]) -> float | None:
    """Arithmetic mean; None when empty."""
    items = list(values)
    return sum(items) / len(items) if items else None


def ok_turns(turns: Iterable[Record]) -> list[Record]:
    """Turns that completed."""
    return [t for t in turns if not t.get("error")]


def turn_summary(turns: Sequence[Record]) -> dict[str, Any]:
    """Counts, bytes, TTFT and turn-time figures of a set of turns."""
    good = ok_turns(turns)
    ttfts = [float(t["ttft"]) for t in good if t.get("ttft") is not None]
    seconds = [float(t["seconds"]) for t in good]
    return {
        "turns": len(good),
        "errors": len(turns) - len(good),
        "up_payload": sum(int(t["up_payload"]) for t in turns),
        "down_payload": sum(int(t["down_payload"]) for t in turns),
        "up_wire": sum(int(t["up_wire"]) for t in turns),
        "down_wire": sum(int(t["down_wire"]) for t in turns),
        "ttft_mean": mean(ttfts),
        "ttft_p50": percentile(ttfts, 0.50),
        "ttft_p95": percentile(ttfts, 0.95),
        "ttft_p99": percentile(ttfts, 0.99),
        "turn_mean": mean(seconds),
        "turn_p99": percentile(seconds, 0.99),
        "input_tokens_mean": mean(float(t["input_tokens"]) for t in good),
    }


def run_summary(runs: Sequence[Record]) -> dict[str, Any]:
    """Run-time figures of completed agent runs."""
    good = [r for r in runs if not r.get("error")]
    seconds = [float(r["seconds"]) for r in good]
    return {
        "runs": len(good),
        "failed_runs": len(runs) - len(good),
        "run_mean": mean(seconds),
        "run_p50": percentile(seconds, 0.50),
        "run_min": min(seconds) if seconds else None,
        "run_max": max(seconds) if seconds else None,
    }


def per_turn_index(turns: Sequence[Record], key: str) -> list[tuple[int, float]]:
    """(turn index, mean of `key` over the completed turns with that index), by index."""
    groups: dict[int, list[float]] = {}
    for t in ok_turns(turns):
        value = t.get(key)
        if value is not None:
            groups.setdefault(int(t["turn"]), []).append(float(value))
    return [(index, sum(v) / len(v)) for index, v in sorted(groups.items())]


def cumulative(points: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """Running sum of per-turn values."""
    total = 0.0
    out = []
    for index, value in points:
        total += value
        out.append((index, total))
    return out


def reduction(smaller: float | None, larger: float | None) -> float | None:
    """1 - smaller/larger (e.g. 0.9 = 90% less); None when undefined."""
    if smaller is None or not larger:
        return None
    return 1.0 - smaller / larger
