"""A real Codex CLI session's bytes on the wire per turn: WebSocket mode against its own HTTP requests.

    .venv/bin/python benchmarks/codex_bytes.py [--base-url URL] [--prompt TEXT] [--runs 3]
                                               [--out results/codex_bytes.json]

Needs the Codex CLI that scripts/test installs into .tools/codex (tether/codex.py). Without --base-url a
local cluster is started (tether.supervisor.LocalCluster: router, one box, one `sim` worker at speed 0, no
Redis). Each run is one `codex exec` of the prompt, with Codex pointed at a recording TCP proxy in front
of the router, in three configurations:

- `http`: `supports_websockets = false`: Codex POSTs /v1/responses (SSE back), the whole context on every
  turn, as it does against any Responses server without WebSocket mode;
- `ws`: WebSocket mode with the upgrade's Sec-WebSocket-Extensions removed by the proxy, so no
  permessage-deflate is negotiated: frames carry the JSON as is;
- `ws+deflate`: WebSocket mode as Codex offers it (permessage-deflate when the box negotiates it; the
  negotiated extension is recorded from the 101 answer).

The proxy records every byte each way with its arrival time. Afterwards the client stream is parsed:
HTTP requests (head + body) and, after an upgrade, WebSocket frames (header + payload, a message's frames
summed; compressed messages are inflated to read them). A "request" is a POST /v1/responses or a
`response.create` message; the server's bytes are charged to the request they follow. `turn` requests
generate; Codex's first WebSocket message is a warm-up (`generate: false`). The summary compares
client→server wire bytes per turn after a run's first turn: what WebSocket mode sends against what the
same Codex session sends over HTTP. The sim model calls a few random tools with noise arguments before it
answers (Codex answers each call with an error), so runs differ a little; figures are medians over runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tether.codex import CODEX_BIN, CODEX_VERSION, MISSING, run_exec  # noqa: E402
from tether.config import DEV_API_KEY, ClusterSpec  # noqa: E402
from tether.supervisor import LocalCluster  # noqa: E402

CONFIGS = ("http", "ws", "ws+deflate")
_HEAD_END = b"\r\n\r\n"


@dataclass
class Connection:
    """What went through one proxied TCP connection: the client's bytes and every chunk's time."""

    client: bytearray = field(default_factory=bytearray)
    server_head: bytearray = field(default_factory=bytearray)  # the first KB the server sent
    client_chunks: list[tuple[float, int]] = field(default_factory=list)  # (time, end offset)
    server_chunks: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes)


class RecordingProxy:
    """A TCP proxy that records both directions; optionally strips Sec-WebSocket-Extensions."""

    def __init__(self, target: tuple[str, int], *, strip_extensions: bool) -> None:
        self.target = target
        self.strip = strip_extensions
        self.connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection()
        self.connections.append(conn)
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await asyncio.gather(self._up(conn, reader, up_writer), self._down(conn, up_reader, writer))
        finally:
            writer.close()
            up_writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _up(self, conn: Connection, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        pending = bytearray()
        first = True
        while data := await src.read(65536):
            if first:  # hold the first request head back until it is whole, to strip the extension offer
                pending += data
                if _HEAD_END not in pending:
                    continue
                data, first = bytes(self._without_extensions(pending)), False
            conn.client += data
            conn.client_chunks.append((time.monotonic(), len(conn.client)))
            dst.write(data)
            await dst.drain()
        with contextlib.suppress(OSError):  # the other side may be gone already
            dst.write_eof()

    async def _down(self, conn: Connection, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            if len(conn.server_head) < 1024:
                conn.server_head += data[: 1024 - len(conn.server_head)]
            conn.server_chunks.append((time.monotonic(), len(data)))
            dst.write(data)
            await dst.drain()
        with contextlib.suppress(OSError):  # the other side may be gone already
            dst.write_eof()

    def _without_extensions(self, raw: bytearray) -> bytearray:
        if not self.strip:
            return raw
        head, _, rest = bytes(raw).partition(_HEAD_END)
        lines = [
            line for line in head.split(b"\r\n") if not line.lower().startswith(b"sec-websocket-extensions:")
        ]
        return bytearray(b"\r\n".join(lines) + _HEAD_END + rest)


@dataclass
class Request:
    """One model request as it crossed the wire."""

    started: float
    kind: str  # http | ws
    up_wire: int  # client→server bytes: HTTP head + body, or the frames' headers + payloads
    up_payload: int  # the JSON as the client wrote it (inflated when compressed)
    compressed: bool
    generate: bool
    previous_response_id: bool
    input_items: int
    tools_bytes: int  # of the JSON: the tools array
    down_wire: int = 0  # server→client bytes until the next request


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _describe(body: bytes, started: float, kind: str, wire: int, compressed: bool) -> Request | None:
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or ("input" not in obj and "model" not in obj):
        return None
    items = obj.get("input")
    return Request(
        started=started,
        kind=kind,
        up_wire=wire,
        up_payload=len(body),
        compressed=compressed,
        generate=obj.get("generate", True) is not False,
        previous_response_id=bool(obj.get("previous_response_id")),
        input_items=len(items) if isinstance(items, list) else 1,
        tools_bytes=len(json.dumps(obj.get("tools", []), separators=(",", ":"))),
    )


def _time_at(conn: Connection, offset: int) -> float:
    for at, end in conn.client_chunks:
        if end > offset:
            return at
    return conn.client_chunks[-1][0]


def parse(conn: Connection) -> tuple[list[Request], str | None]:
    """The model requests of one connection, and the permessage-deflate extension the server granted."""
    data, pos, requests = bytes(conn.client), 0, []
    while pos < len(data):
        end = data.find(_HEAD_END, pos)
        if end < 0:
            break
        start_line, headers = _headers(data[pos:end])
        body_start = end + len(_HEAD_END)
        if headers.get("upgrade", "").lower() == "websocket":
            _, answer = _headers(bytes(conn.server_head).partition(_HEAD_END)[0])
            granted = answer.get("sec-websocket-extensions")
            requests += _frames(conn, data, body_start, granted, head_bytes=body_start - pos)
            return requests, granted
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, after = _dechunk(data, body_start)
        else:
            length = int(headers.get("content-length", "0"))
            body, after = data[body_start : body_start + length], body_start + length
        if start_line.startswith("POST") and "/responses" in start_line:
            plain = "content-encoding" not in headers  # Codex 0.171 sends plain JSON to custom providers
            request = _describe(body if plain else b"", _time_at(conn, pos), "http", after - pos, False)
            if request is not None:
                requests.append(request)
        pos = after
    return requests, None


def _dechunk(data: bytes, pos: int) -> tuple[bytes, int]:
    """A chunked body starting at `pos`: its bytes and the offset just past it."""
    body = bytearray()
    while True:
        line_end = data.index(b"\r\n", pos)
        size = int(data[pos:line_end].split(b";")[0], 16)
        pos = line_end + 2
        if size == 0:
            return bytes(body), data.index(_HEAD_END, pos - 2) + len(_HEAD_END)
        body += data[pos : pos + size]
        pos += size + 2


def _frames(conn: Connection, data: bytes, pos: int, granted: str | None, head_bytes: int) -> list[Request]:
    inflater = zlib.decompressobj(-15)
    no_takeover = granted is not None and "client_no_context_takeover" in granted
    requests: list[Request] = []
    parts: list[bytes] = []
    wire, start, compressed = 0, pos, False
    while pos + 2 <= len(data):
        b0, b1 = data[pos], data[pos + 1]
        length, header = b1 & 0x7F, 2
        if length == 126:
            length, header = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif length == 127:
            length, header = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        masked = bool(b1 & 0x80)
        mask = data[pos + header : pos + header + 4] if masked else b""
        header += 4 if masked else 0
        if pos + header + length > len(data):
            break
        payload = bytes(data[pos + header : pos + header + length])
        if masked:
            payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        opcode = b0 & 0x0F
        if opcode in (0x1, 0x2) or (opcode == 0 and parts):
            if opcode:
                start, wire, compressed, parts = pos, 0, bool(b0 & 0x40), []
            parts.append(payload)
            wire += header + length
            if b0 & 0x80:  # FIN: the message is whole
                message = b"".join(parts)
                if compressed:
                    if no_takeover:
                        inflater = zlib.decompressobj(-15)
                    message = inflater.decompress(message + b"\x00\x00\xff\xff")
                request = _describe(message, _time_at(conn, start), "ws", wire, compressed)
                if request is not None:
                    if not requests:
                        request.up_wire += head_bytes  # the upgrade request, charged to the first message
                    requests.append(request)
                parts = []
        pos += header + length
    return requests


def charge_server_bytes(requests: list[Request], connections: list[Connection]) -> None:
    """Give each request the server→client bytes that arrived after it and before the next one."""
    ordered = sorted(requests, key=lambda r: r.started)
    chunks = sorted(chunk for conn in connections for chunk in conn.server_chunks)
    index = 0
    for at, size in chunks:
        while index + 1 < len(ordered) and ordered[index + 1].started <= at:
            index += 1
        if ordered and ordered[index].started <= at:
            ordered[index].down_wire += size


async def one_run(base_url: str, config: str, prompt: str, scratch: Path) -> dict[str, Any]:
    host, port = base_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    proxy = RecordingProxy((host, int(port)), strip_extensions=config == "ws")
    proxy_port = await proxy.start()
    try:
        run = await asyncio.to_thread(
            run_exec,
            prompt,
            base_url=f"http://127.0.0.1:{proxy_port}/v1",
            api_key=DEV_API_KEY,
            model="tether-sim",
            home=scratch / "home",
            workdir=scratch / "work",
            websockets=config != "http",
            timeout=300,
        )
        await asyncio.sleep(0.2)  # the last bytes of the last answer
    finally:
        await proxy.stop()
    requests: list[Request] = []
    granted = None
    for conn in proxy.connections:
        found, extension = parse(conn)
        requests += found
        granted = granted or extension
    charge_server_bytes(requests, proxy.connections)
    requests.sort(key=lambda r: r.started)
    return {
        "config": config,
        "completed": run.completed,
        "extension": granted,
        "connections": len(proxy.connections),
        "requests": [asdict(r) for r in requests],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs of the per-run means over turns after the first (warm-ups excluded)."""

    def per_run(run: dict[str, Any], key: str) -> float:
        turns = [r for r in run["requests"] if r["generate"]][1:]
        return statistics.fmean(r[key] for r in turns) if turns else 0.0

    def first(run: dict[str, Any], key: str) -> float:
        turns = [r for r in run["requests"] if r["generate"]]
        return float(turns[0][key]) if turns else 0.0

    keys = ("up_wire", "up_payload", "down_wire", "tools_bytes", "input_items")
    return {
        "runs": len(runs),
        "completed": sum(bool(run["completed"]) for run in runs),
        "turns": statistics.median(sum(r["generate"] for r in run["requests"]) for run in runs),
        "warmups": statistics.median(sum(not r["generate"] for r in run["requests"]) for run in runs),
        "first_up_wire": statistics.median(first(run, "up_wire") for run in runs),
        "extension": next((run["extension"] for run in runs if run["extension"]), None),
        **{f"later_{key}": statistics.median(per_run(run, key) for run in runs) for key in keys},
    }


def report(summary: dict[str, dict[str, Any]]) -> str:
    http = summary["http"]["later_up_wire"] or 1.0
    lines = [
        "| Codex over | turns | first turn, up | later turns, up (wire) | payload (JSON) | down | vs HTTP |",
        "|---|---|---|---|---|---|---|",
    ]
    for config in CONFIGS:
        s = summary[config]
        lines.append(
            f"| {config} | {s['turns']:g} | {s['first_up_wire'] / 1000:.1f} KB | "
            f"{s['later_up_wire'] / 1000:.2f} KB | {s['later_up_payload'] / 1000:.1f} KB | "
            f"{s['later_down_wire'] / 1000:.1f} KB | {s['later_up_wire'] / http:.3f} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", help="a running cluster's /v1 URL (default: start one)")
    parser.add_argument("--prompt", default="Say hello.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "codex_bytes.json")
    args = parser.parse_args()
    if not CODEX_BIN.exists():
        raise SystemExit(MISSING)
    runs: dict[str, list[dict[str, Any]]] = {config: [] for config in CONFIGS}

    async def measure(base_url: str) -> None:
        for index in range(args.runs):
            for config in CONFIGS:
                with tempfile.TemporaryDirectory(prefix="codex-bytes-") as scratch:
                    result = await one_run(base_url, config, args.prompt, Path(scratch))
                runs[config].append(result)
                print(f"run {index + 1} {config}: {len(result['requests'])} requests, "
                      f"completed={result['completed']}", file=sys.stderr)  # fmt: skip

    if args.base_url:
        await measure(args.base_url)
    else:
        spec = ClusterSpec(boxes=1, workers=1, router=True, redis=None, speed=0, port=0, stop_timeout=10)
        async with LocalCluster(spec, sink=lambda *_: None) as cluster:
            await measure(cluster.base_url)
    summary = {config: summarize(runs[config]) for config in CONFIGS}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    args.out.write_text(
        json.dumps({"codex": CODEX_VERSION, "machine": machine, "summary": summary, "runs": runs}, indent=1)
    )
    print(report(summary))
    print(f"\nCodex {CODEX_VERSION}; {machine}; raw data in {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
