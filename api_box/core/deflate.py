"""permessage-deflate (RFC 7692) for WebSocket mode: the box's policy and the negotiation. Pure.

A client offers the extension in `Sec-WebSocket-Extensions` (the openai SDK, through the `websockets`
library: `permessage-deflate; client_max_window_bits`; the Codex CLI offers it too). `negotiate` reads
every offer in order and accepts the first one the box can honour, answering with the parameters that
bind both sides (RFC 7692 §7.1):

    parameter                  in the offer            the box's answer
    server_no_context_takeover present                 present (the box must honour it)
                               absent                  present when the policy turns takeover off
    client_no_context_takeover any                     present when the policy turns takeover off
    server_max_window_bits=M   9..15                   min(M, window_bits); M = 8 declines the offer
                               absent                  window_bits, when below 15
    client_max_window_bits[=M] present                 M, or 15 without a value
                               absent                  absent: the client may use 15 bits

The policy's window bounds only the box's own compressor (its memory, the downlink). The client keeps
the largest window it offers: the box inflates with a 15-bit window whatever is granted (aiohttp), so a
smaller client window would save the box nothing and cost the uplink, which is what WebSocket mode is for.
An agent resends its tool definitions with every message (the Codex CLI about 20 KB): a 32 KiB window
reaches back to the previous message's copy, a 4 KiB one does not.

An offer with an unknown, repeated or malformed parameter is declined and the next one is tried; when
none is acceptable the connection runs without compression (never a failed handshake).

Memory. With context takeover each connection keeps one zlib deflate stream (box → client) and one
inflate stream (client → box) for its whole life. zlib's documented sizes: deflate
`(1 << (window_bits + 2)) + (1 << (mem_level + 9))` plus about 6 KiB of state; inflate
`1 << window_bits` plus about 7 KiB, and aiohttp's inflater always takes a 15-bit window (32 KiB).
`DeflatePolicy.mem_level` is the largest zlib memLevel (at most zlib's default, 8) whose total fits the
configured per-connection bound; a bound that not even memLevel 1 fits is a settings error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

EXTENSION = "permessage-deflate"
MIN_WINDOW_BITS = 9  # zlib cannot deflate with an 8-bit window (RFC 7692 §7.1.2.1 allows 8)
MAX_WINDOW_BITS = 15
MAX_MEM_LEVEL = 8  # zlib's default; 9 costs twice the hash memory for little gain
DEFLATE_STATE_BYTES = 6 * 1024  # zlib's deflate_state and small allocations, about
INFLATE_BYTES = (1 << MAX_WINDOW_BITS) + 7 * 1024  # aiohttp inflates with a 15-bit window

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PARAMS = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)


def deflate_bytes(window_bits: int, mem_level: int) -> int:
    """zlib's memory for one deflate stream (the box's side of a connection)."""
    return (1 << (window_bits + 2)) + (1 << (mem_level + 9)) + DEFLATE_STATE_BYTES


def connection_bytes(window_bits: int, mem_level: int) -> int:
    """zlib memory one compressed connection holds: its deflate and its inflate stream."""
    return deflate_bytes(window_bits, mem_level) + INFLATE_BYTES


@dataclass(frozen=True, slots=True)
class DeflatePolicy:
    """What the box accepts: its largest window, context takeover, and the memory bound per connection."""

    window_bits: int = MAX_WINDOW_BITS
    context_takeover: bool = True
    max_connection_bytes: int = 320 * 1024

    def __post_init__(self) -> None:
        if not MIN_WINDOW_BITS <= self.window_bits <= MAX_WINDOW_BITS:
            raise ValueError(f"window bits must be {MIN_WINDOW_BITS}..{MAX_WINDOW_BITS}")
        need = connection_bytes(self.window_bits, 1)
        if self.max_connection_bytes < need:
            raise ValueError(
                f"a {self.window_bits}-bit window needs at least {need} bytes per connection "
                f"(got {self.max_connection_bytes})"
            )

    @property
    def mem_level(self) -> int:
        """The largest zlib memLevel (1..8) whose connection memory fits `max_connection_bytes`."""
        level = MAX_MEM_LEVEL
        while level > 1 and connection_bytes(self.window_bits, level) > self.max_connection_bytes:
            level -= 1
        return level


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """The negotiated extension: what each side may use, and the box's compressor settings."""

    server_window_bits: int
    client_window_bits: int
    server_no_context_takeover: bool
    client_no_context_takeover: bool
    mem_level: int
    answer_server_bits: bool  # include server_max_window_bits in the answer
    answer_client_bits: bool  # include client_max_window_bits in the answer

    def header(self) -> str:
        """The Sec-WebSocket-Extensions value of the handshake response."""
        parts = [EXTENSION]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.answer_server_bits:
            parts.append(f"server_max_window_bits={self.server_window_bits}")
        if self.answer_client_bits:
            parts.append(f"client_max_window_bits={self.client_window_bits}")
        return "; ".join(parts)

    @property
    def memory_bytes(self) -> int:
        """zlib memory this connection holds (see the module docstring)."""
        return connection_bytes(self.server_window_bits, self.mem_level)


def parse_extensions(values: Iterable[str]) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """The extensions of one or more Sec-WebSocket-Extensions header values (RFC 6455 §9.1), in order:
    (name, [(parameter, value or None)]). A malformed element is skipped (it is nobody's offer)."""
    offers: list[tuple[str, list[tuple[str, str | None]]]] = []
    for value in values:
        for element in _split(value, ","):
            name, *raw_params = (part.strip() for part in _split(element, ";"))
            if not _TOKEN.fullmatch(name):
                continue
            params: list[tuple[str, str | None]] = []
            for raw in raw_params:
                key, sep, val = (s.strip() for s in raw.partition("="))
                parsed = _unquote(val) if sep else None
                if not _TOKEN.fullmatch(key) or (sep and parsed is None):
                    break
                params.append((key.lower(), parsed))
            else:
                offers.append((name.lower(), params))
    return offers


def negotiate(values: Iterable[str], policy: DeflatePolicy) -> DeflateParams | None:
    """The accepted permessage-deflate offer's parameters, or None (no acceptable offer: no compression)."""
    for name, params in parse_extensions(values):
        if name == EXTENSION:
            accepted = _accept(params, policy)
            if accepted is not None:
                return accepted
    return None


def _accept(params: list[tuple[str, str | None]], policy: DeflatePolicy) -> DeflateParams | None:
    offer: dict[str, str | None] = {}
    for key, value in params:
        if key not in _PARAMS or key in offer:
            return None  # unknown or repeated parameter: decline this offer (RFC 7692 §5.1)
        offer[key] = value
    if any(offer.get(k) is not None for k in ("server_no_context_takeover", "client_no_context_takeover")):
        return None  # these take no value
    server_bits = policy.window_bits
    answer_server = server_bits < MAX_WINDOW_BITS
    if "server_max_window_bits" in offer:
        asked = _bits(offer["server_max_window_bits"])
        if asked is None or asked < MIN_WINDOW_BITS:
            return None  # missing, malformed, or 8 (which zlib cannot produce)
        server_bits, answer_server = min(asked, server_bits), True
    client_bits, answer_client = MAX_WINDOW_BITS, False
    if "client_max_window_bits" in offer:
        raw = offer["client_max_window_bits"]
        asked = MAX_WINDOW_BITS if raw is None else _bits(raw)
        if asked is None:
            return None
        client_bits, answer_client = asked, True
    takeover_off = not policy.context_takeover
    return DeflateParams(
        server_window_bits=server_bits,
        client_window_bits=client_bits,
        server_no_context_takeover=takeover_off or "server_no_context_takeover" in offer,
        client_no_context_takeover=takeover_off,
        mem_level=policy.mem_level,
        answer_server_bits=answer_server,
        answer_client_bits=answer_client,
    )


def _bits(value: str | None) -> int | None:
    """A window size of 8..15 written as 1*DIGIT, or None."""
    if value is None or not value.isdigit() or len(value) > 2:
        return None
    bits = int(value)
    return bits if 8 <= bits <= MAX_WINDOW_BITS else None


def _split(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()] or [""]


def _unquote(value: str) -> str | None:
    """A token, or a quoted-string's content (RFC 7692 §7.1: the value after unescaping must be a token)."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    return value if _TOKEN.fullmatch(value) else None
