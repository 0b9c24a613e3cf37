"""Client-side wire bytes: a socket that counts what the kernel accepted and returned.

aiohttp's TCPConnector takes a `socket_factory`; asyncio's selector transports call `send`, `recv` and
`recv_into` on that very socket object, so counting there gives the bytes on the TCP stream (request
heads, WebSocket framing, chunked encoding included): the figure the router's tether_router_bytes_total
counts on its side. Needs the default asyncio loop (uvloop does its I/O on the file descriptor).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class ByteCounter:
    """Bytes sent and received on every socket made by one factory."""

    sent: int = 0
    received: int = 0
    connections: int = 0

    def snapshot(self) -> tuple[int, int]:
        """(sent, received) now."""
        return self.sent, self.received


class CountingSocket(socket.socket):
    """A TCP socket that adds what it sends and receives to a ByteCounter."""

    def __init__(self, family: int, kind: int, proto: int, counter: ByteCounter) -> None:
        super().__init__(family, kind, proto)
        self.counter = counter

    def send(self, data: Any, flags: int = 0) -> int:
        sent = super().send(data, flags)
        self.counter.sent += sent
        return sent

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        self.counter.received += len(data)
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        received = super().recv_into(buffer, nbytes, flags)
        self.counter.received += received
        return received


def counting_socket_factory(counter: ByteCounter) -> Callable[[Any], socket.socket]:
    """A `socket_factory` for aiohttp.TCPConnector whose sockets count into `counter`."""

    def factory(addr_info: Any) -> socket.socket:
        family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
        sock = CountingSocket(family, kind, proto, counter)
        counter.connections += 1
        return sock

    return factory
