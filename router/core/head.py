"""HTTP/1.1 request-head parsing for the router: just enough HTTP to route, nothing of the body or frames.

The shell buffers bytes until `find_head_end` reports the blank line (or the size limit is hit) and hands the
head to `parse_head`, which validates it strictly (RFC 9112: request line, token header names, no obs-fold,
no bare CR/LF, one Host on HTTP/1.1, no Content-Length together with Transfer-Encoding) and raises BadHead.
`routing_key` then picks the key (configured header, then a query parameter) and `mode_of` tells a WebSocket
upgrade from plain HTTP.

Plain-HTTP keep-alive: the router routes every request on its own head by forwarding exactly one request per
client connection — `close_after_one` rewrites the head to `Connection: close`, so the box answers and
closes, and the client opens a new connection (so a new routing decision) for its next request. This keeps
the data path a raw splice (no body or response framing to parse) while a client that reuses a pooled
connection for another session still reaches that session's box.

Routing keys are never logged in clear: use `key_digest`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from hashlib import blake2b
from typing import Literal
from urllib.parse import parse_qsl

from router.core.errors import BadHead

__all__ = [
    "HEAD_END",
    "KeySource",
    "Mode",
    "RequestHead",
    "RoutingKey",
    "close_after_one",
    "find_head_end",
    "key_digest",
    "mode_of",
    "parse_head",
    "routing_key",
]

HEAD_END = b"\r\n\r\n"
MAX_HEADERS = 128
MAX_QUERY_FIELDS = 64
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_VERSIONS = frozenset({"HTTP/1.1", "HTTP/1.0"})
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection"})

KeySource = Literal["header", "query", "none"]


class Mode(StrEnum):
    """How the connection is relayed (the `mode` label of the router's metrics)."""

    WS = "ws"
    HTTP = "http"


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A parsed request head. Header names keep their case; values are stripped of surrounding spaces."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive), in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


@dataclass(frozen=True, slots=True)
class RoutingKey:
    """The routing key of a request and where it came from (`none`: route to the least-loaded box)."""

    key: str | None
    source: KeySource


def find_head_end(buffer: bytes | bytearray, searched: int = 0) -> int:
    """Length of the head (through the blank line) in `buffer`, or -1 when it has not ended yet.

    `searched` is how many bytes were already searched without a match, so repeated calls on a growing
    buffer stay linear.
    """
    index = buffer.find(HEAD_END, max(0, searched - len(HEAD_END) + 1))
    return -1 if index < 0 else index + len(HEAD_END)


def parse_head(raw: bytes) -> RequestHead:
    """Parse a complete request head (`raw` ends with the blank line). Raises BadHead when it is invalid."""
    if not raw.endswith(HEAD_END):
        raise BadHead("the request head does not end with an empty line")
    text = raw[: -len(HEAD_END)].decode("latin-1")
    unframed = text.replace("\r\n", "")
    if "\n" in unframed or "\r" in unframed:
        raise BadHead("bare CR or LF in the request head")
    request_line, *header_lines = text.split("\r\n")
    method, target, version = _request_line(request_line)
    if len(header_lines) > MAX_HEADERS:
        raise BadHead(f"more than {MAX_HEADERS} header fields")
    head = RequestHead(method, target, version, tuple(_header(line) for line in header_lines))
    _check_framing(head)
    return head


def _request_line(line: str) -> tuple[str, str, str]:
    parts = line.split(" ")
    if len(parts) != 3:
        raise BadHead("the request line must be `METHOD target HTTP/1.1`")
    method, target, version = parts
    if not method or not set(method) <= _TCHAR:
        raise BadHead("invalid method")
    if not target or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in target):
        raise BadHead("invalid request target")
    if version not in _VERSIONS:
        raise BadHead("unsupported HTTP version (HTTP/1.1 or HTTP/1.0 expected)")
    return method, target, version


def _header(line: str) -> tuple[str, str]:
    if line[:1] in (" ", "\t"):
        raise BadHead("obsolete line folding in a header field")
    name, colon, value = line.partition(":")
    if not colon or not name or not set(name) <= _TCHAR:
        raise BadHead("invalid header field name")
    value = value.strip(" \t")
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        raise BadHead(f"control character in header field {name}")
    return name, value


def _check_framing(head: RequestHead) -> None:
    """Reject heads whose framing a box and the router could read differently (request smuggling)."""
    if head.version == "HTTP/1.1" and len(head.get_all("Host")) != 1:
        raise BadHead("an HTTP/1.1 request needs exactly one Host header")
    lengths = head.get_all("Content-Length")
    if lengths and head.get_all("Transfer-Encoding"):
        raise BadHead("Content-Length together with Transfer-Encoding")
    values = {part.strip() for value in lengths for part in value.split(",")}
    if len(values) > 1 or any(not value.isdigit() for value in values):
        raise BadHead("invalid Content-Length")


def _tokens(head: RequestHead, name: str) -> set[str]:
    return {token.strip().lower() for value in head.get_all(name) for token in value.split(",")}


def mode_of(head: RequestHead) -> Mode:
    """`ws` for a WebSocket upgrade (GET, Connection: upgrade, Upgrade: websocket), else `http`."""
    if (
        head.method == "GET"
        and "upgrade" in _tokens(head, "Connection")
        and "websocket" in _tokens(head, "Upgrade")
    ):
        return Mode.WS
    return Mode.HTTP


def routing_key(head: RequestHead, header: str, query_param: str) -> RoutingKey:
    """The routing key: header `header` if present and non-empty, else query parameter `query_param`."""
    value = head.get(header)
    if value:
        return RoutingKey(value, "header")
    _, question, query = head.target.partition("?")
    if question and query_param:
        query = query.partition("#")[0]
        try:
            fields = parse_qsl(query, max_num_fields=MAX_QUERY_FIELDS, errors="replace")
        except ValueError as exc:
            raise BadHead(f"too many query fields (limit {MAX_QUERY_FIELDS})") from exc
        for name, field in fields:
            if name == query_param and field:
                return RoutingKey(field, "query")
    return RoutingKey(None, "none")


def close_after_one(raw: bytes) -> bytes:
    """The head rewritten for one request per connection: hop-by-hop connection headers replaced by
    `Connection: close`. Everything else is forwarded byte for byte."""
    lines = raw[: -len(HEAD_END)].split(b"\r\n")
    kept = [lines[0]]
    kept.extend(line for line in lines[1:] if line.partition(b":")[0].strip().lower() not in _HOP_BY_HOP)
    kept.append(b"Connection: close")
    return b"\r\n".join(kept) + HEAD_END


def key_digest(key: str) -> str:
    """A short, stable digest of a routing key for logs (keys are never logged in clear)."""
    return blake2b(key.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
