"""Admin endpoints, stateless replicas, DNS membership and the tether-router command line."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
from conftest import StartBoxes, StartRouter, router_settings

from router.app import url
from router.io.sources import DnsSource

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = aiohttp.ClientTimeout(total=10)
METRIC_NAMES = [
    "tether_router_bytes_total",
    "tether_router_connections",
    "tether_router_routed_total",
    "tether_router_rejected_total",
    "tether_router_upstream_failures_total",
    "tether_router_upstream_connect_seconds_bucket",
    "tether_router_ring_members",
    "tether_router_ring_version_info",
    "tether_router_ring_changes_total",
    "tether_build_info",
    "process_cpu_seconds_total",
]


async def test_admin_endpoints(boxes: StartBoxes, routers: StartRouter) -> None:
    started = await boxes(2)
    running = await routers(router_settings(",".join(b.spec for b in started) + "@2"))
    assert running.metrics_url is not None
    admin = running.metrics_url.removesuffix("/metrics")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.get(running.metrics_url) as response:
            text = await response.text()
        for name in METRIC_NAMES:
            assert f"\n{name}" in text, name
        assert f'tether_router_ring_version_info{{version="{running.router.ring.version}"}} 1.0' in text
        assert 'tether_build_info{component="router"' in text
        async with session.get(f"{admin}/debug/ring") as response:
            ring = await response.json()
        assert ring["version"] == running.router.ring.version
        assert ring["vnodes_per_weight"] == 8192
        assert [m["name"] for m in ring["members"]] == ["box-0", "box-1"]
        assert [m["weight"] for m in ring["members"]] == [1.0, 2.0]
        assert [m["vnodes"] for m in ring["members"]] == [8192, 16384]
        assert abs(sum(m["share"] for m in ring["members"]) - 1) < 1e-4
        assert ring["members"][0]["address"] == f"127.0.0.1:{started[0].port}"
        assert ring["routing_keys"][-2:] == ["header:X-Session-Id", "query:session_id"]
        async with session.get(f"{admin}/livez") as response:
            assert response.status == 200
        async with session.get(f"{admin}/readyz") as response:
            assert response.status == 200
        running.router.draining = True  # what a drain does first
        async with session.get(f"{admin}/readyz") as response:
            assert response.status == 503
            assert "draining" in await response.text()


async def test_the_admin_server_can_be_off(boxes: StartBoxes, routers: StartRouter) -> None:
    started = await boxes(1)
    running = await routers(router_settings(started[0].spec, admin_port=-1))
    assert running.metrics_url is None
    assert running.banner() == f"tether-router serving {running.url} metrics off"


async def test_two_replicas_route_every_key_identically(boxes: StartBoxes, routers: StartRouter) -> None:
    """Stateless replicas: the same membership gives the same ring version and the same box for every key,
    even when the replicas learned the members in a different order."""
    started = await boxes(4)
    specs = [b.spec for b in started]
    first = await routers(router_settings(",".join(specs)))
    second = await routers(router_settings(",".join(reversed(specs))))
    assert first.router.ring.version == second.router.ring.version
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for i in range(40):
            key = f"agent-run-{i}"
            reached = []
            for running in (first, second):
                headers = {"X-Session-Id": key}
                async with session.post(f"{running.url}/v1/responses", data=b"{}", headers=headers) as r:
                    reached.append((await r.json())["box"])
            assert reached[0] == reached[1] == first.router.ring.lookup(key)
        assert {first.router.ring.lookup(f"agent-run-{i}") for i in range(40)} == {b.name for b in started}


async def test_dns_source_follows_the_records() -> None:
    answers = [
        [("10.0.0.1", 8080), ("10.0.0.2", 8080)],
        [("10.0.0.2", 8080), ("10.0.0.1", 8080)],  # same set, other order: no publish
        socket.gaierror(socket.EAI_AGAIN, "temporary failure"),  # keep the last members
        [("10.0.0.3", 8080)],
        socket.gaierror(socket.EAI_NONAME, "no such name"),  # no ready pods: empty
    ]
    published: list[list[str]] = []
    done = asyncio.Event()

    async def resolve(host: str, port: int) -> list[tuple[str, int]]:
        assert (host, port) == ("api-box-headless", 8080)
        answer = answers.pop(0) if answers else []
        if not answers:
            done.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    source = DnsSource("api-box-headless", 8080, 0.001, resolve)
    task = asyncio.create_task(source.run(lambda members: published.append([m.name for m in members])))
    async with asyncio.timeout(5):
        await done.wait()
        while len(published) < 3:
            await asyncio.sleep(0.001)
    task.cancel()
    assert published == [["10.0.0.1:8080", "10.0.0.2:8080"], ["10.0.0.3:8080"], []]


async def test_dns_source_resolves_for_real() -> None:
    published: list[list[str]] = []
    got = asyncio.Event()

    def publish(members: object) -> None:
        published.append([m.name for m in members])  # type: ignore[attr-defined]
        got.set()

    task = asyncio.create_task(DnsSource("localhost", 8080, 60, None).run(publish))
    async with asyncio.timeout(10):
        await got.wait()
    task.cancel()
    assert "127.0.0.1:8080" in published[0]


async def test_the_command_line_prints_one_line_and_drains_on_sigterm(boxes: StartBoxes) -> None:
    started = await boxes(2)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TETHER_ROUTER_ADMIN_PORT": "0"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "--port", "0", "--boxes", ",".join(b.spec for b in started),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode()
        words = line.split()
        assert words[:2] == ["tether-router", "serving"], line
        assert words[3] == "metrics", line
        base, metrics = words[2], words[4]
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.post(f"{base}/v1/responses", data=b"{}", headers={"X-Session-Id": "k"}) as r:
                assert (await r.json())["box"] in {b.name for b in started}
            async with session.get(metrics) as r:
                assert "tether_router_routed_total" in await r.text()
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
        assert await process.stdout.read() == b""  # exactly one line on stdout
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_command_line_refuses_bad_settings() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "--boxes", "nonsense",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        stdout, stderr = await process.communicate()
    assert process.returncode == 2
    assert stdout == b""
    assert b"TETHER_ROUTER" in stderr or b"expected name=host:port" in stderr


def test_url_brackets_ipv6() -> None:
    assert url("::1", 80, "/metrics") == "http://[::1]:80/metrics"
    assert url("127.0.0.1", 80) == "http://127.0.0.1:80"
