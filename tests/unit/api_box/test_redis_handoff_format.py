"""The cold-store side of the handoff format: slim records, version refusal, truncation, chain_path over
shared chain lists (duplicates, sibling branches, gaps), and key namespacing."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api_box.core.chain import AgentCounters
from api_box.core.handoff import (
    FORMAT_VERSION,
    ColdKeys,
    TurnRecord,
    chain_path,
    fold_chain,
    snapshot_from_turns,
)


def record(rid: str, base: TurnRecord | None, tokens: tuple[int, ...], tenant: str = "t") -> TurnRecord:
    return TurnRecord(
        tenant=tenant, response_id=rid, previous_response_id=base.response_id if base else None,
        base_response_id=base.response_id if base else None, base_len=0 if base is None else 1,
        cache_key="ck", header_key=b"\x01" * 16, header_len=1, tokens=tokens, call_ids={},
        agent=AgentCounters(), created_at=0.0, resource=b'{"r":1}', input_items=b"[]",
    )  # fmt: skip


def test_slim_drops_only_the_blobs_and_round_trips() -> None:
    full = record("r1", None, (1, 2, 3))
    slim = full.slim()
    assert (slim.resource, slim.input_items) == (b"", b"")
    assert slim.tokens == full.tokens
    assert TurnRecord.from_bytes(slim.to_bytes()) == slim
    assert full.to_bytes_pair() == (full.to_bytes(), slim.to_bytes())
    assert full.nbytes() >= len(full.to_bytes()) // 2


def test_other_versions_truncations_and_garbage_are_refused() -> None:
    raw = record("r1", None, (1, 2)).to_bytes()
    other = raw.replace(b'"v":%d' % FORMAT_VERSION, b'"v":%d' % (FORMAT_VERSION + 1))
    for bad in (
        other,
        raw[:10],
        raw[:4] + b"\xff\xff\xff\x00" + raw[8:],
        raw[:-1],
        b"TTR1" + b"\x02\x00\x00\x00{}",
    ):
        with pytest.raises(ValueError, match=r"handoff record|multiple of 4|corrupt"):
            TurnRecord.from_bytes(bad)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_value_error(raw: bytes) -> None:
    try:
        decoded = TurnRecord.from_bytes(b"TTR1" + raw)
    except ValueError:
        return
    assert TurnRecord.from_bytes(decoded.to_bytes()) == decoded


def test_chain_path_picks_the_ancestry_out_of_a_shuffled_list_with_siblings_and_duplicates() -> None:
    r1 = record("r1", None, (1,))
    r2 = record("r2", r1, (2,))
    r3a, r3b = record("r3a", r2, (3,)), record("r3b", r2, (30,))
    r4b = record("r4b", r3b, (40,))
    listed = [r.slim() for r in (r1, r2, r3a, r3b, r4b, r2, r3a)]
    random.Random(7).shuffle(listed)
    path = chain_path(r4b, listed)
    assert [r.response_id for r in path] == ["r1", "r2", "r3b", "r4b"]
    assert path[-1] is r4b  # the target keeps its blobs
    assert snapshot_from_turns(path).resource == b'{"r":1}'
    assert chain_path(r1, []) == [r1]


def test_chain_path_stops_at_the_nearest_whole_record() -> None:
    r1 = record("r1", None, (1,))
    r2 = record("r2", r1, (2,))
    rewritten = record("r3", None, (1, 2, 3))  # written whole again (after a gap, or every so often)
    r4 = record("r4", rewritten, (4,))
    assert [r.response_id for r in chain_path(r4, [r1, r2, rewritten])] == ["r3", "r4"]


def test_chain_path_refuses_gaps_other_tenants_and_cycles() -> None:
    r1 = record("r1", None, (1,))
    r2 = record("r2", r1, (2,))
    r3 = record("r3", r2, (3,))
    with pytest.raises(ValueError, match="incomplete"):
        chain_path(r3, [r1])  # r2 was never written
    with pytest.raises(ValueError, match="incomplete"):
        chain_path(r3, [r1, record("r2", r1, (2,), tenant="other")])
    loop = record("r5", r3, (5,))
    cyclic = TurnRecord(**{**{f: getattr(r3, f) for f in r3.__dataclass_fields__}, "base_response_id": "r5"})
    with pytest.raises(ValueError, match="incomplete"):
        chain_path(loop, [cyclic])


def test_keys_are_namespaced_and_escaped() -> None:
    keys = ColdKeys("px")
    assert keys.response("alpha", "resp_1") == "px:alpha:r:resp_1"
    assert keys.chain("alpha", "ck_1") == "px:alpha:c:ck_1"
    assert keys.response("a:r:b", "c") != keys.response("a", "b:r:c")
    assert ":" not in keys.response("a:b", "c:d").removeprefix("px:").replace(":r:", "")
    assert keys.writer("w1") == "px:writer:w1"


def test_fold_chain_equals_chain_path_then_snapshot_and_refuses_a_gap() -> None:
    r1 = record("r1", None, (1, 2, 3))
    r2 = record("r2", r1, (20, 21))  # base_len 1: cuts the chain back to (1,), then appends
    r3a, r3b = record("r3a", r2, (30,)), record("r3b", r2, (31, 32))
    listed = [r.slim().to_bytes() for r in (r1, r2, r3a, r3b)]
    expected = snapshot_from_turns(chain_path(r3b, [r1, r2, r3a]))
    assert fold_chain(r3b, listed) == expected
    assert fold_chain(r1, []) == snapshot_from_turns([r1])
    with pytest.raises(ValueError, match="incomplete"):
        fold_chain(r3b, listed[1:])
    with pytest.raises(ValueError, match="truncated"):
        fold_chain(r3b, [b"TTR1garbage"])
