"""The store:true session store: LRU by bytes, tenant scoping, shared chains accounted once."""

from __future__ import annotations

from array import array

import pytest

from api_box.core.chain import ChainRef, ChainState, HeaderCache
from api_box.core.store import ResponseRecord, SessionStore

HEADER = HeaderCache().header(None, ())


def chain(key: str, tokens: int) -> ChainState:
    return ChainState(key, HEADER, array("I", range(tokens)))


def rec(tenant: str, rid: str, c: ChainState, resource: bytes = b"{}") -> ResponseRecord:
    return ResponseRecord(tenant, rid, ChainRef(c, c.length, c.agent), store=True, resource=resource)


def test_get_is_tenant_scoped() -> None:
    store = SessionStore(10_000_000)
    store.put(rec("alpha", "resp_1", chain("ck", 10)))
    assert store.get("alpha", "resp_1") is not None
    assert store.get("beta", "resp_1") is None


def test_records_of_one_chain_account_the_chain_once() -> None:
    store = SessionStore(10_000_000)
    c = chain("ck", 1000)
    store.put(rec("t", "r1", c))
    one = store.nbytes
    c.tokens.extend(range(1000))
    c.digest.extend(range(1000))
    store.put(rec("t", "r2", c))
    grown = c.nbytes() + 2 * (one - chain("x", 1000).nbytes())
    assert store.nbytes == pytest.approx(grown, abs=64)
    store.delete("t", "r1")
    assert store.holds_chain("ck")
    store.delete("t", "r2")
    assert store.nbytes == 0
    assert not store.holds_chain("ck")
    assert len(store) == 0


def test_least_recently_used_records_are_evicted_to_fit() -> None:
    size = rec("t", "r0", chain("k0", 1000)).own_bytes() + chain("k0", 1000).nbytes()
    store = SessionStore(size * 3 + 10)
    for i in range(3):
        assert store.put(rec("t", f"r{i}", chain(f"k{i}", 1000))) == []
    store.get("t", "r0")  # r0 is now the most recently used
    evicted = store.put(rec("t", "r3", chain("k3", 1000)))
    assert [r.response_id for r in evicted] == ["r1"]
    assert store.get("t", "r0") is not None
    assert store.nbytes <= store.max_bytes


def test_a_record_larger_than_the_budget_is_not_kept() -> None:
    store = SessionStore(1000)
    evicted = store.put(rec("t", "big", chain("k", 10_000)))
    assert [r.response_id for r in evicted] == ["big"]
    assert len(store) == 0
    assert store.nbytes == 0


def test_putting_the_same_id_twice_replaces_it() -> None:
    store = SessionStore(10_000_000)
    c = chain("k", 10)
    store.put(rec("t", "r", c, b"a"))
    store.put(rec("t", "r", c, b"bb"))
    assert len(store) == 1
    assert store.get("t", "r").resource == b"bb"


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        SessionStore(0)
