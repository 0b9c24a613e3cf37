"""The vllm engine (over the fake AsyncLLM of tests/fake_vllm.py) behind the real gRPC worker and the box's
WorkerPool: DescribeModel, the delta protocol, vLLM's cached-token count in Prefill and Done, vLLM's series
and the tool-call parser's counts on the worker's /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from gpu_worker.client import WorkerPool
from gpu_worker.client.types import (
    CallStart,
    Done,
    GenerationRequest,
    Prefill,
    TextDelta,
    ToolSpec,
)
from gpu_worker.config import WorkerSettings
from gpu_worker.engines.vllm_engine import VllmEngine, VllmSettings
from gpu_worker.server.app import WorkerServer
from tests.fake_vllm import BLOCK_SIZE, FakeVllm
from tests.tiny_chatml import IM_END, ids_of, write_tiny_chatml

pytest.importorskip("jinja2", reason="describing a ChatML model renders its template (the torch extra)")

ANSWERS = iter(["The answer is 42.", "Because I said so."])


@asynccontextmanager
async def _serving(fake: FakeVllm, tmp_path: Path) -> AsyncIterator[tuple[WorkerServer, WorkerPool]]:
    model = write_tiny_chatml(tmp_path / "tiny-chat")
    engine = VllmEngine(VllmSettings(model=str(model)), api=fake.api(), metrics_source=fake.registry)
    settings = WorkerSettings(port=0, metrics_port=0, engine="vllm", model_path=str(model), drain_seconds=5.0)
    server = WorkerServer(settings, engine)
    await server.start()
    pool = WorkerPool([server.address])
    await pool.start()
    try:
        yield server, pool
    finally:
        await pool.close()
        await server.stop(drain_seconds=0)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[FakeVllm, WorkerServer, WorkerPool]]:
    fake = FakeVllm(lambda prompt: [ids_of(next(ANSWERS, "done")), [IM_END]])
    async with _serving(fake, tmp_path) as (server, pool):
        yield fake, server, pool


async def _scrape(server: WorkerServer) -> str:
    async with aiohttp.ClientSession() as session, session.get(server.metrics_url or "") as response:
        return await response.text()


async def _turn(pool: WorkerPool, req: GenerationRequest) -> tuple[Prefill, str, Done]:
    events = [event async for event in pool.generate(req)]
    prefill, done = events[0], events[-1]
    assert isinstance(prefill, Prefill)
    assert isinstance(done, Done)
    return prefill, "".join(e.text for e in events if isinstance(e, TextDelta)), done


async def test_two_turns_over_grpc_report_vllm_s_cached_tokens(
    served: tuple[FakeVllm, WorkerServer, WorkerPool],
) -> None:
    fake, server, pool = served
    await pool.describe()
    described = pool.description("tiny-chat")
    assert described is not None
    assert (described.engine, described.chat_format) == ("vllm", "chatml")
    chain = [*ids_of("<|im_start|>user\nWhat is the answer to everything, please?\n"), IM_END]
    first = GenerationRequest(
        "r1", "s1", chain, tokenizer_fingerprint=described.fingerprint, model="tiny-chat"
    )
    prefill, text, done = await _turn(pool, first)
    assert (prefill.cached_tokens, text) == (0, "The answer is 42.")
    assert list(done.output_token_ids) == [*ids_of("The answer is 42."), IM_END]
    chain = [*chain, *done.output_token_ids, *ids_of("\n<|im_start|>user\nWhy?\n"), IM_END]
    held = done.chain_len
    second = GenerationRequest(
        "r2",
        "s1",
        chain,
        held_len=done.chain_len,
        held_digest=done.chain_digest,
        tokenizer_fingerprint=described.fingerprint,
        model="tiny-chat",
    )
    expected = fake.cached_prefix(chain)
    prefill, text, done = await _turn(pool, second)
    assert text == "Because I said so."
    assert expected == held // BLOCK_SIZE * BLOCK_SIZE > 0  # turn 1's full KV blocks
    assert prefill.cached_tokens == done.cached_tokens == expected
    # The worker sent vLLM the whole chain although the box sent only the turn's tokens.
    assert fake.requests[-1].prompt == chain
    scraped = await _scrape(server)
    assert "vllm:prefix_cache_hits_total" in scraped
    assert 'tether_worker_prefill_tokens_total{kind="cached"} ' + f"{float(expected)}" in scraped


async def test_the_tool_call_parser_s_counts_are_worker_metrics(tmp_path: Path) -> None:
    call = '<tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n</tool_call>'
    other = '<tool_call>\n{"name": "rm", "arguments": {}}\n</tool_call>'  # not offered: text
    fake = FakeVllm(lambda prompt: [ids_of(other + call), [IM_END]])
    async with _serving(fake, tmp_path) as (server, pool):
        await pool.describe()
        described = pool.description("tiny-chat")
        assert described is not None
        chain = [*ids_of("<|im_start|>user\nRead a.txt, please.\n"), IM_END]
        request = GenerationRequest(
            "r1",
            "s1",
            chain,
            tools=(ToolSpec("read_file"),),
            tokenizer_fingerprint=described.fingerprint,
            model="tiny-chat",
        )
        events = [event async for event in pool.generate(request)]
        assert [e.name for e in events if isinstance(e, CallStart)] == ["read_file"]
        done = events[-1]
        assert isinstance(done, Done)
        assert done.finish_reason == "tool_call"
        scraped = await _scrape(server)
    for result, count in (("call", 1), ("malformed", 0), ("text", 1)):
        assert f'tether_worker_tool_calls_total{{result="{result}"}} {float(count)}' in scraped
