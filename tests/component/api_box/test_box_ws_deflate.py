"""permessage-deflate in WebSocket mode, against real clients: `websockets` (what the openai SDK uses),
the openai SDK itself, and aiohttp's client; clients that offer nothing still get plain frames."""

from __future__ import annotations

import random
import string
from typing import Any

import openai
import orjson
import pytest
import websockets
from aiohttp.test_utils import TestClient
from box_fakes import TERMINAL, ws_turn
from conftest import AUTH, KEY, BoxFactory
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import ClientConnection
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from api_box.io.state import STATE
from api_box.io.wsdeflate import _Deflater

EXTENSIONS = "Sec-WebSocket-Extensions"


def ws_url(box: TestClient[Any, Any]) -> str:
    return str(box.make_url("/v1/responses")).replace("http", "ws", 1)


async def turn(ws: ClientConnection, **body: Any) -> list[dict[str, Any]]:
    await ws.send(orjson.dumps({"type": "response.create", "model": "m", "store": False, **body}).decode())
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] not in TERMINAL:
        events.append(orjson.loads(await ws.recv()))
    return events


def headers_of(ws: ClientConnection) -> Any:
    """The handshake response's headers."""
    assert ws.response is not None
    return ws.response.headers


def deflate_count(registry: CollectorRegistry, negotiated: str) -> float:
    value = registry.get_sample_value("tether_box_websocket_deflate_total", {"negotiated": negotiated})
    return value or 0.0


async def test_the_sdk_transport_negotiates_deflate_and_every_frame_decodes(
    box: TestClient[Any, Any], registry: CollectorRegistry
) -> None:
    async with websockets.connect(ws_url(box), additional_headers=AUTH) as ws:
        assert headers_of(ws)[EXTENSIONS] == (
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=15"
        )
        for _ in range(3):
            events = await turn(ws, input="x" * 5000)
            assert events[-1]["type"] == "response.completed"
        (conn,) = box.app[STATE].connections
        assert isinstance(conn.ws._writer._compressobj, _Deflater)  # the box's compressor, not aiohttp's
    assert deflate_count(registry, "yes") == 1
    assert deflate_count(registry, "no") == 0


async def test_a_client_that_offers_nothing_gets_plain_frames(
    box: TestClient[Any, Any], registry: CollectorRegistry
) -> None:
    async with websockets.connect(ws_url(box), additional_headers=AUTH, compression=None) as ws:
        assert EXTENSIONS not in headers_of(ws)
        assert (await turn(ws, input="hi"))[-1]["type"] == "response.completed"
    async with box.ws_connect("/v1/responses", headers=AUTH) as plain:  # aiohttp offers nothing by default
        assert EXTENSIONS not in plain._response.headers
        assert (await ws_turn(plain, {"input": "hi", "store": False}))[-1]["type"] == "response.completed"
    assert deflate_count(registry, "no") == 2


async def test_aiohttp_client_deflate_works_too(box: TestClient[Any, Any]) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH, compress=15) as ws:
        assert ws.compress == 15  # the client keeps its largest window (the box inflates with 15 bits anyway)
        for _ in range(2):
            assert (await ws_turn(ws, {"input": "hi " * 400, "store": False}))[-1][
                "type"
            ] == "response.completed"


async def test_deflate_off_declines_every_offer(make_box: BoxFactory) -> None:
    box = await make_box(ws_deflate=False)
    async with websockets.connect(ws_url(box), additional_headers=AUTH) as ws:
        assert EXTENSIONS not in headers_of(ws)
        assert (await turn(ws, input="hi"))[-1]["type"] == "response.completed"


async def test_a_small_window_is_honoured_by_the_box_compressor(make_box: BoxFactory) -> None:
    """With a 9-bit window the client inflates with 512 bytes of history: a box that compressed with a
    larger window would reference text further back (the instructions repeat in every lifecycle event,
    kilobytes apart) and the client would fail to decode."""
    box = await make_box(ws_deflate_window_bits=9, ws_deflate_max_connection_bytes=200_000)
    rng = random.Random(7)
    instructions = "".join(rng.choice(string.ascii_letters) for _ in range(3000))
    async with websockets.connect(ws_url(box), additional_headers=AUTH) as ws:
        assert headers_of(ws)[EXTENSIONS] == (
            "permessage-deflate; server_max_window_bits=9; client_max_window_bits=15"
        )
        for _ in range(3):
            events = await turn(ws, input="hi", instructions=instructions)
            assert events[-1]["response"]["instructions"] == instructions


async def test_no_context_takeover_binds_both_sides(make_box: BoxFactory) -> None:
    box = await make_box(
        ws_deflate_context_takeover=False, ws_deflate_window_bits=15, ws_deflate_max_connection_bytes=320_000
    )
    async with websockets.connect(ws_url(box), additional_headers=AUTH) as ws:
        assert headers_of(ws)[EXTENSIONS] == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "client_max_window_bits=15"
        )
        for _ in range(3):
            assert (await turn(ws, input="same text " * 300))[-1]["type"] == "response.completed"


async def test_a_client_asking_for_no_server_takeover_gets_it(box: TestClient[Any, Any]) -> None:
    # The box's default window is 12 bits; the client asks for 10 on its side.
    factory = ClientPerMessageDeflateFactory(server_no_context_takeover=True, client_max_window_bits=10)
    async with websockets.connect(
        ws_url(box), additional_headers=AUTH, compression=None, extensions=[factory]
    ) as ws:
        assert headers_of(ws)[EXTENSIONS] == (
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; "
            "client_max_window_bits=10"
        )
        for _ in range(2):
            assert (await turn(ws, input="again " * 500))[-1]["type"] == "response.completed"


async def test_a_deflate_bomb_is_closed_with_1009(make_box: BoxFactory) -> None:
    box = await make_box(max_frame_bytes=64 * 1024)
    async with websockets.connect(ws_url(box), additional_headers=AUTH, max_size=None) as ws:
        body = orjson.dumps({"type": "response.create", "model": "m", "input": " " * (1 << 20)})
        await ws.send(body.decode())  # about 1 KiB on the wire, 1 MiB once inflated
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


async def test_the_openai_sdk_negotiates_deflate_when_its_messages_are_bounded(real_box: Any) -> None:
    """SDK 3.63 offers permessage-deflate only with a finite max_size (its default, None, turns compression
    off) or with compression="deflate"; either way the box answers what it offers."""
    client_box, _, _ = await real_box()
    registry = client_box.app[STATE].metrics.registry
    client = openai.AsyncOpenAI(api_key=KEY, base_url=str(client_box.make_url("/v1")), max_retries=0)
    for options in ({"max_size": 16 << 20}, {}):
        async with client.responses.connect(websocket_connection_options=options) as conn:  # type: ignore[arg-type]
            await conn.response.create(model="tether-sim", input="Say hi", store=False)
            kinds = []
            async for event in conn:
                kinds.append(event.type)
                if event.type in TERMINAL:
                    break
        assert kinds[-1] == "response.completed"
    assert deflate_count(registry, "yes") == 1
    assert deflate_count(registry, "no") == 1
