"""Structured logs: JSON lines carry the request id and the response id, never the API key."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from box_fakes import ws_turn
from conftest import AUTH, KEY

from api_box.io.logctx import ContextFilter, QuietProbesAccessLogger
from tether_runtime.logs import JsonFormatter


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The box's JSON log lines, as `tether-api-box --log-format json` writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter("api_box"))
    logger = logging.getLogger("api_box")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


async def test_an_http_turn_logs_its_request_and_response_ids(
    box: TestClient[Any, Any], json_log: io.StringIO
) -> None:
    headers = {**AUTH, "X-Request-Id": "client-req-42"}
    resp = await box.post("/v1/responses", json={"model": "m", "input": "hi"}, headers=headers)
    assert resp.status == 200
    assert resp.headers["X-Request-Id"] == "client-req-42"
    response_id = (await resp.json())["id"]
    access = [e for e in lines(json_log) if e["logger"] == "api_box.access"]
    assert len(access) == 1
    assert access[0]["request_id"] == "client-req-42"
    assert access[0]["response_id"] == response_id
    assert "completed" in access[0]["msg"]
    assert (access[0]["level"], access[0]["component"]) == ("info", "api_box")  # docs/logging.md
    assert KEY not in json_log.getvalue()


async def test_websocket_turns_carry_the_upgrade_request_id_and_their_own_response_ids(
    box: TestClient[Any, Any], json_log: io.StringIO
) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        request_id = ws._response.headers["X-Request-Id"]
        first = (await ws_turn(ws, {"input": "one", "store": False}))[-1]["response"]["id"]
        second = (await ws_turn(ws, {"input": "two", "store": False}))[-1]["response"]["id"]
    access = [e for e in lines(json_log) if e["logger"] == "api_box.access"]
    assert [e["response_id"] for e in access] == [first, second]
    assert {e["request_id"] for e in access} == {request_id}
    assert request_id.startswith("req_")
    assert KEY not in json_log.getvalue()


async def test_an_unsafe_client_request_id_is_replaced(box: TestClient[Any, Any]) -> None:
    headers = {**AUTH, "X-Request-Id": "x" * 300}
    resp = await box.get("/v1/models", headers=headers)
    assert resp.status == 200
    assert resp.headers["X-Request-Id"].startswith("req_")
    unauthorized = await box.get("/v1/models", headers={"X-Request-Id": "r-1"})
    assert unauthorized.status == 401
    assert unauthorized.headers["X-Request-Id"] == "r-1"


async def test_probes_and_scrapes_leave_no_access_line_unless_the_access_log_is_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    for path in ("/readyz", "/livez", "/metrics", "/v1/models"):
        app.router.add_get(path, ok)
    server = TestServer(app)
    await server.start_server(access_log_class=QuietProbesAccessLogger)  # the box's runner setting
    async with TestClient(server) as client:
        caplog.set_level(logging.INFO, logger="aiohttp.access")
        for path in ("/readyz", "/livez", "/metrics", "/v1/models"):
            assert (await client.get(path)).status == 200
        assert [r.getMessage().split('"')[1] for r in caplog.records] == ["GET /v1/models HTTP/1.1"]
        caplog.clear()
        caplog.set_level(logging.DEBUG, logger="aiohttp.access")
        assert (await client.get("/readyz")).status == 200
        assert [r.getMessage().split('"')[1] for r in caplog.records] == ["GET /readyz HTTP/1.1"]
