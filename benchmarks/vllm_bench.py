"""vLLM behind a local Tether cluster: per-turn latency against history length with prefix reuse, the share
of prompt tokens vLLM served from its prefix cache, and output tokens per second, on the agent workload.

NOT RUN IN THIS REPOSITORY. It needs a machine with an NVIDIA GPU and vLLM (`pip install -e '.[vllm]'`);
the machines the repository is developed and tested on have neither, so no figure in the docs comes from
it (docs/vllm.md says what has and has not been run against real vLLM). `--engine sim` runs the same
harness on the sim engine, on any machine; its figures say nothing about vLLM.

    python benchmarks/vllm_bench.py --model-path Qwen/Qwen2.5-7B-Instruct
    python benchmarks/vllm_bench.py --model-path /models/Qwen2.5-7B-Instruct --turns 30 --modes ws,http \\
        --tool-output-chars 8000 --json vllm.json
    python benchmarks/vllm_bench.py --engine sim --turns 4        # the harness itself, no vLLM

What runs: one `tether-gpu-worker --engine vllm --model-path ...` (TETHER_WORKER_VLLM_* from this
environment pass through) and one `tether-api-box` in front of it, both on loopback, each mode on a fresh
pair (so one mode cannot warm vLLM's prefix cache for the next); this script is the client. Process logs
go to `--log-dir`.

The agent workload: instructions, three tool definitions and a user message that asks for a code review,
then `--turns` turns. Each turn answers the model's function calls with tool outputs, or, when the model
answered in text, sends a user message asking for the next file; either way the input carries about
`--tool-output-chars` characters of real source text (the Python standard library's), so the history grows
turn by turn. Output is capped at `--output-tokens`, sampling is greedy (temperature 0).

Modes:
- ws: WebSocket mode, store:false: each turn sends only its new items and previous_response_id; the worker
  holds the chain and sends vLLM the whole chain as token ids, whose KV blocks vLLM's prefix cache holds;
- http: HTTP full context, stream:true, store:false: each turn posts the whole history; the box renders it
  again and vLLM's prefix cache still serves what matches.

Per turn: `hist` = prompt tokens (usage.input_tokens), `cached` = usage.input_tokens_details.cached_tokens
(vLLM's own count), `share` = cached / hist, `ttft` = request sent to the first output delta, `turn` =
request sent to response.completed, `out` = output tokens, `tok/s` = (out - 1) / (turn - ttft), the decode
rate seen by the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp

KEY = "tether-dev-key"
INSTRUCTIONS = (
    "You are a coding agent reviewing a Python code base. Use the tools to read files and search. After "
    "each file, say in two sentences what it does and one thing you would improve."
)
TOOLS = [
    {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": {key: {"type": "string"}}, "required": [key]},
    }
    for name, description, key in (
        ("read_file", "Read a file of the repository.", "path"),
        ("search", "Search the repository for a regular expression.", "pattern"),
        ("run_tests", "Run the tests under a directory.", "directory"),
    )
]
FIRST_MESSAGE = "Review the standard library modules I give you, one file at a time. Start with the first."


# ------------------------------------------------------------------------------------------ processes


@dataclass
class Process:
    popen: subprocess.Popen[str]
    log: TextIO
    address: str

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.log.close()


def start_process(
    cmd: list[str], env: dict[str, str], announce: str, log_path: Path, timeout: float
) -> Process:
    """Start `cmd` with its output in `log_path`; wait for the line starting with `announce` (the address
    is its third word). vLLM logs to stdout too, so the whole log is scanned, not its first line."""
    log = log_path.open("w", encoding="utf-8")
    popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(announce):
                return Process(popen, log, line.split()[2])
        if popen.poll() is not None:
            break
        time.sleep(0.5)
    popen.kill()
    popen.wait()
    log.close()
    tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
    raise RuntimeError(f"{cmd[0]} {cmd[2]} did not start (see {log_path}):\n{tail}")


@dataclass
class Cluster:
    worker: Process
    box: Process

    @classmethod
    def start(cls, args: argparse.Namespace, log_dir: Path, mode: str) -> Cluster:
        env = {**os.environ, "TETHER_WORKER_LOG_LEVEL": "WARNING", "TETHER_BOX_LOG_LEVEL": "WARNING"}
        python = sys.executable
        worker_cmd = [
            python,
            "-m",
            "gpu_worker",
            "--port",
            "0",
            "--metrics-port",
            "-1",
            "--engine",
            args.engine,
        ]
        if args.engine == "vllm":
            worker_cmd += ["--model-path", args.model_path]
        worker = start_process(
            worker_cmd, env, "tether-gpu-worker serving", log_dir / f"worker-{mode}.log", args.start_timeout
        )
        try:
            box = start_process(
                [python, "-m", "api_box", "--port", "0", "--admin-port", "-1", "--dev", "--workers",
                 worker.address],
                {**env, "TETHER_BOX_MAX_CHAIN_TOKENS": "1000000"},
                "tether-api-box serving",
                log_dir / f"box-{mode}.log",
                120,
            )  # fmt: skip
        except BaseException:
            worker.stop()
            raise
        return cls(worker, box)

    def stop(self) -> None:
        self.box.stop()
        self.worker.stop()


# ------------------------------------------------------------------------------------------- workload


def source_texts(chars: int) -> Iterator[tuple[str, str]]:
    """(file name, its first `chars` characters) of the standard library's modules, in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if len(text) >= chars // 2:
            yield path.name, text[:chars]


@dataclass
class Agent:
    """The client side of one agent run: its history (for full context) and the next input."""

    texts: Iterator[tuple[str, str]]
    history: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    previous: str | None = None

    def first(self) -> None:
        name, text = next(self.texts)
        self.pending = [_user(f"{FIRST_MESSAGE}\n\n# {name}\n{text}")]
        self.history = list(self.pending)

    def answer(self, response: dict[str, Any]) -> None:
        """Take a completed response; the next input answers its calls, or asks for the next file."""
        self.previous = response["id"]
        self.history += response["output"]
        calls = [item for item in response["output"] if item["type"] == "function_call"]
        self.pending = []
        for call in calls:
            name, text = next(self.texts)
            self.pending.append({"type": "function_call_output", "call_id": call["call_id"], "output": text})
        if not calls:
            name, text = next(self.texts)
            self.pending.append(_user(f"Next file:\n\n# {name}\n{text}"))
        self.history += self.pending

    def body(self, mode: str, model: str, output_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "instructions": INSTRUCTIONS,
            "tools": TOOLS,
            "store": False,
            "temperature": 0,
            "max_output_tokens": output_tokens,
        }
        if mode == "http":
            return {**body, "input": self.history, "stream": True}
        if self.previous is None:
            return {**body, "input": self.pending}
        return {**body, "input": self.pending, "previous_response_id": self.previous}


def _user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


@dataclass
class Turn:
    turn: int
    hist: int
    cached: int
    share: float
    ttft: float
    turn_s: float
    out: int
    tokens_per_s: float
    calls: int


def _turn(index: int, response: dict[str, Any], ttft: float | None, wall: float) -> Turn:
    usage = response["usage"]
    hist, out = usage["input_tokens"], usage["output_tokens"]
    cached = usage["input_tokens_details"]["cached_tokens"]
    first = wall if ttft is None else ttft
    decode = wall - first
    calls = sum(item["type"] == "function_call" for item in response["output"])
    rate = (out - 1) / decode if out > 1 and decode > 0 else 0.0
    return Turn(index, hist, cached, cached / hist if hist else 0.0, first, wall, out, rate, calls)


_DELTAS = ("response.output_text.delta", "response.function_call_arguments.delta")


async def run_ws(base_url: str, model: str, agent: Agent, args: argparse.Namespace) -> list[Turn]:
    turns: list[Turn] = []
    url = base_url.replace("http", "ws", 1) + "/v1/responses"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers={"Authorization": f"Bearer {KEY}"}, max_msg_size=0) as ws,
    ):
        for index in range(1, args.turns + 1):
            frame = json.dumps({"type": "response.create", **agent.body("ws", model, args.output_tokens)})
            ttft: float | None = None
            start = time.perf_counter()
            await ws.send_str(frame)
            while True:
                event = json.loads((await ws.receive()).data)
                if ttft is None and event["type"] in _DELTAS:
                    ttft = time.perf_counter() - start
                if event["type"] in ("response.completed", "response.failed", "response.incomplete", "error"):
                    break
            wall = time.perf_counter() - start
            if event["type"] not in ("response.completed", "response.incomplete"):
                raise RuntimeError(f"turn {index} failed: {event}")
            turns.append(_turn(index, event["response"], ttft, wall))
            agent.answer(event["response"])
    return turns


async def run_http(base_url: str, model: str, agent: Agent, args: argparse.Namespace) -> list[Turn]:
    turns: list[Turn] = []
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        for index in range(1, args.turns + 1):
            body = json.dumps(agent.body("http", model, args.output_tokens))
            ttft: float | None = None
            final: dict[str, Any] | None = None
            start = time.perf_counter()
            async with session.post(base_url + "/v1/responses", data=body, headers=headers) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"turn {index}: HTTP {resp.status} {(await resp.read())[:300]!r}")
                async for raw in resp.content:
                    line = raw.decode().strip()
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if ttft is None and event["type"] in _DELTAS:
                        ttft = time.perf_counter() - start
                    if event["type"] in ("response.completed", "response.incomplete", "response.failed"):
                        final = event
            wall = time.perf_counter() - start
            if final is None or final["type"] == "response.failed":
                raise RuntimeError(f"turn {index} failed: {final}")
            turns.append(_turn(index, final["response"], ttft, wall))
            agent.answer(final["response"])
    return turns


async def model_name(base_url: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(base_url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}) as resp,
    ):
        listing = await resp.json()
    return str(listing["data"][0]["id"])


async def run_mode(mode: str, args: argparse.Namespace, log_dir: Path) -> list[Turn]:
    cluster = await asyncio.to_thread(Cluster.start, args, log_dir, mode)
    try:
        base_url = cluster.box.address
        model = await model_name(base_url)
        agent = Agent(source_texts(args.tool_output_chars))
        agent.first()
        runner = run_ws if mode == "ws" else run_http
        return await runner(base_url, model, agent, args)
    finally:
        await asyncio.to_thread(cluster.stop)


# ------------------------------------------------------------------------------------------- report


def machine(engine: str) -> dict[str, str]:
    """What the figures were measured on: the GPU (nvidia-smi), vLLM's version, the CPU and OS."""
    info = {"engine": engine, "cpu": platform.processor() or platform.machine(), "os": platform.platform()}
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, check=False)
        info["gpu"] = done.stdout.strip().replace("\n", "; ") or "unknown"
    else:
        info["gpu"] = "none (nvidia-smi not found)"
    if engine == "vllm":
        from importlib import metadata

        try:
            info["vllm"] = metadata.version("vllm")
        except metadata.PackageNotFoundError:
            info["vllm"] = "not installed"
    return info


_HEADER = (
    f"{'turn':>4} {'hist':>7} {'cached':>7} {'share':>6} {'ttft s':>8} {'turn s':>8} {'out':>5} {'tok/s':>7}"
)


def print_table(mode: str, turns: list[Turn], engine: str) -> None:
    print(f"\n{mode}: per turn")
    print(_HEADER)
    for t in turns:
        print(
            f"{t.turn:>4} {t.hist:>7} {t.cached:>7} {t.share:>6.1%} {t.ttft:>8.3f} {t.turn_s:>8.3f} "
            f"{t.out:>5} {t.tokens_per_s:>7.1f}"
        )
    later = turns[1:] or turns
    cached = sum(t.cached for t in later) / max(sum(t.hist for t in later), 1)
    cache = "vLLM's prefix cache" if engine == "vllm" else f"the {engine} worker's cache"
    print(f"{mode}: turns 2..{len(turns)}: {cached:.1%} of prompt tokens served from {cache}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--engine", choices=("vllm", "sim"), default="vllm", help="sim: the harness only")
    parser.add_argument("--model-path", default="", help="vllm: a model directory or Hugging Face name")
    parser.add_argument("--modes", default="ws,http", help="comma-separated: ws, http")
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--tool-output-chars", type=int, default=4000, help="characters each turn adds")
    parser.add_argument("--output-tokens", type=int, default=128, help="max_output_tokens per turn")
    parser.add_argument("--start-timeout", type=float, default=1800.0, help="seconds for vLLM to load")
    parser.add_argument("--log-dir", default="", help="process logs (default: a temporary directory)")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - {"ws", "http"}:
        parser.error("--modes takes ws and/or http")
    if args.engine == "vllm" and not args.model_path:
        parser.error("--model-path is required with the vllm engine")
    if args.turns < 1 or args.tool_output_chars < 1 or args.output_tokens < 1:
        parser.error("--turns, --tool-output-chars and --output-tokens must be positive")
    args.modes = modes
    return args


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    log_dir, measured_on = await asyncio.to_thread(_prepare, args)
    print(f"measured on: {measured_on}; logs in {log_dir}")
    results: dict[str, Any] = {"measured_on": measured_on, "args": {**vars(args), "modes": args.modes}}
    for mode in args.modes:
        turns = await run_mode(mode, args, log_dir)
        print_table(mode, turns, args.engine)
        results[mode] = [asdict(t) for t in turns]
    if args.json:
        text = json.dumps(results, indent=2) + "\n"
        await asyncio.to_thread(Path(args.json).write_text, text, encoding="utf-8")
    return results


def _prepare(args: argparse.Namespace) -> tuple[Path, dict[str, str]]:
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="vllm-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir, machine(args.engine)


if __name__ == "__main__":
    asyncio.run(main())
