"""Responses kept by the box: the record of one response, and the store:true session store (LRU by bytes).

Keys are (tenant, response_id): a tenant never sees another tenant's ids, they are simply not found.

Byte accounting: a record accounts its own JSON (the ResponseResource and its input items); the token
chain it points into is shared by every response of that chain, so a chain is accounted once, at its size
when a record of it was last put, and released when its last record leaves the store. The store evicts
least-recently-used records until it is within its byte budget; a single record larger than the whole
budget is not kept (a later continuation from it gets previous_response_not_found).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from api_box.core.chain import ChainRef

_RECORD_OVERHEAD = 512  # the record object, its key and the LRU entry, approximately


@dataclass(slots=True)
class ResponseRecord:
    """A completed response that a later turn may continue from."""

    tenant: str
    response_id: str
    ref: ChainRef
    store: bool
    resource: bytes = b""  # the final ResponseResource JSON (kept for store:true)
    input_items: bytes = b""  # JSON array of this response's input items (kept for store:true)

    def own_bytes(self) -> int:
        """Bytes accounted to this record itself (its chain is accounted separately)."""
        return len(self.resource) + len(self.input_items) + len(self.response_id) + _RECORD_OVERHEAD


@dataclass(slots=True)
class _ChainAccount:
    refs: int
    nbytes: int


class SessionStore:
    """store:true responses in memory, LRU-bounded by bytes, scoped by tenant."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._records: OrderedDict[tuple[str, str], ResponseRecord] = OrderedDict()
        self._chains: dict[str, _ChainAccount] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._records)

    @property
    def nbytes(self) -> int:
        """Bytes accounted to the store."""
        return self._bytes

    def get(self, tenant: str, response_id: str) -> ResponseRecord | None:
        """The record, marked recently used; None when absent or another tenant's."""
        key = (tenant, response_id)
        record = self._records.get(key)
        if record is not None:
            self._records.move_to_end(key)
        return record

    def put(self, record: ResponseRecord) -> list[ResponseRecord]:
        """Keep a record; returns the records evicted to stay within the budget (possibly this one)."""
        key = (record.tenant, record.response_id)
        if key in self._records:
            self._remove(key)
        self._records[key] = record
        self._bytes += record.own_bytes()
        self._account_chain(record)
        evicted: list[ResponseRecord] = []
        while self._bytes > self.max_bytes and self._records:
            oldest = next(iter(self._records))
            evicted.append(self._remove(oldest))
        return evicted

    def delete(self, tenant: str, response_id: str) -> ResponseRecord | None:
        """Forget a record; None when absent."""
        key = (tenant, response_id)
        if key not in self._records:
            return None
        return self._remove(key)

    def holds_chain(self, cache_key: str) -> bool:
        """Whether any kept record points into the chain with this cache key."""
        return cache_key in self._chains

    def _account_chain(self, record: ResponseRecord) -> None:
        chain = record.ref.chain
        size = chain.nbytes()
        account = self._chains.get(chain.cache_key)
        if account is None:
            self._chains[chain.cache_key] = _ChainAccount(1, size)
            self._bytes += size
        else:
            account.refs += 1
            self._bytes += size - account.nbytes
            account.nbytes = size

    def _remove(self, key: tuple[str, str]) -> ResponseRecord:
        record = self._records.pop(key)
        self._bytes -= record.own_bytes()
        cache_key = record.ref.chain.cache_key
        account = self._chains[cache_key]
        account.refs -= 1
        if account.refs == 0:
            del self._chains[cache_key]
            self._bytes -= account.nbytes
        return record
