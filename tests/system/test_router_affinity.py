"""Session affinity on live routing: openai SDK → router → 3 boxes → worker, with no Redis at all.

- A session key reconnects to the same box and continues its store:true chain warm: the continuation is
  found in that box's memory (there is no Redis to restore from) and the worker serves the prefix from its
  cache.
- Removing a box while traffic runs moves only that box's keys (about 1/N); when it comes back, exactly
  those keys return. Measured by sending real requests through the router and reading `X-Tether-Box`.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from tether.config import DEV_API_KEY, ClusterSpec
from tether.supervisor import LocalCluster

pytestmark = pytest.mark.asyncio(loop_scope="module")
SPEC = ClusterSpec(boxes=3, workers=1, router=True, redis=None, speed=0, port=0, stop_timeout=15)
AUTH = {"Authorization": f"Bearer {DEV_API_KEY}"}
KEYS = [f"affinity-{i}-{uuid.uuid4().hex[:8]}" for i in range(300)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster() -> AsyncIterator[LocalCluster]:
    logs: collections.deque[str] = collections.deque(maxlen=300)
    async with LocalCluster(SPEC, sink=lambda name, _, line: logs.append(f"[{name}] {line}")) as running:
        yield running


async def placement(cluster: LocalCluster, keys: list[str]) -> dict[str, str]:
    """Which box serves each key, read from live routed requests."""
    out: dict[str, str] = {}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def one(key: str) -> None:
            headers = {**AUTH, "X-Session-Id": key}
            async with http.get(f"{cluster.base_url}/models", headers=headers) as response:
                assert response.status == 200
                out[key] = response.headers["X-Tether-Box"]

        for start in range(0, len(keys), 50):  # bounded concurrency
            await asyncio.gather(*(one(k) for k in keys[start : start + 50]))
    return out


async def test_a_session_reconnects_to_its_box_and_continues_a_stored_chain_warm(
    cluster: LocalCluster,
) -> None:
    client = AsyncOpenAI(base_url=cluster.base_url, api_key=DEV_API_KEY, timeout=30, max_retries=0)
    model = (await client.models.list()).data[0].id
    headers = {"X-Session-Id": f"warm-{uuid.uuid4().hex}"}
    async with client.responses.connect(extra_headers=headers) as conn:
        await conn.response.create(model=model, input="Explain the repository layout." * 40, store=True)
        async for event in conn:
            if event.type in ("response.completed", "response.failed", "error"):
                assert event.type == "response.completed"
                first = event.response
                break
    # A new connection (the old one is gone): the same key must land on the box that holds the chain.
    async with client.responses.connect(extra_headers=headers) as conn:
        await conn.response.create(
            model=model, input="And the tests?", store=True, previous_response_id=first.id
        )
        async for event in conn:
            if event.type in ("response.completed", "response.failed", "error"):
                assert event.type == "response.completed", event
                second = event.response
                break
    assert second.previous_response_id == first.id
    assert second.usage is not None
    assert first.usage is not None
    # Warm: the worker served at least the whole first turn's prompt from its cache.
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens


async def test_removing_a_box_moves_only_its_keys_and_they_return_with_it(cluster: LocalCluster) -> None:
    before = await placement(cluster, KEYS)
    counts = collections.Counter(before.values())
    assert set(counts) == {"box-0", "box-1", "box-2"}
    assert await placement(cluster, KEYS) == before  # stable while nothing changes

    await cluster.kill("box-1")
    during = await placement(cluster, KEYS)  # traffic keeps flowing: every request still answered
    moved = {k for k in KEYS if during[k] != before[k]}
    assert moved == {k for k in KEYS if before[k] == "box-1"}  # only the removed box's keys moved
    assert "box-1" not in during.values()
    share = len(moved) / len(KEYS)
    assert 0.2 <= share <= 0.47, share  # about 1/N = 1/3 of 300 keys, with sampling noise

    await cluster.restart("box-1")
    deadline = asyncio.get_running_loop().time() + 20  # the router re-probes a down member
    after = await placement(cluster, KEYS)
    while after != before and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.5)
        after = await placement(cluster, KEYS)
    assert after == before  # exactly the moved keys came back
