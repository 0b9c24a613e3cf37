"""The interface through which a cold store (Redis: api_box/io/redis_store.py) plugs into the box.

The box calls, and only calls:
- `append(turn)` after every completed store:true response, off the latency path. An implementation
  must not block the caller: enqueue into a bounded write-behind queue and return (count what it drops in
  tether_box_write_behind_dropped_total{reason}).
- `restore(tenant, response_id)` when a store:true continuation (or GET /v1/responses/{id}) misses the
  box's memory. Return the chain snapshot (api_box/core/handoff.py: fold the records with
  `snapshot_from_turns`) or None (→ previous_response_not_found / 404). It must be bounded in time;
  exceptions are treated as a miss.
- `delete(tenant, response_id)` on DELETE /v1/responses/{id}.
- `needs_whole(cache_key)` before building a turn record: True makes the record whole (the store lost
  or never had the chain's earlier records, so a delta over them could not be restored).
- `flush()` during a drain: wait (within its own budget) until everything appended so far is written.
- `close()` at shutdown: flush what it can within its own budget.
`enabled` False lets the box skip building turn records at all (NullColdStore).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from api_box.core.handoff import ChainSnapshot, TurnRecord


@runtime_checkable
class ColdStore(Protocol):
    """Write-behind and cold restore of store:true chains."""

    @property
    def enabled(self) -> bool:
        """Whether appends are kept (False: the box does not even build turn records)."""
        ...

    async def append(self, turn: TurnRecord) -> None:
        """Queue a completed turn for writing; never blocks on the store."""
        ...

    async def restore(self, tenant: str, response_id: str) -> ChainSnapshot | None:
        """The chain ending at this response, or None."""
        ...

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Forget a response; True when the store held it. Raises StoreUnavailable when the store could
        not be reached (the response may still be there)."""
        ...

    def needs_whole(self, cache_key: str) -> bool:
        """Whether the next turn record of this chain must be whole."""
        ...

    async def flush(self) -> bool:
        """Wait until every appended turn is written; False when the store's flush budget ran out."""
        ...

    async def close(self) -> None:
        """Flush and release resources."""
        ...


class NullColdStore:
    """No cold store: nothing is written, every restore misses."""

    @property
    def enabled(self) -> bool:
        """Always False."""
        return False

    async def append(self, turn: TurnRecord) -> None:
        """Discard."""

    async def restore(self, tenant: str, response_id: str) -> ChainSnapshot | None:
        """Always a miss."""
        return None

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Nothing to forget."""
        return False

    def needs_whole(self, cache_key: str) -> bool:
        """Nothing is written at all."""
        return False

    async def flush(self) -> bool:
        """Nothing to flush."""
        return True

    async def close(self) -> None:
        """Nothing to flush."""
