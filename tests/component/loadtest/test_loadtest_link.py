"""The link emulator and the counting sockets, on loopback with in-process servers on port 0."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from loadtest.bench.counting import ByteCounter, counting_socket_factory
from loadtest.bench.linkemu import LinkSpec, Relay


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write_eof()  # answer a half-close with one
    await writer.drain()
    writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def _relay(target_port: int, spec: LinkSpec) -> tuple[Relay, asyncio.Server, int]:
    relay = Relay(("127.0.0.1", target_port), spec, spec)
    server = await asyncio.get_running_loop().create_server(relay.accept, "127.0.0.1", 0)
    return relay, server, server.sockets[0].getsockname()[1]


async def test_relay_adds_the_delay_each_way(echo_port: int) -> None:
    relay, server, port = await _relay(echo_port, LinkSpec(delay=0.02, rate=0))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"x")  # the first exchange also pays the upstream connect
        await reader.readexactly(1)
        started = time.perf_counter()
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        rtt = time.perf_counter() - started
    finally:
        writer.close()
        server.close()
        relay.close()
    assert 0.04 <= rtt < 0.2
    assert relay.stats()["up"]["bytes"] == 5


async def test_relay_paces_at_the_rate_and_keeps_order(echo_port: int) -> None:
    relay, server, port = await _relay(echo_port, LinkSpec(delay=0.0, rate=2_000_000))  # 2 MB/s
    payload = bytes(range(256)) * 1600  # 400 KiB: 0.2 s each way at the link rate
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        started = time.perf_counter()
        writer.write(payload)
        echoed = await reader.readexactly(len(payload))
        elapsed = time.perf_counter() - started
    finally:
        writer.close()
        server.close()
        relay.close()
    assert echoed == payload
    assert elapsed >= 0.2  # serialization on the up link (the down link overlaps it)


async def test_relay_passes_half_close_and_closes_after_draining(echo_port: int) -> None:
    relay, server, port = await _relay(echo_port, LinkSpec(delay=0.01, rate=0))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"last words")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b"last words"  # then EOF
    finally:
        writer.close()
        server.close()
        relay.close()


async def test_relay_closes_the_client_when_the_target_refuses() -> None:
    probe = await asyncio.start_server(_echo, "127.0.0.1", 0)
    dead_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    relay, server, port = await _relay(dead_port, LinkSpec())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
        server.close()
        relay.close()


async def test_counting_sockets_see_every_byte_of_http_and_websocket() -> None:
    seen = {"body": 0}

    async def post(request: web.Request) -> web.Response:
        seen["body"] += len(await request.read())
        return web.Response(body=b"y" * 5000)

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data * 2)
        return ws

    app = web.Application()
    app.router.add_post("/p", post)
    app.router.add_get("/ws", ws_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    counter = ByteCounter()
    connector = aiohttp.TCPConnector(socket_factory=counting_socket_factory(counter))
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(f"http://127.0.0.1:{port}/p", data=b"x" * 3000) as resp:
                assert len(await resp.read()) == 5000
            async with session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                await ws.send_str("hello")
                assert (await ws.receive()).data == "hellohello"
    finally:
        await runner.cleanup()
    assert seen["body"] == 3000
    assert counter.connections >= 1  # the upgrade may reuse the keep-alive connection
    assert counter.sent > 3000 + 5  # bodies, heads and frames
    assert counter.received > 5000 + 10
