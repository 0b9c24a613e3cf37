"""Scraped Prometheus metrics: snapshots of every target, differences, and the figures the report uses.

A `Snapshot` maps (target name, metric sample name, sorted labels) to a value. The benchmark scrapes
every box, router and worker before and after each measured step; `Delta` answers "how many payload bytes
did the boxes count", "how many CPU seconds did the boxes spend", "what fraction of TTFTs were under
0.5 s" for that step. Names are those of docs/metrics.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, str, Labels]  # target, sample name, labels
KINDS = ("box", "router", "worker")


def parse(target: str, text: str) -> dict[Key, float]:
    """Samples of one target's exposition text."""
    samples: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples[target, sample.name, labels] = float(sample.value)
    return samples


def kind_of(samples: Mapping[Key, float]) -> str | None:
    """box, router or worker, from the metric names a target exports (None: not a Tether process)."""
    names = {name for _, name, _ in samples}
    for kind, prefix in (("box", "tether_box_"), ("router", "tether_router_"), ("worker", "tether_worker_")):
        if any(name.startswith(prefix) for name in names):
            return kind
    return None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every sample of every target at one moment (`at` in seconds, monotonic)."""

    at: float
    samples: Mapping[Key, float]
    kinds: Mapping[str, str]  # target name -> box | router | worker

    def minus(self, earlier: Snapshot) -> Delta:
        """What changed since `earlier` (counters and histograms only make sense here)."""
        keys = set(self.samples) | set(earlier.samples)
        changes = {k: self.samples.get(k, 0.0) - earlier.samples.get(k, 0.0) for k in keys}
        return Delta(self.at - earlier.at, changes, dict(self.kinds))


@dataclass(frozen=True, slots=True)
class Delta:
    """Differences between two snapshots."""

    seconds: float
    changes: Mapping[Key, float]
    kinds: Mapping[str, str]

    def total(self, target_kind: str, name: str, /, **labels: str) -> float:
        """Sum of `name` over the targets of `target_kind` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(
            value
            for (target, sample, sample_labels), value in self.changes.items()
            if sample == name and self.kinds.get(target) == target_kind and wanted <= set(sample_labels)
        )

    def per_target(self, name: str) -> dict[str, float]:
        """`name` (no labels) per target."""
        return {
            target: v for (target, sample, labels), v in self.changes.items() if sample == name and not labels
        }

    def box_bytes(self, direction: str) -> float:
        """Payload bytes the boxes counted, all modes (tether_box_bytes_total)."""
        return self.total("box", "tether_box_bytes_total", direction=direction)

    def router_bytes(self, direction: str) -> float:
        """Wire bytes the routers relayed, all modes (tether_router_bytes_total)."""
        return self.total("router", "tether_router_bytes_total", direction=direction)

    def cpu_seconds(self, kind: str) -> float:
        """process_cpu_seconds_total of every target of `kind`."""
        return self.total(kind, "process_cpu_seconds_total")

    def ttft(self) -> HistogramDelta:
        """tether_box_time_to_first_token_seconds over every box and mode."""
        return self._histogram("tether_box_time_to_first_token_seconds")

    def _histogram(self, base: str) -> HistogramDelta:
        buckets: dict[float, float] = {}
        for (target, sample, labels), value in self.changes.items():
            if sample != base + "_bucket" or self.kinds.get(target) != "box":
                continue
            le = dict(labels)["le"]
            bound = math.inf if le in ("+Inf", "inf") else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + value
        count = self.total("box", base + "_count")
        total = self.total("box", base + "_sum")
        return HistogramDelta(tuple(sorted(buckets.items())), count, total)


@dataclass(frozen=True, slots=True)
class HistogramDelta:
    """Cumulative (upper bound, count) buckets of a histogram over one step."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    total: float

    @property
    def mean(self) -> float | None:
        """Mean observation, or None without observations."""
        return self.total / self.count if self.count else None

    def fraction_at_most(self, bound: float) -> float | None:
        """Exact share of observations <= `bound` when `bound` is a bucket boundary (else None)."""
        for upper, cumulative in self.buckets:
            if math.isclose(upper, bound):
                return cumulative / self.count if self.count else None
        return None

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket that holds the q-quantile (Prometheus' method)."""
        if not self.count:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for upper, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(upper):
                    return lower
                inside = cumulative - below
                return lower + (upper - lower) * ((rank - below) / inside if inside else 0.0)
            lower, below = upper, cumulative
        return lower


def ratio(a: float, b: float) -> float | None:
    """a / b, or None when b is 0."""
    return a / b if b else None


def merge(parts: Iterable[Mapping[Key, float]]) -> dict[Key, float]:
    """One mapping from the samples of several targets."""
    merged: dict[Key, float] = {}
    for part in parts:
        merged.update(part)
    return merged
