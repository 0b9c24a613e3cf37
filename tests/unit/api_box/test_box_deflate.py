"""permessage-deflate negotiation (RFC 7692 §7.1) and the memory bound: api_box/core/deflate.py."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api_box.core.deflate import (
    DeflatePolicy,
    connection_bytes,
    deflate_bytes,
    negotiate,
    parse_extensions,
)

DEFAULT = DeflatePolicy()


def answer(offer: str | list[str], policy: DeflatePolicy = DEFAULT) -> str | None:
    params = negotiate([offer] if isinstance(offer, str) else offer, policy)
    return None if params is None else params.header()


@pytest.mark.parametrize(
    ("offer", "expected"),
    [
        # What the openai SDK (websockets) offers by default.
        ("permessage-deflate; client_max_window_bits", "permessage-deflate; client_max_window_bits=15"),
        ("permessage-deflate", "permessage-deflate"),
        ("PerMessage-Deflate", "permessage-deflate"),
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10",
        ),
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
        ),
        ("permessage-deflate; client_no_context_takeover", "permessage-deflate"),
        (
            'permessage-deflate; client_max_window_bits="12"',
            "permessage-deflate; client_max_window_bits=12",
        ),
    ],
)
def test_the_answer_to_an_offer(offer: str, expected: str) -> None:
    assert answer(offer) == expected


def test_a_smaller_policy_window_binds_the_box_and_the_client_keeps_its_window() -> None:
    policy = DeflatePolicy(window_bits=12, max_connection_bytes=200_000)
    # The server window is announced even when the client did not ask (RFC 7692 §7.1.2.1).
    assert answer("permessage-deflate", policy) == "permessage-deflate; server_max_window_bits=12"
    assert answer("permessage-deflate; server_max_window_bits=14; client_max_window_bits", policy) == (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=15"
    )
    assert answer("permessage-deflate; server_max_window_bits=10", policy) == (
        "permessage-deflate; server_max_window_bits=10"
    )
    # client_max_window_bits is only answered to a client that offered it.
    params = negotiate(["permessage-deflate"], policy)
    assert params is not None
    assert params.client_window_bits == 15


def test_context_takeover_off_binds_both_sides() -> None:
    policy = DeflatePolicy(context_takeover=False)
    assert answer("permessage-deflate; client_max_window_bits", policy) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "client_max_window_bits=15"
    )


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits=8",  # zlib cannot deflate with 8 bits
        "permessage-deflate; server_max_window_bits",  # needs a value
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; x_unknown",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=1",
        "x-webkit-deflate-frame",
        "",
        ";;,,",
        'permessage-deflate; client_max_window_bits="1 2"',
    ],
)
def test_an_offer_the_box_cannot_honour_is_declined(offer: str) -> None:
    assert answer(offer) is None


def test_the_first_acceptable_offer_wins() -> None:
    offers = "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=11"
    assert answer(offers) == "permessage-deflate; server_max_window_bits=11"
    # Several header lines are one list.
    assert answer(["foo", "permessage-deflate; client_max_window_bits=9"]) == (
        "permessage-deflate; client_max_window_bits=9"
    )


def test_parse_extensions_keeps_parameters_and_skips_malformed_elements() -> None:
    parsed = parse_extensions(['a; x=1; y, b; z="q,r"', "c d", 'e; k="unterminated', 'f; w="9"'])
    # b's quoted value is not a token, "c d" is not a name, e's quote never ends: each is dropped whole.
    assert parsed == [("a", [("x", "1"), ("y", None)]), ("f", [("w", "9")])]


def test_the_memory_bound_picks_the_mem_level() -> None:
    assert DeflatePolicy(window_bits=15, max_connection_bytes=320 * 1024).mem_level == 8
    small = DeflatePolicy(window_bits=12, max_connection_bytes=80 * 1024)
    assert connection_bytes(12, small.mem_level) <= 80 * 1024 < connection_bytes(12, small.mem_level + 1)
    with pytest.raises(ValueError, match="at least"):
        DeflatePolicy(window_bits=15, max_connection_bytes=100 * 1024)
    with pytest.raises(ValueError, match="window bits"):
        DeflatePolicy(window_bits=8)


def test_zlib_documented_sizes() -> None:
    # zlib.h: deflate needs (1 << (windowBits+2)) + (1 << (memLevel+9)) bytes, plus a small state.
    assert deflate_bytes(15, 8) - deflate_bytes(15, 7) == 1 << 16
    assert deflate_bytes(15, 8) - deflate_bytes(14, 8) == 1 << 16


@given(st.text(max_size=200))
def test_any_header_negotiates_or_declines(header: str) -> None:
    params = negotiate([header], DEFAULT)
    if params is not None:
        assert params.header().startswith("permessage-deflate")
        assert 9 <= params.server_window_bits <= 15
        zlib.compressobj(1, zlib.DEFLATED, -params.server_window_bits, params.mem_level)
