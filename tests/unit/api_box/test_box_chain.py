"""Chains: only new tokens on a continuation, whole chains on a fork or header change, rollback, digests."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api_box.core.chain import (
    AgentCounters,
    ChainRef,
    HeaderCache,
    PendingTurn,
    abort_turn,
    begin_turn,
    chain_start_reason,
    commit_turn,
    render_items,
)
from api_box.core.errors import ContextLengthExceeded, UnknownCallId
from api_box.core.protocol import (
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputItem,
    MessageItem,
)
from gpu_worker.wire import chat
from gpu_worker.wire.chain import ChainDigest, digest_of
from gpu_worker.wire.tokenizer import O200kTokenizer, Special

TOOLS = (FunctionTool("read", "Read a file", {"type": "object"}),)
HEADERS = HeaderCache()
HEADER = HEADERS.header("You are an agent.", TOOLS)


def user(text: str) -> MessageItem:
    return MessageItem("user", text)


def worker_done(turn: PendingTurn, output: list[int], calls: tuple[str, ...] = ()) -> ChainRef:
    """Commit as a well-behaved worker would: it holds prompt + output."""
    chain = [*turn.chain.tokens, *output]
    return commit_turn(turn, output, list(calls), worker_len=len(chain), worker_digest=digest_of(chain))


def first_turn(items: tuple[InputItem, ...] = (user("hi"),)) -> ChainRef:
    turn = begin_turn(None, HEADER, items, new_cache_key="ck_1", max_tokens=10_000)
    return worker_done(turn, chat.render_function_call("read", '{"p":1}'), ("call_1",))


def test_first_turn_renders_header_and_items_whole() -> None:
    turn = begin_turn(None, HEADER, (user("hi"),), new_cache_key="ck_1", max_tokens=10_000)
    assert turn.fresh
    assert turn.held_len == 0
    assert turn.start == len(HEADER.tokens)
    assert list(turn.chain.tokens) == [*HEADER.tokens, *chat.render_message("user", "hi")]
    assert turn.agent == AgentCounters(0, 1, False)


def test_continuation_appends_only_the_new_items_and_states_what_the_worker_holds() -> None:
    ref = first_turn()
    held = ref.chain.length
    turn = begin_turn(ref, HEADER, (FunctionCallOutputItem("call_1", "file body"),), new_cache_key="ck_2",
                      max_tokens=10_000)  # fmt: skip
    assert not turn.fresh
    assert turn.chain is ref.chain
    assert turn.chain.cache_key == "ck_1"
    assert turn.held_len == held
    assert turn.held_digest == digest_of(list(ref.chain.tokens[:held]))
    assert list(turn.chain.tokens[held:]) == chat.render_function_call_output("file body")
    assert turn.agent == AgentCounters(1, 1, True)


def test_a_stateless_rerender_of_the_history_equals_the_chain() -> None:
    """What makes HTTP full-context requests hit the worker's prefix cache: same items, same tokens."""
    ref = first_turn()
    turn = begin_turn(
        ref, HEADER, (FunctionCallOutputItem("call_1", "body"),), new_cache_key="x", max_tokens=10_000
    )
    history = (
        user("hi"),
        FunctionCallItem("call_1", "read", '{"p":1}'),
        FunctionCallOutputItem("call_1", "body"),
    )
    assert list(turn.chain.tokens) == [*HEADER.tokens, *render_items(history)]


def test_a_changed_header_starts_a_new_chain_without_the_old_instructions() -> None:
    ref = first_turn()
    other = HEADERS.header(None, TOOLS)  # instructions are not carried over
    turn = begin_turn(ref, other, (user("next"),), new_cache_key="ck_new", max_tokens=10_000)
    assert turn.fresh
    assert turn.held_len == 0
    assert turn.chain.cache_key == "ck_new"
    assert turn.chain.tokens[0] == Special.TOOLS
    body = list(ref.chain.tokens[ref.chain.header_len :])
    assert list(turn.chain.tokens) == [*other.tokens, *body, *chat.render_message("user", "next")]
    assert "call_1" in turn.chain.call_ids  # the call still answers outputs on the new chain


def test_continuing_from_an_older_response_forks() -> None:
    ref1 = first_turn()
    turn2 = begin_turn(
        ref1, HEADER, (FunctionCallOutputItem("call_1", "a"),), new_cache_key="ck_2", max_tokens=10_000
    )
    worker_done(turn2, chat.render_message("assistant", "done"))
    fork = begin_turn(
        ref1, HEADER, (FunctionCallOutputItem("call_1", "b"),), new_cache_key="ck_3", max_tokens=10_000
    )
    assert fork.fresh
    assert fork.chain is not ref1.chain
    assert fork.chain.cache_key == "ck_3"
    assert list(fork.chain.tokens[: ref1.length]) == list(ref1.chain.tokens[: ref1.length])


def test_a_busy_chain_is_forked_not_shared() -> None:
    ref = first_turn()
    begin_turn(ref, HEADER, (user("a"),), new_cache_key="ck_2", max_tokens=10_000)
    second = begin_turn(ref, HEADER, (user("b"),), new_cache_key="ck_3", max_tokens=10_000)
    assert second.fresh
    assert second.chain is not ref.chain


def test_abort_rolls_the_chain_back() -> None:
    ref = first_turn()
    before = list(ref.chain.tokens)
    turn = begin_turn(ref, HEADER, (user("lost"),), new_cache_key="x", max_tokens=10_000)
    abort_turn(turn)
    assert list(ref.chain.tokens) == before
    assert not ref.chain.busy
    again = begin_turn(ref, HEADER, (user("kept"),), new_cache_key="y", max_tokens=10_000)
    assert not again.fresh


def test_unknown_call_id_is_refused_without_changing_anything() -> None:
    ref = first_turn()
    before = list(ref.chain.tokens)
    with pytest.raises(UnknownCallId):
        begin_turn(
            ref, HEADER, (FunctionCallOutputItem("call_missing", "x"),), new_cache_key="x", max_tokens=10_000
        )
    assert list(ref.chain.tokens) == before
    assert not ref.chain.busy


def test_calls_in_the_same_input_answer_outputs() -> None:
    items = (user("hi"), FunctionCallItem("c1", "read", "{}"), FunctionCallOutputItem("c1", "ok"))
    turn = begin_turn(None, HEADER, items, new_cache_key="ck", max_tokens=10_000)
    assert "c1" in turn.new_call_ids
    with pytest.raises(UnknownCallId):
        begin_turn(None, HEADER, (FunctionCallOutputItem("c1", "ok"), FunctionCallItem("c1", "read", "{}")),
                   new_cache_key="ck", max_tokens=10_000)  # fmt: skip


def test_a_forked_chain_forgets_calls_made_after_the_fork_point() -> None:
    ref1 = first_turn()
    turn2 = begin_turn(
        ref1, HEADER, (FunctionCallOutputItem("call_1", "a"),), new_cache_key="2", max_tokens=10_000
    )
    worker_done(turn2, chat.render_function_call("read", "{}"), ("call_2",))
    with pytest.raises(UnknownCallId):
        begin_turn(
            ref1, HEADER, (FunctionCallOutputItem("call_2", "x"),), new_cache_key="3", max_tokens=10_000
        )


def test_context_length_is_bounded() -> None:
    with pytest.raises(ContextLengthExceeded):
        begin_turn(None, HEADER, (user("word " * 200),), new_cache_key="ck", max_tokens=50)


def test_a_digest_mismatch_makes_the_next_turn_a_full_resend() -> None:
    turn = begin_turn(None, HEADER, (user("hi"),), new_cache_key="ck", max_tokens=10_000)
    ref = commit_turn(turn, [1, 2], [], worker_len=999, worker_digest=b"wrong")
    assert ref.chain.held_len == 0
    turn2 = begin_turn(ref, HEADER, (user("again"),), new_cache_key="x", max_tokens=10_000)
    assert turn2.held_len == 0
    assert not turn2.fresh


def test_a_keyless_request_leaves_nothing_held() -> None:
    turn = begin_turn(None, HEADER, (user("hi"),), new_cache_key="ck", max_tokens=10_000)
    chain = [*turn.chain.tokens, 5]
    ref = commit_turn(
        turn, [5], [], worker_len=len(chain), worker_digest=digest_of(chain), worker_holds=False
    )
    assert ref.chain.held_len == 0


def test_commit_keeps_digest_call_ids_and_agent_counters() -> None:
    ref = first_turn()
    assert ref.chain.digest.digest() == digest_of(list(ref.chain.tokens))
    assert ref.chain.call_ids == {"call_1": ref.length}
    assert ref.agent == AgentCounters(1, 1, False)
    assert ref.chain.held_len == ref.length


def test_long_texts_are_encoded_in_pieces_deterministically() -> None:
    text = "lorem ipsum " * 20_000  # 240k characters: beyond one tokenizer call's 200k-token limit if unsplit
    ids = O200kTokenizer().encode(text)
    assert ids == O200kTokenizer().encode(text)
    assert len(ids) > 10_000
    item = MessageItem("user", text)
    tokens = render_items([item])
    assert tokens[0] == Special.USER
    assert tokens[-1] == Special.END
    assert tokens[1:-1] == ids
    call = render_items([FunctionCallItem("c", "f", text)])
    assert call[0] == Special.CALL
    assert Special.ARGS in call
    out = render_items([FunctionCallOutputItem("c", text)])
    assert out[0] == Special.TOOL_OUTPUT


def test_header_rendering_and_cache() -> None:
    assert HEADERS.header(None, ()).tokens == ()
    assert HEADERS.header("You are an agent.", TOOLS) is HEADER
    assert HEADERS.header("Other", TOOLS).key != HEADER.key
    small = HeaderCache(max_entries=1)
    first = small.header("a", ())
    small.header("b", ())
    assert small.header("a", ()) is not first  # evicted, rendered again


@given(st.lists(st.integers(0, 2**32 - 1), max_size=300), st.lists(st.integers(0, 300), max_size=6))
def test_the_box_digest_equals_the_full_digest_on_any_split(tokens: list[int], cuts: list[int]) -> None:
    digest = ChainDigest(keep_blocks=False)
    start = 0
    for cut in sorted(c for c in cuts if c <= len(tokens)):
        digest.extend(array("I", tokens[start:cut]))
        start = cut
    digest.extend(tokens[start:])
    assert digest.digest() == digest_of(tokens)
    assert len(digest) == len(tokens)
    assert ChainDigest(tokens, keep_blocks=False).digest() == digest_of(tokens)
    assert not digest.block_hashes


def test_why_a_turn_starts_a_new_chain() -> None:
    ref = first_turn()
    assert chain_start_reason(None, HEADER) == "new"
    assert chain_start_reason(ref, HEADER) == ""
    assert chain_start_reason(ref, HEADERS.header("Other instructions", TOOLS)) == "header"
    turn = begin_turn(
        ref, HEADER, (FunctionCallOutputItem("call_1", "ok"),), new_cache_key="x", max_tokens=10**6
    )
    assert turn.start_reason == ""
    assert chain_start_reason(ref, HEADER) == "busy"  # the chain is busy with that turn
    later = worker_done(turn, chat.render_message("assistant", "done"))
    assert chain_start_reason(ref, HEADER) == "fork"  # ref is no longer the tip
    fork = begin_turn(ref, HEADER, (user("again"),), new_cache_key="ck_fork", max_tokens=10**6)
    assert fork.fresh
    assert fork.start_reason == "fork"
    assert later.chain is not fork.chain
