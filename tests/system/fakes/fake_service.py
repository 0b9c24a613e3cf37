"""A stand-in for tether-gpu-worker / tether-api-box / tether-router that honours their CLI contract.

Used by the supervisor tests to exercise process handling without the real services. It listens on the
port it is given (0: a free one), prints the real programs' serving line, answers gRPC health (worker) or
GET /readyz (box, router), and prints `fake-args <json>` so tests can check what the launcher passed.

Behaviour knobs (environment): FAKE_IGNORE_SIGTERM=1 (needs SIGKILL), FAKE_SILENT=1 (never prints the
serving line), FAKE_EXIT=<status> (exits right away with that status), FAKE_CRASH_AFTER=<seconds> (serves,
then exits with status 3 that long after its serving line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

PROGRAMS = {"worker": "tether-gpu-worker", "box": "tether-api-box", "router": "tether-router"}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=PROGRAMS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args, _ = parser.parse_known_args(argv)
    return args


async def serve_worker(host: str, port: int) -> tuple[str, grpc.aio.Server]:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return f"{host}:{bound}", server


async def serve_http(host: str, port: int) -> tuple[str, web.AppRunner]:
    app = web.Application()
    app.router.add_get("/readyz", lambda _request: web.Response(text="ok"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return f"http://{host}:{bound}", runner


async def main() -> int:
    args = parse(sys.argv[1:])
    if "FAKE_EXIT" in os.environ:
        print("fake exiting as asked", flush=True)
        return int(os.environ["FAKE_EXIT"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if os.environ.get("FAKE_IGNORE_SIGTERM") != "1":
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    redis_url = os.environ.get("TETHER_BOX_REDIS_URL")
    print("fake-args " + json.dumps({"argv": sys.argv[1:], "redis_url": redis_url}), flush=True)
    print("a line on stderr", file=sys.stderr, flush=True)
    if args.kind == "worker":
        address, server = await serve_worker(args.host, args.port)
        metrics = "off"
    else:
        address, runner = await serve_http(args.host, args.port)
        metrics = f"{address}/metrics"
    if os.environ.get("FAKE_SILENT") != "1":
        print(f"{PROGRAMS[args.kind]} serving {address} metrics {metrics}", flush=True)
    crash_after = float(os.environ.get("FAKE_CRASH_AFTER", "inf"))
    try:
        await asyncio.wait_for(stop.wait(), None if crash_after == float("inf") else crash_after)
    except TimeoutError:
        print("fake crashing as asked", flush=True)
        return 3
    print("fake stopping", flush=True)
    if args.kind == "worker":
        await server.stop(None)
    else:
        await runner.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
