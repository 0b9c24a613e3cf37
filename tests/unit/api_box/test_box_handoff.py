"""Cold-handoff records: exact round trips, folding deltas, and continuing from a restored chain."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api_box.core.chain import AgentCounters, HeaderCache, begin_turn, commit_turn
from api_box.core.handoff import (
    ChainSnapshot,
    TurnRecord,
    record_from_snapshot,
    snapshot_from_turns,
    turn_record,
)
from api_box.core.protocol import FunctionCallOutputItem, MessageItem
from api_box.core.store import ResponseRecord
from gpu_worker.wire import chat
from gpu_worker.wire.chain import digest_of

HEADER = HeaderCache().header("sys", ())
tokens = st.lists(st.integers(0, 2**32 - 1), max_size=50).map(tuple)
names = st.text(max_size=20)


@given(
    names, names, tokens, st.dictionaries(names, st.integers(0, 10**6), max_size=4), st.binary(max_size=40)
)
def test_turn_record_round_trips(
    tenant: str, rid: str, toks: tuple[int, ...], calls: dict[str, int], blob: bytes
) -> None:
    record = TurnRecord(
        tenant=tenant, response_id=rid, previous_response_id=None, base_response_id=rid or None, base_len=3,
        cache_key="ck", header_key=b"\x01" * 16, header_len=2, tokens=toks, call_ids=calls,
        agent=AgentCounters(1, 2, True), created_at=1.5, resource=blob, input_items=b"[]",
    )  # fmt: skip
    assert TurnRecord.from_bytes(record.to_bytes()) == record


@given(tokens, st.binary(max_size=40))
def test_snapshot_round_trips(toks: tuple[int, ...], blob: bytes) -> None:
    snap = ChainSnapshot("t", "r", "ck", b"\x02" * 16, 1, toks, {"c": 1}, AgentCounters(), blob, b"[1]")
    assert ChainSnapshot.from_bytes(snap.to_bytes()) == snap


def test_foreign_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="not a Tether"):
        TurnRecord.from_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a Tether"):
        ChainSnapshot.from_bytes(
            TurnRecord("t", "r", None, None, 0, "k", b"", 0, (), {}, AgentCounters(), 0.0).to_bytes()
        )


def complete(
    record_of: ResponseRecord | None, items: tuple, rid: str, output: list[int], calls: tuple[str, ...] = ()
) -> tuple:  # type: ignore[type-arg]
    turn = begin_turn(
        record_of.ref if record_of else None, HEADER, items, new_cache_key="ck", max_tokens=10**6
    )
    chain = [*turn.chain.tokens, *output]
    ref = commit_turn(turn, output, list(calls), worker_len=len(chain), worker_digest=digest_of(chain))
    return ResponseRecord("t", rid, ref, store=True, resource=b'{"id":"%s"}' % rid.encode()), turn


def test_whole_plus_deltas_fold_into_the_chain_and_a_restored_record_continues() -> None:
    r1, t1 = complete(
        None, (MessageItem("user", "hi"),), "r1", chat.render_function_call("f", "{}"), ("call_1",)
    )
    w1 = turn_record(r1, base=None, previous_response_id=None, start=t1.start, created_at=1.0)
    r2, t2 = complete(
        r1, (FunctionCallOutputItem("call_1", "out"),), "r2", chat.render_message("assistant", "ok")
    )
    w2 = turn_record(r2, base=r1, previous_response_id="r1", start=t2.start, created_at=2.0)
    assert w1.whole
    assert not w2.whole
    assert w2.base_len == r1.ref.length
    assert len(w2.tokens) == r2.ref.length - r1.ref.length  # only this turn's tokens are written
    snap = snapshot_from_turns([TurnRecord.from_bytes(w1.to_bytes()), TurnRecord.from_bytes(w2.to_bytes())])
    assert list(snap.tokens) == list(r2.ref.chain.tokens[: r2.ref.length])
    assert snap.call_ids == {"call_1": r1.ref.length}
    assert snap.resource == b'{"id":"r2"}'
    restored = record_from_snapshot(snap)
    assert restored.ref.chain.digest.digest() == r2.ref.chain.digest.digest()
    assert restored.ref.chain.held_len == 0
    _r3, t3 = complete(restored, (FunctionCallOutputItem("call_1", "again"),), "r3", [7])
    assert not t3.fresh  # continues in place on the restored chain


def test_a_delta_over_an_unpersisted_base_is_written_whole() -> None:
    r1, _ = complete(None, (MessageItem("user", "hi"),), "r1", [5])
    r1.store = False
    r2, t2 = complete(r1, (MessageItem("user", "more"),), "r2", [6])
    w2 = turn_record(r2, base=r1, previous_response_id="r1", start=t2.start, created_at=1.0)
    assert w2.whole
    assert list(w2.tokens) == list(r2.ref.chain.tokens)


def test_folding_refuses_a_broken_sequence() -> None:
    r1, t1 = complete(None, (MessageItem("user", "hi"),), "r1", [5])
    w1 = turn_record(r1, base=None, previous_response_id=None, start=t1.start, created_at=1.0)
    r2, t2 = complete(r1, (MessageItem("user", "more"),), "r2", [6])
    w2 = turn_record(r2, base=r1, previous_response_id="r1", start=t2.start, created_at=2.0)
    with pytest.raises(ValueError, match="whole"):
        snapshot_from_turns([w2])
    with pytest.raises(ValueError, match="does not extend"):
        snapshot_from_turns([w1, w2, w2])
