"""The router in front of in-process boxes: routing, the raw relay, errors, counters, lifecycle.

Tests of deadlines (head, idle, send, drain, probe) run the router on a FakeClock and move its time by hand.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket

import aiohttp
import pytest
from conftest import FakeClock, StartBoxes, StartRouter, free_port, router_settings, start_box, until
from prometheus_client import CollectorRegistry

from router.app import start_router
from router.core.membership import Member
from router.io.sources import StaticSource

TIMEOUT = aiohttp.ClientTimeout(total=10)


def metric(running: object, name: str, **labels: str) -> float:
    registry: CollectorRegistry = running.router.metrics.registry  # type: ignore[attr-defined]
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Everything the router sends until it closes (at most 5 s), then close."""
    try:
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def raw_exchange(port: int, request: bytes, *, half_close: bool = False) -> bytes:
    """Send raw bytes, read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        if half_close:
            writer.write_eof()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def upgrade(target: str = "/v1/responses", headers: str = "") -> bytes:
    """A WebSocket upgrade request as the Codex CLI sends it (its beta header and deflate offer included)."""
    return (
        f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        f"openai-beta: responses_websockets=2026-02-06\r\n{headers}\r\n"
    ).encode()


def error_of(response: bytes) -> tuple[int, str]:
    """The status and the JSON error code of a router error response."""
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)["error"]["code"]


def post(target: str, body: bytes, headers: str = "") -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body


async def test_websocket_sessions_reach_the_owner_of_their_key(
    boxes: StartBoxes, routers: StartRouter
) -> None:
    started = await boxes(3)
    running = await routers(router_settings(",".join(b.spec for b in started)))
    ring = running.router.ring
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for i in range(12):
            key = f"session-{i}"
            by_header = await session.ws_connect(f"{running.url}/v1/responses", headers={"X-Session-Id": key})
            by_query = await session.ws_connect(f"{running.url}/v1/responses?session_id={key}")
            for ws in (by_header, by_query):
                for turn in range(3):
                    await ws.send_str(f"turn {turn}")
                    reply = json.loads((await ws.receive(timeout=5)).data)
                    assert reply == {"box": ring.lookup(key), "echo": f"turn {turn}"}
                await ws.send_bytes(b"\x00\xff" * 1000)
                assert (await ws.receive(timeout=5)).data == b"\x00\xff" * 1000
                await ws.close()
    assert metric(running, "tether_router_routed_total", mode="ws", key_source="header") == 12
    assert metric(running, "tether_router_routed_total", mode="ws", key_source="query") == 12
    assert metric(running, "tether_router_bytes_total", mode="ws", direction="client_to_server") > 0
    async with asyncio.timeout(5):
        await running.router.wait_no_connections()
    assert metric(running, "tether_router_connections", mode="ws") == 0


async def test_each_http_request_is_routed_on_its_own_head(boxes: StartBoxes, routers: StartRouter) -> None:
    """One pooled client session, many keys: every request reaches its key's box, because the router
    forwards one request per connection and the box answers `Connection: close`."""
    started = await boxes(3)
    running = await routers(router_settings(",".join(b.spec for b in started)))
    connector = aiohttp.TCPConnector(limit=1)  # the client would reuse one connection if it could
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as session:
        for i in range(15):
            key = f"k{i}"
            async with session.post(
                f"{running.url}/v1/responses", data=b"{}", headers={"X-Session-Id": key}
            ) as r:
                assert r.status == 200
                assert r.headers["Connection"] == "close"
                assert (await r.json())["box"] == running.router.ring.lookup(key)
    assert metric(running, "tether_router_routed_total", mode="http", key_source="header") == 15


@pytest.mark.parametrize(
    "header", ["session-id", "session_id", "x-session-affinity", "x-claude-code-session-id", "X-Session-Id"]
)
async def test_every_agent_session_header_routes_by_default(
    boxes: StartBoxes, routers: StartRouter, header: str
) -> None:
    """The default routing keys: the session headers of Codex, OpenCode, Claude Code and Tether's clients
    (`session_id` with its underscore included) pin a session to its key's owner, ahead of the query."""
    started = await boxes(3)
    running = await routers(router_settings(",".join(b.spec for b in started)))
    ring = running.router.ring
    for i in range(6):
        key = f"agent-{i}"
        request = post("/v1/responses?session_id=elsewhere", b"{}", f"{header}: {key}\r\n")
        response = await raw_exchange(running.port, request)
        assert json.loads(response.partition(b"\r\n\r\n")[2])["box"] == ring.lookup(key)
    assert metric(running, "tether_router_routed_total", mode="http", key_source="header") == 6


async def test_routing_keys_are_configurable(boxes: StartBoxes, routers: StartRouter) -> None:
    started = await boxes(3)
    spec = ",".join(b.spec for b in started)
    running = await routers(router_settings(spec, routing_keys="query:sid,header:X-Tenant-Session"))
    ring = running.router.ring
    for i in range(6):
        request = post(f"/v1/responses?sid=q{i}", b"{}", f"X-Tenant-Session: h{i}\r\nX-Session-Id: no\r\n")
        response = await raw_exchange(running.port, request)
        assert json.loads(response.partition(b"\r\n\r\n")[2])["box"] == ring.lookup(f"q{i}")
        request = post("/v1/responses", b"{}", f"X-Tenant-Session: h{i}\r\nX-Session-Id: no\r\n")
        response = await raw_exchange(running.port, request)
        assert json.loads(response.partition(b"\r\n\r\n")[2])["box"] == ring.lookup(f"h{i}")
    assert metric(running, "tether_router_routed_total", mode="http", key_source="query") == 6
    assert metric(running, "tether_router_routed_total", mode="http", key_source="header") == 6


async def test_http_byte_counters_are_exact(boxes: StartBoxes, routers: StartRouter) -> None:
    started = await boxes(1)
    running = await routers(router_settings(started[0].spec))
    request = post("/v1/responses", b'{"x": 1}', "X-Session-Id: s\r\nConnection: keep-alive\r\n")
    response = await raw_exchange(running.port, request)
    assert response.startswith(b"HTTP/1.1 200")
    forwarded = len(request) - len(b"keep-alive") + len(b"close")  # the head rewritten to Connection: close
    assert (
        metric(running, "tether_router_bytes_total", mode="http", direction="client_to_server") == forwarded
    )
    assert metric(running, "tether_router_bytes_total", mode="http", direction="server_to_client") == len(
        response
    )


async def test_half_closes_are_passed_on(routers: StartRouter) -> None:
    """The splice is TCP-transparent: a client that shuts its sending side still gets the answer, and the
    box sees the EOF. (The box here reads to EOF before answering, as a half-close-aware server does.)"""
    received: list[bytes] = []

    async def box(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's EOF, relayed by the router
        received.append(data)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(box, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        running = await routers(router_settings(f"raw=127.0.0.1:{port}"))
        request = post("/v1/responses", b"{}")
        response = await raw_exchange(running.port, request, half_close=True)
        assert response == b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"
        assert received[0].endswith(b"\r\n\r\n{}")
    finally:
        server.close()
        await server.wait_closed()


async def test_body_bytes_in_the_head_packet_are_forwarded(boxes: StartBoxes, routers: StartRouter) -> None:
    """Bytes that arrive together with the head (body, early frames) reach the box after the head."""
    started = await boxes(1)
    running = await routers(router_settings(started[0].spec))
    body = os.urandom(200_000)
    response = await raw_exchange(running.port, post("/v1/responses", body))
    assert b'"body_bytes": 200000' in response


async def test_large_websocket_messages_pass_intact(boxes: StartBoxes, routers: StartRouter) -> None:
    """Megabytes each way through one connection: the splice with backpressure loses and reorders nothing."""
    started = await boxes(1)
    running = await routers(router_settings(started[0].spec))
    payloads = [os.urandom(size) for size in (1, 70_000, 3_000_000, 5)]
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.ws_connect(f"{running.url}/v1/responses", max_msg_size=0) as ws,
    ):
        for payload in payloads:
            await ws.send_bytes(payload)
        for payload in payloads:
            assert (await ws.receive(timeout=10)).data == payload


async def test_keyless_connections_go_to_the_least_loaded_box(
    boxes: StartBoxes, routers: StartRouter
) -> None:
    started = await boxes(3)
    running = await routers(router_settings(",".join(b.spec for b in started)))
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        sockets = [await session.ws_connect(f"{running.url}/v1/responses") for _ in range(6)]
        seen = []
        for ws in sockets:
            await ws.send_str("x")
            seen.append(json.loads((await ws.receive(timeout=5)).data)["box"])
        assert sorted(seen) == sorted([b.name for b in started] * 2)
        assert running.router.loads == {b.name: 2 for b in started}
        for ws in sockets:
            await ws.close()
    async with asyncio.timeout(5):
        await running.router.wait_no_connections()
    assert running.router.loads == {b.name: 0 for b in started}
    assert metric(running, "tether_router_routed_total", mode="ws", key_source="none") == 6


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost h\r\n\r\n", 400, "malformed"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 5000 + b"\r\n\r\n", 431, "head_too_large"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 5000, 431, "head_too_large"),  # never ends
    ],
)
async def test_bad_heads_get_a_clear_error(
    boxes: StartBoxes, routers: StartRouter, request_bytes: bytes, status: int, reason: str
) -> None:
    started = await boxes(1)
    running = await routers(router_settings(started[0].spec, max_head_bytes=4096))
    response = await raw_exchange(running.port, request_bytes)
    assert response.startswith(f"HTTP/1.1 {status} ".encode())
    assert json.loads(response.partition(b"\r\n\r\n")[2])["error"]["code"] == reason
    assert metric(running, "tether_router_rejected_total", reason=reason) == 1
    assert metric(running, "tether_router_bytes_total", mode="http", direction="client_to_server") == 0


async def test_a_slow_head_times_out(boxes: StartBoxes, routers: StartRouter) -> None:
    """Slowloris: a head that trickles in gets 408 when the head timeout runs out, however active it is."""
    started = await boxes(1)
    clock = FakeClock()
    running = await routers(router_settings(started[0].spec, head_timeout=10.0), clock=clock)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(b"GET / HTTP/1.1\r\n")
    await clock.armed(clock.time() + 10.0)  # the connection was accepted: its head deadline runs
    for _ in range(9):
        await clock.advance(1.0)
        writer.write(b"X: y\r\n")
        await writer.drain()
    await clock.advance(1.0)
    response = await answer(reader, writer)
    assert response.startswith(b"HTTP/1.1 408 ")
    assert metric(running, "tether_router_rejected_total", reason="head_timeout") == 1


async def test_refused_box_walks_to_the_ring_successor_and_is_reprobed(
    boxes: StartBoxes, routers: StartRouter
) -> None:
    started = await boxes(2)
    dead_port = free_port()
    spec = ",".join([*(b.spec for b in started), f"box-dead=127.0.0.1:{dead_port}"])
    clock = FakeClock()
    running = await routers(router_settings(spec, probe_interval=1.0, down_cooldown=60), clock=clock)
    ring = running.router.ring
    key = next(f"k{i}" for i in range(1000) if ring.lookup(f"k{i}") == "box-dead")
    successor = list(ring.successors(key))[1]
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.post(
            f"{running.url}/v1/responses", data=b"{}", headers={"X-Session-Id": key}
        ) as r:
            assert (await r.json())["box"] == successor
        assert metric(running, "tether_router_upstream_failures_total", reason="refused") == 1
        assert running.router.down.marked() == ["box-dead"]
        # marked down: the next connection skips it without trying (no new failure)
        async with session.post(
            f"{running.url}/v1/responses", data=b"{}", headers={"X-Session-Id": key}
        ) as r:
            assert (await r.json())["box"] == successor
        assert metric(running, "tether_router_upstream_failures_total", reason="refused") == 1
        # the box comes up on its port: the prober clears the mark and the key goes home
        revived = await start_box("box-dead", dead_port)
        try:
            await clock.advance(1.0)  # the prober's turn: it connects (for real) and clears the mark
            await until(lambda: not running.router.down.marked())
            async with session.post(
                f"{running.url}/v1/responses", data=b"{}", headers={"X-Session-Id": key}
            ) as r:
                assert (await r.json())["box"] == "box-dead"
        finally:
            await revived.stop()


async def test_no_reachable_box_is_a_502_before_any_byte_is_forwarded(routers: StartRouter) -> None:
    spec = ",".join(f"b{i}=127.0.0.1:{free_port()}" for i in range(3))
    running = await routers(router_settings(spec, connect_attempts=3))
    response = await raw_exchange(running.port, post("/v1/responses", b"{}", "X-Session-Id: s\r\n"))
    assert response.startswith(b"HTTP/1.1 502 ")
    assert metric(running, "tether_router_upstream_failures_total", reason="refused") == 3
    assert metric(running, "tether_router_rejected_total", reason="no_upstream") == 1
    assert metric(running, "tether_router_bytes_total", mode="http", direction="client_to_server") == 0


async def test_a_websocket_upgrade_no_box_can_serve_is_a_426(routers: StartRouter) -> None:
    """426 Upgrade Required tells a WebSocket-mode client (the Codex CLI) to send the turn over HTTP."""
    spec = ",".join(f"b{i}=127.0.0.1:{free_port()}" for i in range(3))
    running = await routers(router_settings(spec, connect_attempts=3))
    response = await raw_exchange(running.port, upgrade(headers="session-id: s\r\n"))
    assert error_of(response) == (426, "no_upstream")
    assert b"\r\nUpgrade:" not in response.partition(b"\r\n\r\n")[0]  # not switching anything
    assert metric(running, "tether_router_rejected_total", reason="no_upstream") == 1
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{running.url}/v1/responses")
    assert refused.value.status == 426


class EmptySource:
    async def run(self, publish: object) -> None:
        publish([])  # type: ignore[operator]


async def test_an_empty_ring_is_a_503(routers: StartRouter) -> None:
    running = await routers(router_settings("unused=127.0.0.1:1"), source=EmptySource())
    response = await raw_exchange(running.port, post("/v1/responses", b"{}"))
    assert response.startswith(b"HTTP/1.1 503 ")
    assert not running.router.ready()
    assert error_of(await raw_exchange(running.port, upgrade())) == (426, "no_upstream")


async def test_connections_over_the_limit_are_refused(boxes: StartBoxes, routers: StartRouter) -> None:
    started = await boxes(1)
    running = await routers(router_settings(started[0].spec, max_connections=1))
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.ws_connect(f"{running.url}/v1/responses") as ws,
    ):
        response = await raw_exchange(running.port, post("/v1/responses", b"{}"))
        assert error_of(response) == (503, "overloaded")
        # an upgrade over the limit is read far enough to be told from plain HTTP: 426, fall back to HTTP
        assert error_of(await raw_exchange(running.port, upgrade())) == (426, "overloaded")
        await ws.send_str("still fine")
        assert json.loads((await ws.receive(timeout=5)).data)["echo"] == "still fine"
    assert metric(running, "tether_router_rejected_total", reason="overloaded") == 2


async def test_an_over_the_limit_client_that_sends_no_head_is_refused_after_the_linger_time(
    boxes: StartBoxes, routers: StartRouter
) -> None:
    started = await boxes(1)
    clock = FakeClock()
    running = await routers(router_settings(started[0].spec, max_connections=1), clock=clock)
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.ws_connect(f"{running.url}/v1/responses"),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        await clock.armed(clock.time() + 2.0)  # its head budget: the linger time, not head_timeout
        await clock.advance(2.0)
        response = await answer(reader, writer)
    assert error_of(response) == (503, "overloaded")  # no head: not known to be an upgrade


async def test_a_codex_upgrade_reaches_the_box_byte_for_byte(routers: StartRouter) -> None:
    """The router passes the upgrade head on untouched: `openai-beta: responses_websockets=...`, the
    session headers and the permessage-deflate offer are the box's to answer."""
    heads: list[bytes] = []

    async def box(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(box, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        running = await routers(router_settings(f"raw=127.0.0.1:{port}"))
        request = upgrade(headers="session-id: s-1\r\nthread-id: t-1\r\n")
        response = await raw_exchange(running.port, request)
        assert response.endswith(b"\r\n\r\nno")
        assert heads == [request]
        assert metric(running, "tether_router_routed_total", mode="ws", key_source="header") == 1
    finally:
        server.close()
        await server.wait_closed()


async def test_idle_connections_are_closed(boxes: StartBoxes, routers: StartRouter) -> None:
    """Idle checks every idle_timeout / 4: a connection that moved no byte at four checks in a row is
    closed; one that talks is not."""
    started = await boxes(1)
    clock = FakeClock()
    running = await routers(router_settings(started[0].spec, idle_timeout=4.0), clock=clock)
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.ws_connect(f"{running.url}/v1/responses", autoping=False) as ws,
    ):
        for turn in range(6):  # a turn every 3 s keeps it open for 18 s
            await clock.advance(3.0)
            await ws.send_str(f"turn {turn}")
            assert json.loads((await ws.receive(timeout=5)).data)["echo"] == f"turn {turn}"
        await clock.advance(4.0)  # the check after the last turn saw it move; three quiet checks so far
        assert len(running.router.connections) == 1
        await clock.advance(1.0)  # the fourth
        message = await ws.receive(timeout=5)
        assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)
    async with asyncio.timeout(5):
        await running.router.wait_no_connections()


async def test_drain_waits_for_connections_then_drops_the_rest(boxes: StartBoxes) -> None:
    started = await boxes(1)
    clock = FakeClock()
    running = await start_router(router_settings(started[0].spec), registry=CollectorRegistry(), clock=clock)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        ws = await session.ws_connect(f"{running.url}/v1/responses")
        stopping = asyncio.create_task(running.stop(drain_timeout=30.0))
        await clock.armed(clock.time() + 30.0)  # the drain budget runs
        assert not running.router.ready()
        await ws.send_str("during the drain")  # open connections keep working while draining
        assert json.loads((await ws.receive(timeout=5)).data)["echo"] == "during the drain"
        await clock.advance(29.0)
        assert not stopping.done()
        await clock.advance(1.0)
        async with asyncio.timeout(5):
            await stopping
        assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        await ws.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", running.port)


async def test_membership_changes_swap_the_ring(
    boxes: StartBoxes, routers: StartRouter, caplog: pytest.LogCaptureFixture
) -> None:
    started = await boxes(3)
    members = [Member(b.name, "127.0.0.1", b.port) for b in started]
    running = await routers(router_settings(started[0].spec), source=StaticSource(members[:2]))
    first = running.router.ring.version
    assert metric(running, "tether_router_ring_version_info", version=first) == 1
    changed = asyncio.create_task(running.router.wait_ring_change())
    running.router.set_members(members)
    async with asyncio.timeout(10):
        await changed
    second = running.router.ring.version
    assert metric(running, "tether_router_ring_members") == 3
    assert metric(running, "tether_router_ring_version_info", version=second) == 1
    assert (
        running.router.metrics.registry.get_sample_value(
            "tether_router_ring_version_info", {"version": first}
        )
        is None
    )
    assert metric(running, "tether_router_ring_changes_total") == 2
    # a membership the ring cannot take (an unprintable name) is refused; the ring keeps serving
    with caplog.at_level(logging.ERROR, logger="router"):
        running.router.set_members([*members, Member("bad\nname", "127.0.0.1", 1)])
        async with asyncio.timeout(10):
            while "membership rejected" not in caplog.text:  # no event to wait on: the refusal only logs
                await asyncio.sleep(0.01)
    assert running.router.ring.version == second
    running.router.set_members(members[:1])  # and the applier still applies the next one
    async with asyncio.timeout(10):
        await running.router.wait_ring_change()
    assert running.router.ring.members == (members[0].name,)


async def _flood_box(payload: int, gone: asyncio.Event) -> asyncio.Server:
    """A box that answers any head with `payload` bytes and keeps the connection until `gone` is set; then
    it goes away at once (an abort: what it had not sent is lost)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % payload + b"x" * payload)
        await gone.wait()
        writer.transport.abort()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _unread_client(port: int) -> socket.socket:
    """A client that sends a request head and never reads (a tiny receive buffer, so bytes pile up)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    await asyncio.get_running_loop().sock_sendall(sock, post("/v1/responses", b"{}"))
    return sock


@pytest.mark.parametrize("box_goes_away", [False, True], ids=["box-stays", "box-gone"])
async def test_a_client_that_does_not_read_is_dropped_after_the_send_timeout(
    routers: StartRouter, box_goes_away: bool
) -> None:
    """A client whose write buffer stays full for send_timeout is dropped, whether its box is still there
    or went away with bytes still buffered for the client (a close would wait for a flush forever). The
    fixed flush deadline after the box went away is covered by the core's tests."""
    gone = asyncio.Event()
    box = await _flood_box(8 << 20, gone)
    port = box.sockets[0].getsockname()[1]
    clock = FakeClock()
    running = await routers(router_settings(f"flood=127.0.0.1:{port}", send_timeout=30.0), clock=clock)
    sock = await _unread_client(running.port)
    try:
        # the client's write buffer is full: its stall deadline runs
        await until(lambda: any(c.core.stalled for c in running.router.connections))
        if box_goes_away:  # unnoticed while reading from it is paused; it changes nothing for the client
            gone.set()
        await clock.advance(29.0)
        assert len(running.router.connections) == 1
        await clock.advance(1.0)
        async with asyncio.timeout(5):
            await running.router.wait_no_connections()
        assert metric(running, "tether_router_connections", mode="http") == 0
    finally:
        sock.close()
        gone.set()
        box.close()


async def test_an_idle_connection_whose_close_cannot_flush_is_aborted(
    routers: StartRouter,
) -> None:
    gone = asyncio.Event()
    box = await _flood_box(8 << 20, gone)
    port = box.sockets[0].getsockname()[1]
    clock = FakeClock()
    settings = router_settings(f"flood=127.0.0.1:{port}", idle_timeout=4.0, send_timeout=3600.0)
    running = await routers(settings, clock=clock)  # only the idle checks can end it
    sock = await _unread_client(running.port)
    try:
        await until(lambda: any(c.core.stalled for c in running.router.connections))  # no byte moves now
        await clock.advance(5.0)  # the first check saw bytes move, the next four none: closed
        assert len(running.router.connections) == 1  # ... but the close cannot flush
        await clock.advance(1.0)  # the next check aborts it
        async with asyncio.timeout(5):
            await running.router.wait_no_connections()
    finally:
        sock.close()
        gone.set()
        box.close()
