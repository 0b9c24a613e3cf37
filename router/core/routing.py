"""Routing decisions: which boxes to try, in which order, for one new connection.

- A keyed connection tries the key's owner on the ring, then its ring successors (never "first healthy":
  every replica sends a dead box's keys to the same successor). Members marked down are tried last.
  With bounded loads (factor c > 1, off by default) members at capacity are tried after the others —
  bounded loads use this replica's own connection counts, so replicas may then disagree; that is why it is
  off by default.
- A keyless connection goes to the member with the fewest active relayed connections; ties rotate.

Candidates are lazy iterators: the common case looks at the owner only.
`DownList` remembers members that refused connections: skipped (tried last) until a cooldown passes or the
shell's prober sees them accept again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from router.core.hashring import HashRing

__all__ = ["DownList", "keyed_candidates", "keyless_candidates"]


class DownList:
    """Members that failed a connect recently; `now` is the caller's monotonic clock."""

    def __init__(self, cooldown: float) -> None:
        self._cooldown = cooldown
        self._until: dict[str, float] = {}

    def mark_down(self, member: str, now: float) -> None:
        """Skip `member` until `now + cooldown` (or until `mark_up`)."""
        self._until[member] = now + self._cooldown

    def mark_up(self, member: str) -> bool:
        """Forget a failure (a probe or a connect succeeded). True if the member was marked."""
        return self._until.pop(member, None) is not None

    def is_down(self, member: str, now: float) -> bool:
        """Whether `member` is still within its cooldown."""
        until = self._until.get(member)
        return until is not None and now < until

    def marked(self) -> list[str]:
        """Every member marked down (cooldown passed or not): what the prober re-probes."""
        return sorted(self._until)

    def retain(self, members: Sequence[str] | frozenset[str] | set[str]) -> None:
        """Drop marks of members that left the ring."""
        for name in [name for name in self._until if name not in members]:
            del self._until[name]


def keyed_candidates(
    ring: HashRing,
    key: str,
    is_down: Callable[[str], bool],
    loads: Mapping[str, int] | None = None,
    bounded_factor: float | None = None,
) -> Iterator[str]:
    """Members to try for `key`, best first: ring order from the owner; members at their bounded-load
    capacity next; members marked down last. Raises EmptyRing on the first `next()` when empty."""
    capacity: Callable[[str], int] | None = None
    if bounded_factor is not None and loads is not None:
        total = sum(loads.get(name, 0) for name in ring.members) + 1
        factor = bounded_factor

        def capacity(member: str) -> int:
            return ring.capacity(member, total, factor)

    full: list[str] = []
    down: list[str] = []
    for member in ring.successors(key):
        if is_down(member):
            down.append(member)
        elif capacity is not None and loads is not None and loads.get(member, 0) >= capacity(member):
            full.append(member)
        else:
            yield member
    yield from full
    yield from down


def keyless_candidates(
    members: Sequence[str], loads: Mapping[str, int], is_down: Callable[[str], bool], turn: int = 0
) -> Iterator[str]:
    """Members ordered by (marked down, active connections); ties rotate with `turn` (a counter the caller
    increments per connection) so that idle members share keyless traffic instead of the first one taking
    it all."""
    count = len(members)
    order = sorted(
        range(count), key=lambda i: (is_down(members[i]), loads.get(members[i], 0), (i - turn) % count)
    )
    return (members[i] for i in order)
