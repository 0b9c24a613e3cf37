"""WebSocket limits and bad input: each gets its close code or error event, and nothing accepted is lost."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from typing import Any

import orjson
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from box_fakes import FakeWorkerPool, Reply, ws_turn
from conftest import AUTH, KEY, BoxFactory

from api_box.io.state import STATE


async def expect_error(ws: Any, code: str) -> dict[str, Any]:
    event = await ws.receive_json(timeout=10)
    assert event["type"] == "error"
    assert event["error"]["code"] == code
    assert event["status"] == 400
    return event


async def still_serves(ws: Any) -> None:
    events = await ws_turn(ws, {"input": "still there?", "store": False})
    assert events[-1]["type"] == "response.completed"


async def test_an_oversized_frame_closes_with_1009(make_box: BoxFactory) -> None:
    box = await make_box(max_frame_bytes=2048)
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        await ws.send_str(
            orjson.dumps({"type": "response.create", "model": "m", "input": "x" * 4096}).decode()
        )
        msg = await ws.receive(timeout=10)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert ws.close_code == 1009


async def test_malformed_json_is_an_error_event_and_the_socket_stays_open(box: TestClient[Any, Any]) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        await ws.send_str('{"type": "response.create", "model": ')
        await expect_error(ws, "invalid_json")
        await ws.send_str("[1, 2]")
        await expect_error(ws, "invalid_json")
        await still_serves(ws)


async def test_too_deep_json_is_an_error_event(box: TestClient[Any, Any]) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        await ws.send_str('{"type":"response.create","model":"m","metadata":' + "[" * 500 + "]" * 500 + "}")
        await expect_error(ws, "json_too_deep")
        await ws.send_str("[" * 2000 + "]" * 2000)
        await expect_error(ws, "json_too_deep")
        await still_serves(ws)


async def test_unknown_event_types_are_refused(box: TestClient[Any, Any]) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        await ws.send_json({"type": "response.cancel", "response_id": "resp_1"})
        event = await expect_error(ws, "unknown_event_type")
        assert event["error"]["param"] == "type"
        await ws.send_json({"model": "m", "input": "no type"})
        await expect_error(ws, "missing_required_parameter")
        await still_serves(ws)


async def test_binary_frames_are_refused(box: TestClient[Any, Any]) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        await ws.send_bytes(orjson.dumps({"type": "response.create", "model": "m", "input": "hi"}))
        await expect_error(ws, "binary_frame_unsupported")
        await still_serves(ws)


async def test_invalid_utf8_closes_with_1007(box: TestClient[Any, Any]) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        await ws.send_frame(b'{"type":"response.create","model":"\xff\xfe"}', WSMsgType.TEXT)
        msg = await ws.receive(timeout=10)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert ws.close_code == 1007


async def test_background_and_too_many_items_are_refused(make_box: BoxFactory) -> None:
    box = await make_box(max_items=2)
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        await ws.send_json({"type": "response.create", "model": "m", "input": "x", "background": True})
        await expect_error(ws, "unsupported_parameter")
        items = [{"role": "user", "content": "x"}] * 3
        await ws.send_json({"type": "response.create", "model": "m", "input": items})
        await expect_error(ws, "too_many_items")
        await ws.send_json(
            {"type": "response.create", "model": "m", "input": "x", "stream": True, "store": False}
        )
        assert (await ws_turn(ws))[-1]["type"] == "response.completed"  # stream is accepted and ignored


async def test_a_bad_frame_between_good_ones_is_answered_in_order(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    fake_pool.gate = asyncio.Event()
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        await ws.send_json({"type": "response.create", "model": "m", "input": "one", "store": False})
        await ws.send_str("not json")
        await ws.send_json({"type": "response.create", "model": "m", "input": "two", "store": False})
        assert (await ws.receive_json())["type"] == "response.created"
        fake_pool.gate.set()
        kinds = []
        while kinds.count("response.completed") < 2:
            kinds.append((await ws.receive_json())["type"])
    first_done = kinds.index("response.completed")
    assert kinds[first_done + 1] == "error"  # the bad frame's answer comes after the first response
    assert kinds[first_done + 2] == "response.created"


async def _raw_upgrade(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads (tiny receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET /v1/responses HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    )
    await loop.sock_sendall(sock, head.encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += await loop.sock_recv(sock, 1)
    assert reply.startswith(b"HTTP/1.1 101")
    return sock


def _masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return b"\x81" + length + mask + masked


async def test_a_client_that_never_reads_is_disconnected(
    make_box: BoxFactory, fake_pool: FakeWorkerPool
) -> None:
    box = await make_box(send_queue_frames=8, send_timeout_seconds=30)
    fake_pool.script = lambda _req: Reply(text="y" * 16_384)
    fake_pool.piece_size = 16_384
    fake_pool.delta_repeat = 4000  # ~64 MB of deltas: far more than the socket buffers hold
    assert box.port is not None
    sock = await _raw_upgrade(box.port)
    try:
        create = orjson.dumps({"type": "response.create", "model": "m", "input": "talk", "store": False})
        await asyncio.get_running_loop().sock_sendall(sock, _masked_text_frame(create))
        state = box.app[STATE]
        while not state.connections:
            await asyncio.sleep(0.01)
        conn = next(iter(state.connections))
        await asyncio.wait_for(conn.wait_closed(), 60)
        assert box.app[STATE].metrics.registry.get_sample_value("tether_box_websocket_connections") == 0
        assert fake_pool.counts["ok"] == 0  # the generation was cancelled, not finished
    finally:
        sock.close()


async def test_a_send_that_stalls_past_the_send_timeout_is_aborted(
    make_box: BoxFactory, fake_pool: FakeWorkerPool
) -> None:
    box = await make_box(send_queue_frames=100_000, send_timeout_seconds=0.5)
    fake_pool.script = lambda _req: Reply(text="z" * 16_384)
    fake_pool.piece_size = 16_384
    fake_pool.delta_repeat = 600  # ~10 MB: more than the socket buffers hold, far less than the queue
    assert box.port is not None
    sock = await _raw_upgrade(box.port)
    try:
        create = orjson.dumps({"type": "response.create", "model": "m", "input": "talk", "store": False})
        await asyncio.get_running_loop().sock_sendall(sock, _masked_text_frame(create))
        state = box.app[STATE]
        while not state.connections:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(next(iter(state.connections)).wait_closed(), 30)
    finally:
        sock.close()
