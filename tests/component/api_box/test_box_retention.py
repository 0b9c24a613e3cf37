"""`prompt_cache_options` through the box: each keyed Generate carries the retention the client asked
for, `prewarm` warms a chain without generating, and bad values are 400s; with the real SDK and worker."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient
from box_fakes import FakeWorkerPool, ws_turn
from conftest import AUTH, KEY


async def turn(ws: Any, event: dict[str, Any]) -> dict[str, Any]:
    """The terminal event of one response.create."""
    return (await ws_turn(ws, event))[-1]


async def test_each_keyed_generate_carries_the_requested_retention(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        first = await turn(ws, {"input": "a", "store": False, "prompt_cache_options": {"ttl": "12h"}})
        previous = first["response"]["id"]
        plain = await turn(ws, {"input": "b", "store": False, "previous_response_id": previous})
        assert plain["type"] == "response.completed"
        default = await turn(ws, {"input": "c", "store": False, "prompt_cache_options": {"mode": "implicit"}})
        explicit = await turn(
            ws, {"input": "d", "store": False, "prompt_cache_options": {"mode": "explicit"}}
        )
    assert default["type"] == explicit["type"] == "response.completed"
    sent = [s.request for s in fake_pool.sent]
    assert [r.retain_seconds for r in sent] == [43_200, 0, 1_800, 0]
    assert all(r.cache_key for r in sent)
    # a stateless HTTP request (no cache key: the worker's anonymous prefix cache) is retained too
    body = {"model": "m", "input": "e", "store": False, "prompt_cache_options": {"ttl": "30m"}}
    async with box.post("/v1/responses", json=body, headers=AUTH) as resp:
        assert resp.status == 200
    assert (fake_pool.sent[-1].request.cache_key, fake_pool.sent[-1].request.retain_seconds) == (None, 1_800)


async def test_a_bad_ttl_is_an_error_event_and_the_socket_stays_open(
    box: TestClient[Any, Any], fake_pool: FakeWorkerPool
) -> None:
    async with box.ws_connect("/v1/responses", headers=AUTH) as ws:
        error = await turn(ws, {"input": "a", "prompt_cache_options": {"ttl": "1h"}})
        assert (error["type"], error["status"]) == ("error", 400)
        assert error["error"]["param"] == "prompt_cache_options.ttl"
        ok = await turn(ws, {"input": "a", "store": False})
    assert ok["type"] == "response.completed"
    assert len(fake_pool.sent) == 1


INSTRUCTIONS = "You are a coding agent. " * 40


@pytest.fixture
async def sdk_box(real_box: Any) -> tuple[str, Any]:
    client, workers, _ = await real_box()
    return str(client.make_url("/v1")), workers[0]


async def test_prewarm_with_the_sdk_leaves_a_retained_chain_the_next_turn_reuses(
    sdk_box: tuple[str, Any],
) -> None:
    base_url, worker = sdk_box
    client = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)
    async with client.responses.connect() as conn:
        await conn.response.create(
            model="tether-sim",
            instructions=INSTRUCTIONS,
            input="The repository: " + "def f(x): return x + 1\n" * 40,
            store=False,
            prompt_cache_options={"prewarm": True, "ttl": "12h"},
        )
        kinds = []
        async for event in conn:
            kinds.append(event.type)
            if event.type in ("response.completed", "error"):
                break
        assert kinds == ["response.created", "response.completed"]
        warm = event.response
        assert warm.output == []
        assert warm.prompt_cache_options is not None
        assert (warm.prompt_cache_options.mode, warm.prompt_cache_options.ttl) == ("implicit", "12h")
        granted = {"result": "granted"}
        assert worker.registry.get_sample_value("tether_worker_retention_requests_total", granted) == 1
        retained = worker.cache.retained_keys(worker.service._now())
        assert len(retained) == 1
        held = len(worker.cache.get(retained[0]).tokens)
        await conn.response.create(
            model="tether-sim",
            instructions=INSTRUCTIONS,  # instructions are not inherited: an agent sends them each turn
            input="Now fix f.",
            store=False,
            previous_response_id=warm.id,
        )
        async for event in conn:
            if event.type in ("response.completed", "error"):
                break
        assert event.type == "response.completed"
        assert event.response.usage is not None
        assert event.response.usage.input_tokens_details.cached_tokens == held
    await client.close()


async def test_a_bad_option_over_http_is_a_400_the_sdk_raises(sdk_box: tuple[str, Any]) -> None:
    base_url, _ = sdk_box
    client = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        await client.responses.create(
            model="tether-sim",
            input="x",
            prompt_cache_options={"prewarm": "yes"},  # type: ignore[typeddict-item]
        )
    assert bad.value.status_code == 400
    assert bad.value.param == "prompt_cache_options.prewarm"  # type: ignore[attr-defined]
    await client.close()
