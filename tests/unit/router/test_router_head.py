"""Request-head parsing, routing-key extraction, mode detection and the one-request-per-connection rewrite."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.core.errors import BadHead, ConfigError
from router.core.head import (
    DEFAULT_ROUTING_KEYS,
    KeySpec,
    Mode,
    close_after_one,
    find_head_end,
    key_digest,
    mode_of,
    parse_head,
    parse_routing_keys,
    routing_key,
)

DEFAULT = parse_routing_keys(DEFAULT_ROUTING_KEYS)

WS_HEAD = (
    b"GET /v1/responses HTTP/1.1\r\n"
    b"Host: api.example\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"X-Session-Id: sess-42\r\n"
    b"\r\n"
)
POST_HEAD = (
    b"POST /v1/responses?session_id=q-7 HTTP/1.1\r\n"
    b"Host: api.example\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 2\r\n"
    b"Connection: keep-alive\r\n"
    b"Keep-Alive: timeout=5\r\n"
    b"\r\n"
)


def test_parses_a_websocket_upgrade() -> None:
    head = parse_head(WS_HEAD)
    assert (head.method, head.target, head.version) == ("GET", "/v1/responses", "HTTP/1.1")
    assert head.get("x-session-id") == "sess-42"
    assert head.get("missing") is None
    assert mode_of(head) is Mode.WS
    key = routing_key(head, DEFAULT)
    assert (key.key, key.source) == ("sess-42", "header")


def test_post_routes_on_the_query_parameter_and_is_http() -> None:
    head = parse_head(POST_HEAD)
    assert mode_of(head) is Mode.HTTP
    key = routing_key(head, DEFAULT)
    assert (key.key, key.source) == ("q-7", "query")


@pytest.mark.parametrize(
    ("target", "header", "expected"),
    [
        ("/v1/responses", "", (None, "none")),
        ("/v1/responses?session_id=", "", (None, "none")),
        ("/v1/responses?a=1&session_id=a%20b%2Fc", "", ("a b/c", "query")),
        ("/v1/responses?session_id=q#frag", "", ("q", "query")),
        ("/v1/responses?session_id=q", "h", ("h", "header")),
        ("/v1/responses?other=q", "", (None, "none")),
    ],
)
def test_routing_key_sources(target: str, header: str, expected: tuple[str | None, str]) -> None:
    extra = f"X-Session-Id: {header}\r\n" if header else "X-Session-Id:\r\n"
    head = parse_head(f"GET {target} HTTP/1.1\r\nHost: h\r\n{extra}\r\n".encode())
    key = routing_key(head, DEFAULT)
    assert (key.key, key.source) == expected


def test_custom_header_name() -> None:
    head = parse_head(b"GET / HTTP/1.1\r\nHost: h\r\nX-Tenant-Session: t1\r\nX-Session-Id: no\r\n\r\n")
    assert routing_key(head, parse_routing_keys("header:X-Tenant-Session")).key == "t1"


AGENT_HEADERS = [
    ("session-id", "codex"),
    ("session_id", "codex-underscore"),
    ("x-session-affinity", "opencode"),
    ("x-claude-code-session-id", "claude-code"),
    ("X-Session-Id", "tether"),
]


@pytest.mark.parametrize(("header", "value"), AGENT_HEADERS)
def test_each_agent_header_routes_by_default(header: str, value: str) -> None:
    """Header names are tokens: `session_id`, with its underscore, parses like any other."""
    head = parse_head(f"GET /v1/responses HTTP/1.1\r\nHost: h\r\n{header}: {value}\r\n\r\n".encode())
    assert head.headers[1] == (header, value)
    key = routing_key(head, DEFAULT)
    assert (key.key, key.source) == (value, "header")


def test_the_first_source_in_the_list_wins_whatever_the_header_order() -> None:
    lines = "".join(f"{name}: {value}\r\n" for name, value in reversed(AGENT_HEADERS))
    for skip in range(len(AGENT_HEADERS)):
        present = "".join(f"{name}: {value}\r\n" for name, value in reversed(AGENT_HEADERS[skip:]))
        head = parse_head(f"GET /v1/responses?session_id=q HTTP/1.1\r\nHost: h\r\n{present}\r\n".encode())
        assert routing_key(head, DEFAULT).key == AGENT_HEADERS[skip][1]
    head = parse_head(f"GET /?session_id=q HTTP/1.1\r\nHost: h\r\n{lines}\r\n".encode())
    query_first = parse_routing_keys("query:session_id,header:session-id")
    assert (routing_key(head, query_first).key, routing_key(head, query_first).source) == ("q", "query")


def test_empty_values_fall_through_to_the_next_source() -> None:
    head = parse_head(b"GET /?session_id=q HTTP/1.1\r\nHost: h\r\nsession-id:\r\nX-Session-Id: x\r\n\r\n")
    assert routing_key(head, DEFAULT).key == "x"


def test_routing_key_sources_parse_in_order() -> None:
    specs = parse_routing_keys(" header:A-B , query:sid,header:c_d ")
    assert specs == (KeySpec("header", "A-B"), KeySpec("query", "sid"), KeySpec("header", "c_d"))
    assert [str(spec) for spec in specs] == ["header:A-B", "query:sid", "header:c_d"]
    assert [str(spec) for spec in DEFAULT] == DEFAULT_ROUTING_KEYS.split(",")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "X-Session-Id",  # no source
        "cookie:sid",
        "header:",
        "header:bad name",
        "header:a,header:A",  # header names are case-insensitive: listed twice
        "query:a=b",
        "query:",
        ",".join(f"header:h{i}" for i in range(17)),
    ],
)
def test_bad_routing_key_sources_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_routing_keys(text)


def test_too_many_query_fields_is_a_bad_head() -> None:
    target = "/?" + "&".join(f"f{i}=1" for i in range(100))
    head = parse_head(f"GET {target} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    with pytest.raises(BadHead):
        routing_key(head, DEFAULT)
    assert routing_key(head, parse_routing_keys("header:X-Session-Id")).source == "none"  # never parsed


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: h\r\n",  # no blank line
        b"\r\n\r\n",  # empty request line
        b"GET /  HTTP/1.1\r\nHost: h\r\n\r\n",  # two spaces
        b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # an h2 preface
        b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",  # not a token
        b"GET /a\x01b HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost h\r\n\r\n",  # no colon
        b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",  # space before the colon
        b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",  # obs-fold
        b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",  # bare LF
        b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n",  # bare CR
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",  # NUL in a value
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 200 + b"\r\n",  # too many fields
    ],
)
def test_malformed_heads_are_rejected(raw: bytes) -> None:
    with pytest.raises(BadHead) as info:
        parse_head(raw)
    assert info.value.http_status == 400
    assert info.value.reason == "malformed"


def test_accepts_http_1_0_without_host_and_repeated_equal_lengths() -> None:
    assert parse_head(b"GET / HTTP/1.0\r\n\r\n").version == "HTTP/1.0"
    head = parse_head(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\n")
    assert head.get("content-length") == "3, 3"


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_bad_head(raw: bytes) -> None:
    try:
        head = parse_head(raw + b"\r\n\r\n")
    except BadHead:
        return
    routing_key(head, DEFAULT)
    mode_of(head)


def test_find_head_end_is_incremental() -> None:
    buffer = bytearray()
    searched = 0
    for byte in WS_HEAD:
        buffer.append(byte)
        end = find_head_end(buffer, searched)
        if end >= 0:
            break
        searched = len(buffer)
    assert end == len(WS_HEAD)
    assert find_head_end(WS_HEAD + b"body") == len(WS_HEAD)
    assert find_head_end(b"GET / HTTP/1.1\r\n") == -1


@pytest.mark.parametrize(
    ("headers", "mode"),
    [
        ("Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n", Mode.WS),
        ("Upgrade: WebSocket\r\nConnection: upgrade\r\n", Mode.WS),
        ("Upgrade: h2c\r\nConnection: Upgrade\r\n", Mode.HTTP),
        ("Upgrade: websocket\r\n", Mode.HTTP),
        ("", Mode.HTTP),
    ],
)
def test_mode_detection(headers: str, mode: Mode) -> None:
    assert mode_of(parse_head(f"GET / HTTP/1.1\r\nHost: h\r\n{headers}\r\n".encode())) is mode


def test_close_after_one_replaces_connection_headers_only() -> None:
    rewritten = close_after_one(POST_HEAD)
    assert rewritten == (
        b"POST /v1/responses?session_id=q-7 HTTP/1.1\r\n"
        b"Host: api.example\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: 2\r\n"
        b"Connection: close\r\n"
        b"\r\n"
    )
    parse_head(rewritten)


def test_key_digest_is_short_stable_and_not_the_key() -> None:
    assert key_digest("secret-session") == key_digest("secret-session")
    assert len(key_digest("secret-session")) == 8
    assert "secret" not in key_digest("secret-session")
