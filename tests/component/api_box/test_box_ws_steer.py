"""`response.steer` over WebSocket with the official openai SDK (`conn.response.steer`): the running response
ends incomplete (steered) keeping what it generated, a successor continues the chain at once on the same
lane, prefilled warm; the documented failures; a response that stops for tool outputs leaves the steer
pending for the client's explicit continuation."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from box_fakes import FakeWorkerPool, Reply
from conftest import KEY, BoxFactory
from prometheus_client import CollectorRegistry

from gpu_worker.client import GenerationRequest

TERMINAL = ("response.completed", "response.incomplete", "response.failed", "error")
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    }
]


def client_for(box: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=KEY, base_url=str(box.make_url("/v1")), max_retries=0)


async def events_until(conn: Any, kind: str, *, count: int = 1) -> list[Any]:
    """Events up to the `count`-th of type `kind`."""
    seen: list[Any] = []
    async for event in conn:
        seen.append(event)
        if event.type == kind:
            count -= 1
            if count == 0:
                return seen
    raise AssertionError("the connection ended")


def steer_count(registry: CollectorRegistry, result: str) -> float:
    return registry.get_sample_value("tether_box_steers_total", {"result": result}) or 0.0


async def test_a_steered_response_ends_incomplete_and_a_warm_successor_continues_it(real_box: Any) -> None:
    client, _, _ = await real_box(speed=1.0)  # the H100 timing model: a long answer takes seconds
    sdk = client_for(client)
    create = {"model": "tether-sim", "store": False, "max_output_tokens": 40}
    async with sdk.responses.connect() as conn:
        await conn.response.create(
            **create, input="Tell me a long story.", metadata={"tether.answer_tokens": "2000"}
        )
        started = await events_until(conn, "response.output_text.delta")
        steered_id = started[0].response.id
        await conn.response.steer(input="Stop. Just say done.", previous_response_id=steered_id)
        seen = await events_until(conn, "response.incomplete", count=2)  # both end at 40 tokens at most
    kinds = [event.type for event in seen]
    accepted = seen[kinds.index("response.steer.accepted")]
    assert accepted.steer.previous_response_id == steered_id
    assert accepted.steer.id.startswith("steer_")
    steered = seen[kinds.index("response.incomplete")].response
    assert steered.id == steered_id
    assert steered.incomplete_details.reason == "steered"
    assert steered.output[0].status == "incomplete"
    kept = steered.output[0].content[0].text
    assert 0 < steered.usage.output_tokens < 40  # stopped early, what it generated kept
    assert kept
    # The successor starts at once from the same chain plus the steering input.
    assert (
        kinds.index("response.created", kinds.index("response.incomplete"))
        == kinds.index("response.incomplete") + 1
    )
    successor = seen[-1].response
    assert successor.previous_response_id == steered_id
    assert successor.incomplete_details.reason == "max_output_tokens"  # its own end, not steered
    assert successor.metadata == {"tether.answer_tokens": "2000"}  # it inherits the steered one's settings
    # Prefilled warm: the worker still held the steered chain, its partial output included.
    assert (
        successor.usage.input_tokens_details.cached_tokens
        >= steered.usage.input_tokens + steered.usage.output_tokens
    )
    # Sequence numbers of the steered response's stream include the accepted event.
    numbers = [e.sequence_number for e in started + seen[: kinds.index("response.incomplete") + 1]]
    assert numbers == list(range(len(numbers)))
    await sdk.close()


async def gated_turn(conn: Any, fake_pool: FakeWorkerPool, **create: Any) -> str:
    """Start a create whose generation waits at the fake worker's gate; the running response's id."""
    fake_pool.gate = asyncio.Event()
    await conn.response.create(model="m", store=False, input="Go.", **create)
    last = "response.in_progress" if create.get("generate", True) else "response.created"  # no more yet
    return str((await events_until(conn, last))[-1].response.id)


async def test_the_steer_is_accepted_then_a_successor_runs_on_the_same_lane(
    box: Any, fake_pool: FakeWorkerPool, registry: CollectorRegistry
) -> None:
    fake_pool.delta_repeat = 50
    sdk = client_for(box)
    async with sdk.responses.connect() as conn:
        await conn.send(
            {"type": "response.create", "model": "m", "store": False, "input": "Go.", "stream_id": "a"}
        )
        fake_pool.gate = asyncio.Event()
        running = (await events_until(conn, "response.created"))[-1]
        await conn.response.steer(
            input=[{"role": "user", "content": "Shorter."}], previous_response_id=running.response.id
        )
        accepted = (await events_until(conn, "response.steer.accepted"))[-1]
        assert accepted.stream_id == "a"  # the lane of the steered response
        fake_pool.gate.set()
        seen = await events_until(conn, "response.completed")
    successor = seen[-1]
    assert successor.stream_id == "a"
    assert successor.response.previous_response_id == running.response.id
    assert fake_pool.stops == [running.response.id]
    assert not fake_pool.sent[-1].resent  # the successor is a delta on the steered chain
    assert fake_pool.sent[-1].request.agent.user_messages == 2
    assert steer_count(registry, "accepted") == 1
    assert steer_count(registry, "committed") == 1
    await sdk.close()


def failure(event: Any, code: str) -> Any:
    assert event.type == "response.steer.failed", event
    assert event.error.code == code
    assert event.error.type == "invalid_request_error"
    return event


async def test_steers_are_refused_with_the_documented_codes(
    box: Any, fake_pool: FakeWorkerPool, registry: CollectorRegistry
) -> None:
    sdk = client_for(box)
    async with sdk.responses.connect() as conn:
        await conn.response.steer(input="x", previous_response_id="resp_unknown")
        unknown = failure(await conn.recv(), "response_not_found")
        assert unknown.steer.id is None  # no id is allocated before acceptance
        assert unknown.steer.input == "x"  # returned as sent
        assert unknown.stream_id is None
        for bad in (
            {"input": [{"role": "assistant", "content": "no"}]},
            {"input": []},
            {"input": "x", "stream_id": "a"},
            {"input": [{"type": "function_call_output", "call_id": "c", "output": "o"}]},
        ):
            await conn.send({"type": "response.steer", "previous_response_id": "resp_x", **bad})
            assert failure(await conn.recv(), "invalid_input").steer.previous_response_id == "resp_x"
        await conn.response.create(model="m", store=False, input="Hi.")
        done = (await events_until(conn, "response.completed"))[-1].response
        await conn.response.steer(input="x", previous_response_id=done.id)
        failure(await conn.recv(), "response_already_completed")
        warm_up = await gated_turn(conn, fake_pool, generate=False)
        await conn.response.steer(input="x", previous_response_id=warm_up)
        failure(await conn.recv(), "steering_not_supported")
        fake_pool.gate.set()  # type: ignore[union-attr]
        await events_until(conn, "response.completed")
    assert registry.get_sample_value("tether_box_steer_failures_total", {"code": "invalid_input"}) == 4
    await sdk.close()


async def test_too_many_pending_steers_and_steering_turned_off(
    make_box: BoxFactory, fake_pool: FakeWorkerPool
) -> None:
    box = await make_box(ws_max_pending_steers=1)
    sdk = client_for(box)
    async with sdk.responses.connect() as conn:
        running = await gated_turn(conn, fake_pool)
        await conn.response.steer(input="one", previous_response_id=running)
        assert (await conn.recv()).type == "response.steer.accepted"
        await conn.response.steer(input="two", previous_response_id=running)
        failure(await conn.recv(), "too_many_pending_steers")
        fake_pool.gate.set()  # type: ignore[union-attr]
        await events_until(conn, "response.completed")  # the successor
    await sdk.close()
    off = client_for(await make_box(ws_steering=False))
    async with off.responses.connect() as conn:
        running = await gated_turn(conn, fake_pool)
        await conn.response.steer(input="one", previous_response_id=running)
        failure(await conn.recv(), "steering_not_supported")
        fake_pool.gate.set()  # type: ignore[union-attr]
        last = (await events_until(conn, "response.completed"))[-1]
        assert last.response.id == running  # no successor
    await off.close()


async def test_a_successor_that_cannot_be_created_returns_the_steer(
    make_box: BoxFactory, fake_pool: FakeWorkerPool, registry: CollectorRegistry
) -> None:
    sdk = client_for(await make_box(max_chain_tokens=400))
    async with sdk.responses.connect() as conn:
        running = await gated_turn(conn, fake_pool)
        await conn.response.steer(input="word " * 2000, previous_response_id=running)  # past the chain limit
        accepted = (await events_until(conn, "response.steer.accepted"))[-1]
        fake_pool.gate.set()  # type: ignore[union-attr]
        seen = await events_until(conn, "response.steer.failed")
        failed = failure(seen[-1], "successor_creation_failed")
        assert failed.steer.id == accepted.steer.id
        assert "chain" in failed.error.message
        assert not any(e.type == "error" for e in seen)  # the client sent no create: no error event
        # The steered response is still the lane's to continue from.
        await conn.response.create(model="m", store=False, input="Go on.", previous_response_id=running)
        assert (await events_until(conn, "response.completed"))[-1].response.previous_response_id == running
    assert steer_count(registry, "failed") == 1
    await sdk.close()


def calls_once(req: GenerationRequest) -> Reply:
    """A tool call on the first turn, a text answer after it."""
    if req.agent.last_item_is_tool_output:
        return Reply(text="Done.")
    return Reply(text=None, calls=[(f"call_{req.request_id[-6:]}", "read_file", '{"path": "a"}')])


@pytest.mark.parametrize("continue_from_it", [True, False])
async def test_a_response_that_stops_for_a_tool_output_leaves_the_steer_pending(
    box: Any, fake_pool: FakeWorkerPool, registry: CollectorRegistry, continue_from_it: bool
) -> None:
    fake_pool.script = calls_once
    sdk = client_for(box)
    async with sdk.responses.connect() as conn:
        running = await gated_turn(conn, fake_pool, tools=TOOLS)
        await conn.response.steer(input="Also check b.", previous_response_id=running)
        accepted = (await events_until(conn, "response.steer.accepted"))[-1]
        fake_pool.gate.set()  # type: ignore[union-attr]
        seen = await events_until(conn, "response.steer.pending")
        completed = seen[-2]
        assert completed.type == "response.completed"  # pending follows the completed response
        pending = seen[-1]
        assert pending.steer.id == accepted.steer.id
        assert pending.reason == "waiting_for_required_input"
        (stub,) = pending.required_input
        call = completed.response.output[0]
        assert (stub.type, stub.call_id, stub.name) == ("function_call_output", call.call_id, "read_file")
        users_before = fake_pool.sent[-1].request.agent.user_messages
        output = [{"type": "function_call_output", "call_id": call.call_id, "output": "a = 1"}]
        if continue_from_it:
            await conn.response.create(
                model="m", store=False, tools=TOOLS, previous_response_id=running, input=output
            )
            done = (await events_until(conn, "response.completed"))[-1]
            assert done.response.previous_response_id == running
            assert fake_pool.sent[-1].request.agent.user_messages == users_before + 1  # the steer, prepended
            assert steer_count(registry, "committed") == 1
        else:
            await conn.response.create(model="m", store=False, input="Something else.")
            seen = await events_until(conn, "response.completed")
            failed = failure(
                next(e for e in seen if e.type == "response.steer.failed"), "response_not_active"
            )
            assert failed.steer.id == accepted.steer.id
    await sdk.close()
