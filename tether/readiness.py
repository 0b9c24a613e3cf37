"""Readiness checks the launcher polls after a child announced its address.

worker: grpc.health.v1 Check("") == SERVING · box, router: GET /readyz → 200 · redis: PING → +PONG.
Each attempt has its own short timeout; the caller bounds the whole wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tether.errors import ReadinessTimeout

ATTEMPT_TIMEOUT = 1.0
FIRST_INTERVAL = 0.02
MAX_INTERVAL = 0.25

Check = Callable[[float], Awaitable[bool]]  # one attempt, given its timeout; True when ready


async def poll_until_ready(what: str, check: Check, within: float) -> None:
    """Run `check` until it returns True; ReadinessTimeout after `within` seconds. Attempt errors retry."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    interval = FIRST_INTERVAL
    last_error = "not ready"
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise ReadinessTimeout(f"{what} not ready within {within:g} s ({last_error})")
        try:
            attempt = min(ATTEMPT_TIMEOUT, remaining)
            if await asyncio.wait_for(check(attempt), attempt):
                return
            last_error = "not ready"
        except (OSError, TimeoutError, aiohttp.ClientError, grpc.RpcError) as exc:
            last_error = f"{type(exc).__name__}: {exc}".strip()[:200]
        await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))
        interval = min(interval * 2, MAX_INTERVAL)


async def wait_grpc_serving(target: str, within: float) -> None:
    """Wait until the gRPC health service at `target` reports SERVING for the whole server."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def check(attempt_timeout: float) -> bool:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=attempt_timeout)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        await poll_until_ready(f"gRPC health of {target}", check, within)


async def wait_http_ok(url: str, within: float) -> None:
    """Wait until GET `url` answers 200."""
    async with aiohttp.ClientSession() as session:

        async def check(attempt_timeout: float) -> bool:
            budget = aiohttp.ClientTimeout(total=attempt_timeout)
            async with session.get(url, timeout=budget, allow_redirects=False) as reply:
                return reply.status == 200

        await poll_until_ready(url, check, within)


async def wait_redis_pong(host: str, port: int, within: float) -> None:
    """Wait until Redis at host:port answers PING."""

    async def check(attempt_timeout: float) -> bool:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return await reader.readline() == b"+PONG\r\n"
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await poll_until_ready(f"redis at {host}:{port}", check, within)
