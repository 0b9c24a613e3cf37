"""Bearer keys: 401 before any upgrade and on HTTP; every stored object is scoped to its tenant."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient
from box_fakes import ws_turn
from conftest import AUTH, OTHER_AUTH, BoxFactory


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
        ({"Authorization": "Basic abc"}, "missing_api_key"),
    ],
)
async def test_http_needs_a_valid_key(box: TestClient[Any, Any], headers: dict[str, str], code: str) -> None:
    resp = await box.post("/v1/responses", json={"model": "m", "input": "x"}, headers=headers)
    assert resp.status == 401
    body = await resp.json()
    assert body["error"]["code"] == code
    assert body["error"]["type"] == "invalid_request_error"


async def test_the_websocket_upgrade_is_refused_with_401(box: TestClient[Any, Any]) -> None:
    with pytest.raises(WSServerHandshakeError) as refused:
        await box.ws_connect("/v1/responses", headers={"Authorization": "Bearer wrong"})
    assert refused.value.status == 401


async def test_probes_need_no_key(box: TestClient[Any, Any]) -> None:
    assert (await box.get("/livez")).status == 200


async def test_another_tenants_response_is_simply_not_found(box: TestClient[Any, Any]) -> None:
    resp = await box.post("/v1/responses", json={"model": "m", "input": "secret"}, headers=AUTH)
    rid = (await resp.json())["id"]
    assert (await box.get(f"/v1/responses/{rid}", headers=OTHER_AUTH)).status == 404
    assert (await box.get(f"/v1/responses/{rid}/input_items", headers=OTHER_AUTH)).status == 404
    assert (await box.delete(f"/v1/responses/{rid}", headers=OTHER_AUTH)).status == 404
    cont = await box.post(
        "/v1/responses", json={"model": "m", "input": "x", "previous_response_id": rid}, headers=OTHER_AUTH
    )
    assert (await cont.json())["error"]["code"] == "previous_response_not_found"
    async with box.ws_connect("/v1/responses", headers=OTHER_AUTH) as ws:
        event = (await ws_turn(ws, {"input": "x", "previous_response_id": rid}))[-1]
        assert event["error"]["code"] == "previous_response_not_found"
    assert (await box.get(f"/v1/responses/{rid}", headers=AUTH)).status == 200


async def test_dev_mode_accepts_the_documented_key(make_box: BoxFactory) -> None:
    box = await make_box(dev=True)
    dev = {"Authorization": "Bearer tether-dev-key"}
    assert (await box.post("/v1/responses", json={"model": "m", "input": "x"}, headers=dev)).status == 200
    plain = await make_box(dev=False)
    assert (await plain.post("/v1/responses", json={"model": "m", "input": "x"}, headers=dev)).status == 401
