"""The wire contract: chain digests and the chat format."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gpu_worker.wire import chat, tokenizer
from gpu_worker.wire.chain import BLOCK_TOKENS, ChainDigest, block_hashes_of, digest_of
from gpu_worker.wire.tokenizer import Special

token_lists = st.lists(st.integers(min_value=0, max_value=200_018), max_size=400)


@given(token_lists, st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_digest_does_not_depend_on_how_the_chain_was_split(tokens: list[int], cuts: list[int]) -> None:
    incremental = ChainDigest()
    start = 0
    for cut in sorted(c for c in cuts if c <= len(tokens)):
        incremental.extend(tokens[start:cut])
        start = cut
    incremental.extend(tokens[start:])
    assert incremental.digest() == digest_of(tokens)
    assert len(incremental) == len(tokens)


@given(token_lists, token_lists)
def test_chains_share_block_hashes_exactly_as_far_as_they_share_blocks(a: list[int], b: list[int]) -> None:
    ha, hb = block_hashes_of(a), block_hashes_of(b)
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    shared_blocks = common // BLOCK_TOKENS
    for k in range(min(len(ha), len(hb))):
        assert (ha[k] == hb[k]) == (k < shared_blocks)


def test_digest_distinguishes_length_and_content() -> None:
    assert digest_of([]) != digest_of([0])
    assert digest_of([1, 2]) != digest_of([2, 1])
    fork = ChainDigest([1, 2, 3])
    copy = fork.copy()
    copy.extend([4])
    assert fork.digest() == digest_of([1, 2, 3])
    assert copy.digest() == digest_of([1, 2, 3, 4])


def test_tokenizer_round_trips_and_never_emits_specials_from_user_text() -> None:
    text = 'Héllo wörld 🚀 {"path": "src/main.py"} <|endoftext|> <|user|>'
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert all(i < tokenizer.SPECIAL_BASE for i in ids)
    assert tokenizer.encode("") == []


def test_chat_rendering_is_prefix_stable_and_marked() -> None:
    header = chat.render_instructions("Be brief.") + chat.render_tools(
        [{"name": "grep", "description": "search", "parameters": {"type": "object"}}]
    )
    turn1 = header + chat.render_message("user", "find fizz")
    turn2 = turn1 + chat.render_function_call("grep", '{"q":"fizz"}') + chat.render_function_call_output("x")
    assert turn2[: len(turn1)] == turn1
    assert turn1[0] == Special.SYSTEM
    assert chat.render_function_call("f", "{}")[0] == Special.CALL
    assert tokenizer.decode(chat.render_message("user", "hi")) == "<|user|>hi<|end|>"
    assert chat.render_instructions(None) == []
    assert chat.render_tools([]) == []
