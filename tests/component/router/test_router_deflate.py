"""The router relays a permessage-deflate negotiation untouched: the offer reaches the box, the box's answer
reaches the client, and the compressed frames cross the relay as they are (fewer bytes than the payload)."""

from __future__ import annotations

import json

import websockets
from conftest import StartBoxes, StartRouter, router_settings
from prometheus_client import CollectorRegistry


def relayed(registry: CollectorRegistry, direction: str) -> float:
    value = registry.get_sample_value("tether_router_bytes_total", {"mode": "ws", "direction": direction})
    return value or 0.0


async def test_deflate_is_negotiated_end_to_end_through_the_relay(
    boxes: StartBoxes, routers: StartRouter
) -> None:
    (box,) = await boxes(1)
    running = await routers(router_settings(box.spec))
    registry = running.router.metrics.registry
    url = running.url.replace("http", "ws", 1) + "/v1/responses"
    payload = "the same tool definitions, again and again; " * 2000  # ~90 KB, very compressible
    async with websockets.connect(url, additional_headers={"X-Session-Id": "s1"}) as ws:
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        for _ in range(3):
            await ws.send(payload)
            assert json.loads(await ws.recv()) == {"box": box.name, "echo": payload}
    assert 0 < relayed(registry, "client_to_server") < len(payload)
    assert 0 < relayed(registry, "server_to_client") < len(payload)


async def test_a_client_that_offers_nothing_gets_no_extension(
    boxes: StartBoxes, routers: StartRouter
) -> None:
    (box,) = await boxes(1)
    running = await routers(router_settings(box.spec))
    url = running.url.replace("http", "ws", 1) + "/v1/responses"
    async with websockets.connect(url, compression=None) as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send("hi")
        assert json.loads(await ws.recv()) == {"box": box.name, "echo": "hi"}
