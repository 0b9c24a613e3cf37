from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from conftest import AUTH


async def test_http_smoke(box: TestClient[Any, Any]) -> None:
    resp = await box.post("/v1/responses", json={"model": "m", "input": "hi"}, headers=AUTH)
    body = await resp.json()
    print(body)
    assert resp.status == 200


async def test_ws_smoke(box: TestClient[Any, Any]) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        await ws.send_json({"type": "response.create", "model": "m", "input": "hi", "store": False})
        while True:
            msg = await ws.receive_json()
            print(msg["type"])
            if msg["type"] in ("response.completed", "error", "response.failed"):
                break
        assert msg["type"] == "response.completed"
