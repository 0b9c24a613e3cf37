"""`tether-api-box` as a process: the one start-up line, probes and /metrics on their ports, clean SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from importlib import metadata

import aiohttp
import orjson


async def test_the_entry_point_prints_one_line_serves_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api_box", "--port", "0", "--admin-port", "0", "--dev", "--box-id", "proc-box",
        "--workers", "127.0.0.1:9", "--log-level", "INFO", "--log-format", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("TETHER_BOX_")},
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        words = line.split()
        assert words[:2] == ["tether-api-box", "serving"]
        assert words[3] == "metrics"
        base, metrics = words[2], words[4]
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/livez") as resp:
                assert resp.status == 200
                assert resp.headers["X-Tether-Box"] == "proc-box"
            async with session.get(
                base + "/v1/models", headers={"Authorization": "Bearer tether-dev-key"}
            ) as resp:
                assert resp.status == 200
            async with session.get(metrics) as resp:
                text = await resp.text()
                # The installed distribution's version, so two versions on the dashboards mean a rollout.
                assert (
                    f'tether_build_info{{component="api_box",version="{metadata.version("tether")}"}}' in text
                )
                assert "tether_box_websocket_connections 0.0" in text
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert await proc.stdout.read() == b""  # exactly one line on stdout
        assert proc.stderr is not None
        logged = [orjson.loads(line) for line in (await proc.stderr.read()).splitlines()]
        assert ("draining", "info", "api_box") in {(e["msg"], e["level"], e["component"]) for e in logged}
        assert all({"ts", "level", "logger", "msg", "component"} <= entry.keys() for entry in logged)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_bad_settings_fail_loudly() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api_box", "--port", "0", "--workers", "nohost",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"workers" in err
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api_box", "--port", "0", "--admin-port", "-1", "--workers", "127.0.0.1:9",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("TETHER_BOX_")},
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"no API keys configured" in err
