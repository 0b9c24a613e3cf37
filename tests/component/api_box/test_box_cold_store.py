"""The cold-store interface end to end: write-behind of store:true turns, restore on another box."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient
from box_fakes import FakeWorkerPool, MemoryColdStore, ws_turn
from conftest import AUTH, KEY, OTHER_KEY
from prometheus_client import CollectorRegistry

from api_box.config import Settings
from api_box.core.handoff import TurnRecord
from api_box.io.app import build_app
from gpu_worker.wire import chat

TOOLS = [{"type": "function", "name": "read_file", "parameters": {"type": "object"}}]


async def test_a_store_true_chain_continues_on_another_box_from_the_cold_store(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], tmp_path: Any
) -> None:
    cold, pool = MemoryColdStore(), FakeWorkerPool()
    keys = tmp_path / "keys"
    keys.write_text(f"alpha {KEY}\nbeta {OTHER_KEY}\n")
    boxes = []
    for name in ("box-a", "box-b"):
        settings = Settings(box_id=name, workers=("127.0.0.1:1",), api_keys_file=str(keys), admin_port=-1)
        registry = CollectorRegistry()
        app = build_app(settings, registry=registry, worker_pool=pool, cold_store=cold)  # type: ignore[arg-type]
        boxes.append((await aiohttp_client(app), registry))
    (box_a, _), (box_b, registry_b) = boxes
    common = {"tools": TOOLS, "store": True, "metadata": {"fake_calls": "2"}}
    async with box_a.ws_connect("/v1/responses", headers=AUTH) as ws:
        first = (await ws_turn(ws, {"input": "go", **common}))[-1]["response"]
        call = first["output"][0]
        out = [{"type": "function_call_output", "call_id": call["call_id"], "output": "one"}]
        second = (await ws_turn(ws, {"input": out, "previous_response_id": first["id"], **common}))[-1][
            "response"
        ]
    assert cold.appends == 2
    assert TurnRecord.from_bytes(cold.turns[("alpha", first["id"])]).whole
    delta = TurnRecord.from_bytes(cold.turns[("alpha", second["id"])])
    assert delta.base_response_id == first["id"]  # the second turn was written as a delta
    # Box B has nothing in memory: the continuation is restored from the cold store (write-behind deltas).
    call2 = second["output"][0]
    out2 = [{"type": "function_call_output", "call_id": call2["call_id"], "output": "two"}]
    async with box_b.ws_connect("/v1/responses", headers=AUTH) as ws:
        third = (await ws_turn(ws, {"input": out2, "previous_response_id": second["id"], **common}))[-1]
    assert third["type"] == "response.completed"
    assert registry_b.get_sample_value("tether_box_session_lookups_total", {"result": "redis"}) == 1
    assert registry_b.get_sample_value("tether_box_cold_restore_seconds_count") == 1
    resent = pool.sent[-1]
    assert resent.chain[-len(chat.render_function_call_output("two")) :] == tuple(
        chat.render_function_call_output("two")
    )
    assert list(resent.chain[: len(pool.sent[1].chain)]) == list(pool.sent[1].chain)  # the restored prefix
    got = await box_b.get(f"/v1/responses/{first['id']}", headers=AUTH)
    assert got.status == 200
    other = await box_b.get(f"/v1/responses/{first['id']}", headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert other.status == 404
    assert (await box_b.delete(f"/v1/responses/{first['id']}", headers=AUTH)).status == 200
    assert ("alpha", first["id"]) not in cold.turns
