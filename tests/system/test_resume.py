"""A dropped socket resumed through the router (real processes): the openai SDK's TCP connection to the
router is cut with no close frame, the router ends the box's side, the box parks the store:false
responses, and the SDK's reconnect (same X-Session-Id, same X-Tether-Handoff-Key) reaches the same box
and continues the chain by previous_response_id; a steer through the router as well."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import uuid
from typing import Any

from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed

from tether.config import DEV_API_KEY
from tether.supervisor import LocalCluster

TERMINAL = ("response.completed", "response.incomplete", "response.failed", "error")


async def test_a_cut_socket_resumes_its_chain_on_the_same_box(cluster: LocalCluster) -> None:
    client = AsyncOpenAI(base_url=cluster.base_url, api_key=DEV_API_KEY, timeout=30, max_retries=0)
    model = (await client.models.list()).data[0].id
    key = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    headers = {"X-Session-Id": f"resume-{uuid.uuid4().hex}", "X-Tether-Handoff-Key": key}
    outstanding: dict[str, Any] = {}
    resends: list[asyncio.Task[None]] = []

    def on_reconnecting(event: Any) -> None:
        if outstanding and event.attempt == 1:  # resend the create whose terminal event was not seen
            resends.append(asyncio.get_running_loop().create_task(conn.response.create(**outstanding)))

    async def turn(**create: Any) -> Any:
        outstanding.clear()
        outstanding.update(model=model, store=False, max_output_tokens=128, **create)
        with contextlib.suppress(ConnectionClosed):
            await conn.response.create(**outstanding)
        async for event in conn:
            if event.type in TERMINAL:
                outstanding.clear()
                return event
        raise AssertionError("the connection ended")

    async with client.responses.connect(
        extra_headers=headers, on_reconnecting=on_reconnecting, initial_delay=0.05, max_retries=6
    ) as conn:
        first = await turn(input="Remember the word pineapple.")
        assert first.type == "response.completed"
        ws = conn._connection
        ws.transport.abort()  # the client's TCP connection to the router is gone, no close frame
        await ws.wait_closed()
        second = await turn(input="Which word?", previous_response_id=first.response.id)
    assert second.type == "response.completed", second
    assert second.response.previous_response_id == first.response.id
    assert second.response.usage.input_tokens_details.cached_tokens >= first.response.usage.input_tokens
    await client.close()


async def test_a_steer_through_the_router(cluster: LocalCluster) -> None:
    client = AsyncOpenAI(base_url=cluster.base_url, api_key=DEV_API_KEY, timeout=30, max_retries=0)
    model = (await client.models.list()).data[0].id
    async with client.responses.connect(extra_headers={"X-Session-Id": f"steer-{uuid.uuid4().hex}"}) as conn:
        # speed 0: the answer may be over before the steer lands; either way a successor follows it.
        await conn.response.create(
            model=model, input="A long story.", store=False, metadata={"tether.answer_tokens": "400"}
        )
        created = await anext(aiter(conn))
        await conn.response.steer(input="Shorter.", previous_response_id=created.response.id)
        kinds: list[str] = []
        async for event in conn:
            kinds.append(event.type)
            if event.type == "response.created":
                successor = event.response
            if (
                event.type == "response.completed"
                and event.response.previous_response_id == created.response.id
            ):
                break
    assert "response.steer.accepted" in kinds
    assert successor.previous_response_id == created.response.id
    await client.close()
