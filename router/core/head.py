"""HTTP/1.1 request-head parsing for the router: just enough HTTP to route, nothing of the body or frames.

The shell buffers bytes until `find_head_end` reports the blank line (or the size limit is hit) and hands the
head to `parse_head`, which validates it strictly (RFC 9112: request line, token header names, no obs-fold,
no bare CR/LF, one Host on HTTP/1.1, no Content-Length together with Transfer-Encoding) and raises BadHead.
`routing_key` then picks the key from an ordered list of sources (`parse_routing_keys`: headers and query
parameters, first non-empty one wins; `DEFAULT_ROUTING_KEYS` lists what agents send) and `mode_of` tells a
WebSocket upgrade from plain HTTP. Header names are tokens, so `session_id` (with an underscore, as Codex
sends it) is a valid name.

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

from router.core.errors import BadHead, ConfigError

__all__ = [
    "DEFAULT_ROUTING_KEYS",
    "HEAD_END",
    "KeySource",
    "KeySpec",
    "Mode",
    "RequestHead",
    "RoutingKey",
    "close_after_one",
    "find_head_end",
    "key_digest",
    "mode_of",
    "parse_head",
    "parse_routing_keys",
    "routing_key",
]

HEAD_END = b"\r\n\r\n"
MAX_HEADERS = 128
MAX_QUERY_FIELDS = 64
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_VERSIONS = frozenset({"HTTP/1.1", "HTTP/1.0"})
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection"})

MAX_ROUTING_KEYS = 16
KeySource = Literal["header", "query", "none"]

# Where agents put their session id, in the order tried: the Codex CLI (`session-id`, and `session_id` in
# some of its versions), OpenCode (`x-session-affinity`), Claude Code (`x-claude-code-session-id`), Tether's
# own clients (`X-Session-Id`), then the query parameter for clients that cannot set headers.
DEFAULT_ROUTING_KEYS = (
    "header:session-id,header:session_id,header:x-session-affinity,header:x-claude-code-session-id,"
    "header:X-Session-Id,query:session_id"
)


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
class KeySpec:
    """One place a routing key may come from: a header (`name` compared case-insensitively) or a query
    parameter (exact name)."""

    source: Literal["header", "query"]
    name: str

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"


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


def parse_routing_keys(text: str) -> tuple[KeySpec, ...]:
    """Parse an ordered, comma-separated list of `header:NAME` and `query:NAME` entries (at least one, at
    most MAX_ROUTING_KEYS, no repeats). Raises ConfigError naming the bad entry."""
    specs: list[KeySpec] = []
    seen: set[tuple[str, str]] = set()
    for entry in (part.strip() for part in text.split(",")):
        source, colon, name = entry.partition(":")
        if not colon or source not in ("header", "query"):
            raise ConfigError(f"routing key source {entry!r}: expected header:NAME or query:NAME")
        if source == "header" and not (name and set(name) <= _TCHAR):
            raise ConfigError(f"routing key source {entry!r}: {name!r} is not an HTTP header name")
        if source == "query" and not (name and name.isprintable() and not any(c in name for c in " &=#")):
            raise ConfigError(f"routing key source {entry!r}: {name!r} is not a query parameter name")
        folded = (source, name.lower() if source == "header" else name)
        if folded in seen:
            raise ConfigError(f"routing key source {entry!r} is listed twice")
        seen.add(folded)
        specs.append(KeySpec("header" if source == "header" else "query", name))
    if len(specs) > MAX_ROUTING_KEYS:
        raise ConfigError(f"more than {MAX_ROUTING_KEYS} routing key sources")
    return tuple(specs)


def routing_key(head: RequestHead, sources: tuple[KeySpec, ...]) -> RoutingKey:
    """The routing key: the first of `sources`, in order, that the request carries with a non-empty value
    (a header's first value; a query parameter's first non-empty value)."""
    headers: dict[str, str] | None = None
    fields: list[tuple[str, str]] | None = None
    for spec in sources:
        if spec.source == "header":
            if headers is None:
                headers = {}
                for name, value in head.headers:
                    headers.setdefault(name.lower(), value)
            found = headers.get(spec.name.lower())
            if found:
                return RoutingKey(found, "header")
        else:
            if fields is None:
                fields = _query_fields(head.target)
            for name, field in fields:
                if name == spec.name and field:
                    return RoutingKey(field, "query")
    return RoutingKey(None, "none")


def _query_fields(target: str) -> list[tuple[str, str]]:
    _, question, query = target.partition("?")
    if not question:
        return []
    try:
        return parse_qsl(query.partition("#")[0], max_num_fields=MAX_QUERY_FIELDS, errors="replace")
    except ValueError as exc:
        raise BadHead(f"too many query fields (limit {MAX_QUERY_FIELDS})") from exc


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
