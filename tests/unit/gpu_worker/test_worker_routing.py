"""The client's rendezvous routing and wire conversion (pure parts of gpu_worker.client)."""

from __future__ import annotations

from gpu_worker.client import AgentState, GenerationRequest, ToolSpec
from gpu_worker.client._convert import request_to_pb
from gpu_worker.client.rendezvous import rank, routing_key_of_chain
from gpu_worker.engines import base


def test_rank_is_deterministic_and_moves_few_keys_when_a_worker_leaves() -> None:
    targets = [f"10.0.0.{i}:50051" for i in range(8)]
    keys = [f"chain-{i}" for i in range(4000)]
    owners = {k: rank(k, targets)[0] for k in keys}
    assert owners == {k: rank(k, list(reversed(targets)))[0] for k in keys}
    counts = {t: list(owners.values()).count(t) for t in targets}
    assert max(counts.values()) / (len(keys) / len(targets)) < 1.2
    gone = targets[3]
    survivors = [t for t in targets if t != gone]
    moved = [k for k in keys if rank(k, survivors)[0] != owners[k]]
    assert all(owners[k] == gone for k in moved)  # only the departed worker's keys move...
    assert {rank(k, targets)[1] for k in moved} == {rank(k, survivors)[0] for k in moved}  # ...to their #2


def test_keyless_routing_key_is_stable_once_the_first_block_is_complete() -> None:
    turn1 = list(range(100))
    turn2 = [*turn1, *range(500, 800)]
    assert routing_key_of_chain(turn1) == routing_key_of_chain(turn2)
    assert routing_key_of_chain([1, 2]) != routing_key_of_chain([1, 3])


def test_requests_carry_the_delta_or_the_whole_chain() -> None:
    req = GenerationRequest(
        request_id="r",
        cache_key="k",
        chain=list(range(10)),
        held_len=6,
        held_digest=b"d" * 16,
        tools=(ToolSpec("grep", "search", "{}"),),
        agent=AgentState(2, 1, True),
        metadata={"tether.tool_calls": "1"},
    )
    delta = request_to_pb(req, full=False)
    assert (delta.base_len, bytes(delta.base_digest), list(delta.tokens)) == (6, b"d" * 16, [6, 7, 8, 9])
    full = request_to_pb(req, full=True)
    assert (full.base_len, full.base_digest, list(full.tokens)) == (0, b"", list(range(10)))
    assert full.tools[0].name == "grep"
    assert full.agent.tool_calls_since_user_message == 2
    assert dict(full.metadata) == {"tether.tool_calls": "1"}


def test_client_types_mirror_the_engine_types_field_for_field() -> None:
    import dataclasses

    from gpu_worker.client import types

    for light, engine in ((types.ToolSpec, base.ToolSpec), (types.AgentState, base.AgentState)):
        assert [(f.name, f.default) for f in dataclasses.fields(light)] == [
            (f.name, f.default) for f in dataclasses.fields(engine)
        ]
