"""Worker selection: which worker a generation goes to, and in which order the others are tried.

Pure: the pool passes the workers that serve the model, those marked down and its own in-flight counts.

- `affinity` (the default): rendezvous order of the chain's key (gpu_worker/client/rendezvous.py), so
  every turn of a conversation meets the same worker and its prefix cache.
- `round-robin`: each call goes to the next worker in turn, whatever its key: what a Kubernetes Service
  (or any connection-level balancer) in front of model replicas gives. A keyed chain that lands on a
  worker that does not hold it is answered FAILED_PRECONDITION, and the pool resends the whole chain once
  on that same worker (counted as `resend`); that worker's prefix cache reuses what it held of the chain.
- `least-loaded`: the worker with the fewest calls this pool has in flight; ties go round-robin. A
  load-only balancer: it never looks at the key.

Whatever the pick, the workers marked down come last and the rest follow in the policy's order, so a
failover still finds a live worker.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Final, Literal

from gpu_worker.client.rendezvous import rank

__all__ = ["ROUTINGS", "WorkerRouting", "WorkerSelector", "check_routing"]

WorkerRouting = Literal["affinity", "round-robin", "least-loaded"]
ROUTINGS: Final[tuple[WorkerRouting, ...]] = ("affinity", "round-robin", "least-loaded")


def check_routing(value: str) -> WorkerRouting:
    """`value` as a WorkerRouting; ValueError naming the choices otherwise."""
    for known in ROUTINGS:
        if value == known:
            return known
    raise ValueError(f"unknown worker routing {value!r}: expected one of {', '.join(ROUTINGS)}")


class WorkerSelector:
    """Orders the serving workers for one call under a routing policy (keeps only its turn counter)."""

    def __init__(self, routing: str = "affinity") -> None:
        self.routing: WorkerRouting = check_routing(routing)
        self._turn = 0

    def order(
        self,
        key: str,
        serving: Sequence[str],
        *,
        down: Collection[str] = (),
        in_flight: Mapping[str, int] | None = None,
    ) -> list[str]:
        """`serving` in the order to try for one call: the pick first, workers marked down last.

        Round-robin and least-loaded advance the turn once per call, so calls rotate over the workers."""
        if not serving:
            return []
        if self.routing == "affinity":
            ranked = rank(key, serving)
            return _up_first(ranked, down)
        start = self._turn % len(serving)
        self._turn += 1
        rotation = [*serving[start:], *serving[:start]]
        if self.routing == "least-loaded":
            loads = in_flight or {}
            position = {target: index for index, target in enumerate(rotation)}
            rotation.sort(key=lambda t: (loads.get(t, 0), position[t]))
        return _up_first(rotation, down)

    def affinity_order(self, key: str, serving: Sequence[str], *, down: Collection[str] = ()) -> list[str]:
        """The rendezvous order of `key` (workers marked down last), whatever the policy."""
        return _up_first(rank(key, serving), down)


def _up_first(ordered: Sequence[str], down: Collection[str]) -> list[str]:
    return [t for t in ordered if t not in down] + [t for t in ordered if t in down]
