"""Resuming a dropped WebSocket (api_box/io/resume.py) with the official openai SDK: the TCP connection is
cut under the SDK (the transport aborted, no close frame), the SDK reconnects with the same
X-Tether-Handoff-Key, and the store:false chain continues by previous_response_id on the new socket.

A response streaming when the socket dropped fails cleanly: it is cancelled, the lane's cache is as
before it started, and the client resends its create from the same previous_response_id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from typing import Any

import aiohttp
import openai
import orjson
from box_fakes import FakeWorkerPool, ws_turn
from conftest import AUTH, KEY, BoxFactory
from prometheus_client import CollectorRegistry
from websockets.exceptions import ConnectionClosed

from api_box.core.parking import ParkingLot
from api_box.core.sealed import HANDOFF_KEY_HEADER, derive, parse_handoff_key
from api_box.io.resume import Resumes
from api_box.io.sealed import SealedHandoffs
from api_box.io.state import STATE


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def parked(registry: CollectorRegistry, result: str) -> float:
    return registry.get_sample_value("tether_box_parked_total", {"result": result}) or 0.0


class Agent:
    """A store:false client on the async SDK that resends the create whose terminal event it did not see
    when the SDK reconnects (the contract of a resume: such a response never happened)."""

    def __init__(self, base_url: str, key: str | None) -> None:
        self.client = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)
        self.headers = {HANDOFF_KEY_HEADER: key} if key is not None else {}
        self.outstanding: dict[str, Any] | None = None
        self.close_codes: list[int] = []
        self.seen: list[str] = []
        self._resends: set[asyncio.Task[None]] = set()

    def connect(self) -> Any:
        return self.client.responses.connect(
            extra_headers=self.headers,
            on_reconnecting=self._on_reconnecting,
            max_retries=4,
            initial_delay=0.01,
            max_delay=0.05,
        )

    def _on_reconnecting(self, event: Any) -> None:
        self.close_codes.append(event.close_code)
        if self.outstanding is not None and event.attempt == 1:
            # The callback is synchronous: the create is queued by the SDK while it reconnects.
            task = asyncio.get_running_loop().create_task(self.conn.response.create(**self.outstanding))
            self._resends.add(task)
            task.add_done_callback(self._resends.discard)

    async def send(self, conn: Any, **create: Any) -> None:
        self.conn = conn
        self.outstanding = {"model": "m", "store": False, **create}
        with contextlib.suppress(ConnectionClosed):  # the socket is gone: resent once reconnected
            await conn.response.create(**self.outstanding)

    async def terminal(self, conn: Any, *, until: str | None = None) -> Any:
        """Iterate (reconnecting as needed) to the outstanding create's terminal event, or to `until`."""
        async for event in conn:
            self.seen.append(event.type)
            if event.type == until:
                return event
            if event.type in ("response.completed", "response.failed", "response.incomplete", "error"):
                self.outstanding = None
                return event
        raise AssertionError("the connection ended")


async def until(check: Any) -> None:
    """Let the box's own tasks run until `check()` holds (it reacts to the cut on its side)."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached")


async def cut(conn: Any) -> None:
    """Cut the TCP connection under the SDK: no close frame, the transport is aborted."""
    ws = conn._connection
    ws.transport.abort()
    await ws.wait_closed()


async def a_cut_loses_the_chain(box: Any, key: str | None) -> None:
    """One turn, a cut, then a continuation on the next socket: previous_response_not_found."""
    agent = Agent(str(box.make_url("/v1")), key)
    async with agent.connect() as conn:
        await agent.send(conn, input="Start.")
        first_id = (await agent.terminal(conn)).response.id
        await cut(conn)
        await agent.send(conn, input="Go on.", previous_response_id=first_id)
        lost = await agent.terminal(conn)
    assert lost.type == "error"
    assert lost.error.code == "previous_response_not_found"
    await agent.client.close()


async def test_a_cut_between_turns_resumes_the_chain_on_the_next_socket(
    box: Any, fake_pool: FakeWorkerPool, registry: CollectorRegistry
) -> None:
    agent = Agent(str(box.make_url("/v1")), new_key())
    async with agent.connect() as conn:
        await agent.send(conn, input="Remember the word pineapple.")
        first = (await agent.terminal(conn)).response
        await cut(conn)
        await agent.send(conn, input="Which word?", previous_response_id=first.id)
        second = await agent.terminal(conn)
        assert fake_pool.dropped == []  # the parked chain was never released
    assert second.type == "response.completed", second
    assert second.response.previous_response_id == first.id
    assert agent.close_codes == [1006]  # the SDK saw no close frame and reconnected
    assert parked(registry, "parked") == 1
    assert parked(registry, "resumed") == 1
    # The chain continued in place: only the new input travelled to the worker, which still held it.
    last = fake_pool.sent[-1]
    assert not last.resent
    assert last.request.held_len > 0
    await agent.client.close()


async def test_a_cut_mid_stream_fails_that_response_cleanly_and_the_resent_create_continues(
    box: Any, fake_pool: FakeWorkerPool, registry: CollectorRegistry
) -> None:
    agent = Agent(str(box.make_url("/v1")), new_key())
    async with agent.connect() as conn:
        await agent.send(conn, input="Start.")
        first = (await agent.terminal(conn)).response
        fake_pool.gate = asyncio.Event()  # the next generation waits after its prefill
        await agent.send(conn, input="A long answer, please.", previous_response_id=first.id)
        created = await agent.terminal(conn, until="response.in_progress")
        await cut(conn)
        await until(lambda: parked(registry, "parked") == 1)
        assert fake_pool.counts["ok"] == 1  # the cut response was cancelled, not completed
        fake_pool.gate.set()
        again = await agent.terminal(conn)  # the SDK reconnects; the create is resent from `first`
    assert again.type == "response.completed", again
    assert again.response.previous_response_id == first.id
    assert again.response.id != created.response.id  # the cut response never completed
    assert parked(registry, "resumed") == 1
    # The cancelled turn left the chain as it was: the resent create is still a delta on it.
    assert [s.resent for s in fake_pool.sent] == [False, False, False]
    assert fake_pool.sent[2].request.held_len == fake_pool.sent[1].request.held_len
    async with aiohttp.ClientSession() as http:  # the cut response is not continuable anywhere
        url = box.make_url("/v1/responses")
        async with http.ws_connect(url, headers={**AUTH, HANDOFF_KEY_HEADER: new_key()}) as ws:
            events = await ws_turn(
                ws, {"input": "x", "store": False, "previous_response_id": created.response.id}
            )
    assert events[-1]["error"]["code"] == "previous_response_not_found"
    await agent.client.close()


async def test_a_real_worker_serves_the_resumed_turn_from_its_cache(real_box: Any) -> None:
    client, _, _ = await real_box()
    agent = Agent(str(client.make_url("/v1")), new_key())
    async with agent.connect() as conn:
        await agent.send(conn, model="tether-sim", input="Remember the word pineapple.", max_output_tokens=64)
        first = (await agent.terminal(conn)).response
        await cut(conn)
        await agent.send(
            conn, model="tether-sim", input="Which word?", previous_response_id=first.id, max_output_tokens=64
        )
        second = (await agent.terminal(conn)).response
    assert second.status == "completed"
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens
    await agent.client.close()


async def test_without_a_key_or_after_a_clean_close_nothing_is_parked(
    box: Any, registry: CollectorRegistry
) -> None:
    url = box.make_url("/v1/responses")
    key = new_key()
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers={**AUTH, HANDOFF_KEY_HEADER: key}) as ws:
            first = (await ws_turn(ws, {"input": "hi", "store": False}))[-1]["response"]
        # A close frame is a deliberate end: the next socket starts empty.
        async with http.ws_connect(url, headers={**AUTH, HANDOFF_KEY_HEADER: key}) as ws:
            events = await ws_turn(ws, {"input": "x", "store": False, "previous_response_id": first["id"]})
        assert events[-1]["error"]["code"] == "previous_response_not_found"
    await a_cut_loses_the_chain(box, None)  # no resume key: as before
    assert parked(registry, "parked") == 0


async def test_a_second_socket_with_the_same_key_takes_over_a_live_one(
    box: Any, fake_pool: FakeWorkerPool, registry: CollectorRegistry
) -> None:
    url = box.make_url("/v1/responses")
    headers = {**AUTH, HANDOFF_KEY_HEADER: new_key()}
    async with aiohttp.ClientSession() as http:
        old = await http.ws_connect(url, headers=headers)
        first = (await ws_turn(old, {"input": "hi", "store": False}))[-1]["response"]
        # A turn the client never sees the end of: the box completes it into a socket that is dead
        # on the client's side (a laptop that slept) and that the box has not seen die.
        create = {"type": "response.create", "model": "m", "input": "and?", "store": False}
        await old.send_str(orjson.dumps({**create, "previous_response_id": first["id"]}).decode())
        await until(lambda: fake_pool.counts["ok"] == 2)
        # The new socket takes the old one over, and may continue from the response before the unseen one.
        async with http.ws_connect(url, headers=headers) as ws:
            events = await ws_turn(ws, {"input": "more", "store": False, "previous_response_id": first["id"]})
        assert events[-1]["type"] == "response.completed"
        while (gone := await old.receive(timeout=5)).type is aiohttp.WSMsgType.TEXT:
            pass  # what the box sent before it took the socket over
        assert gone.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        await old.close()
    assert parked(registry, "resumed") == 1


async def test_each_lane_gets_its_own_response_back(box: Any) -> None:
    url = box.make_url("/v1/responses")
    headers = {**AUTH, HANDOFF_KEY_HEADER: new_key()}
    async with aiohttp.ClientSession() as http:
        old = await http.ws_connect(url, headers=headers)
        a = (await ws_turn(old, {"input": "a", "store": False, "stream_id": "a"}))[-1]["response"]
        b = (await ws_turn(old, {"input": "b", "store": False, "stream_id": "b"}))[-1]["response"]
        old._response.connection.transport.abort()  # type: ignore[union-attr]
        await old.receive(timeout=5)
        async with http.ws_connect(url, headers=headers) as ws:
            for lane, parent in (("a", a), ("b", b)):
                event = {
                    "input": "more",
                    "store": False,
                    "stream_id": lane,
                    "previous_response_id": parent["id"],
                }
                assert (await ws_turn(ws, event))[-1]["type"] == "response.completed"


async def test_the_resume_window_is_a_setting_and_zero_turns_it_off(make_box: BoxFactory) -> None:
    await a_cut_loses_the_chain(await make_box(ws_resume_grace_seconds=0), new_key())


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_parked_connection_expires_after_the_grace_window_on_a_fake_clock(
    box: Any, fake_pool: FakeWorkerPool, registry: CollectorRegistry
) -> None:
    state = box.server.app[STATE]
    clock = FakeClock(1000.0)
    lot = ParkingLot(grace_seconds=60.0, max_entries=8, max_bytes=1 << 20)
    state.resumes = Resumes(lot, metrics=state.metrics, release=fake_pool.dropped.append, clock=clock)
    agent = Agent(str(box.make_url("/v1")), new_key())
    async with agent.connect() as conn:
        await agent.send(conn, input="Start.")
        first = (await agent.terminal(conn)).response
        chain_key = fake_pool.sent[-1].request.cache_key
        await cut(conn)
        await until(lambda: parked(registry, "parked") == 1)
    assert registry.get_sample_value("tether_box_parked_connections") == 1
    assert (registry.get_sample_value("tether_box_parked_bytes") or 0) > 0
    clock.now += 59.9
    assert state.resumes.expire_due() == 0
    clock.now += 0.1
    assert state.resumes.expire_due() == 1
    assert fake_pool.dropped == [chain_key]  # the worker may free the chain now
    assert parked(registry, "expired") == 1
    assert registry.get_sample_value("tether_box_parked_connections") == 0
    assert registry.get_sample_value("tether_box_parked_bytes") == 0
    agent = Agent(str(box.make_url("/v1")), agent.headers[HANDOFF_KEY_HEADER])
    async with agent.connect() as conn:  # too late: the chain is gone
        await agent.send(conn, input="Go on.", previous_response_id=first.id)
        late = await agent.terminal(conn)
    assert late.type == "error"
    assert late.error.code == "previous_response_not_found"
    await agent.client.close()


class MemorySlots:
    """SealedSlots in a dict (what api_box/io/redis_store.py does with SET and GETDEL)."""

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], bytes] = {}

    async def put_sealed(self, tenant: str, slot: str, blob: bytes, ttl_seconds: float) -> None:
        self.blobs[(tenant, slot)] = blob

    async def take_sealed(self, tenant: str, slot: str) -> bytes | None:
        return self.blobs.pop((tenant, slot), None)


async def test_a_drain_seals_what_is_still_parked_for_the_next_box(
    box: Any, registry: CollectorRegistry
) -> None:
    state = box.server.app[STATE]
    key = new_key()
    agent = Agent(str(box.make_url("/v1")), key)
    async with agent.connect() as conn:
        await agent.send(conn, input="Remember the word pineapple.")
        first = (await agent.terminal(conn)).response
        await cut(conn)
        await until(lambda: parked(registry, "parked") == 1)
    slots = MemorySlots()
    handoffs = SealedHandoffs(slots, metrics=state.metrics, ttl_seconds=60.0, max_bytes=1 << 20)
    assert await state.resumes.seal_parked(handoffs) == 1
    handoff = derive(parse_handoff_key(key))
    record = await handoffs.take("alpha", handoff)  # what the next box does at connect
    assert record is not None
    assert record.response_id == first.id
    assert not record.store
    await agent.client.close()
