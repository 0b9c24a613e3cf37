"""Timing model of one GPU running a continuous-batching engine. Pure: the caller passes `now`.

The model (a vLLM-style scheduler, simplified):
- A request costs `request_overhead_seconds` (API, tokenization, scheduling) before it may be admitted;
  then it waits in a bounded FIFO queue (full: QueueFull) for one of `max_running` batch slots.
- The engine runs steps. Each step carries one token for every running sequence that is decoding, and
  fills the rest of its `max_batched_tokens` budget with prompt tokens of admitted sequences (chunked
  prefill, in admission order). A step lasts
      decode_step_base_seconds                       (reading the weights, paid by every step)
    + decode_step_per_sequence_seconds * decoding    (attention and sampling per sequence)
    + prefill_seconds_per_token * prefill tokens     (compute-bound prompt processing)
- The step that finishes a sequence's prompt also samples its first output token (as vLLM does);
  each later step adds one token; a sequence leaves the batch after its last token.

Defaults: Llama-3.1-8B-Instruct, BF16, on one H100 SXM 80GB (vLLM-class engine).
- Decode: NVIDIA's published NIM benchmark for Llama-3.1-8b-instruct on H100
  (https://docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance, NIM 1.8.0) reports an inter-token
  latency of 4.63 ms at concurrency 1, 5.19 ms at 25 and 7.57 ms at 100: base 4.6 ms + 0.03 ms per
  running sequence reproduces that (4.63 / 5.35 / 7.6 ms).
- Prefill: 2 x 8.03e9 FLOP per token; the same page reports Llama-3.3-70B FP8 on 2 x H100 prefilling
  5000 tokens in 406.77 ms (TTFT at concurrency 1), i.e. about 44% of the H100's dense peak. At 44% of the
  BF16 peak (989 TFLOP/s) an 8B model prefills one token per 37 us (about 27k tokens/s).
- Overhead 3 ms: the remainder of the NIM 8B TTFT at concurrency 1 (10.26 ms) after one base step and a
  short prompt.
- Bounds: `max_running` 1024 and `max_batched_tokens` 8192 are vLLM's own defaults for the OpenAI
  server on GPUs with >= 70 GiB other than the A100 (vllm/engine/arg_utils.py, get_batch_defaults:
  --max-num-seqs 1024, --max-num-batched-tokens 8192). The queue bound (4096) is Tether's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from gpu_worker.core.errors import QueueFull

__all__ = ["BatchScheduler", "Step", "StepOutcome", "TimingModel"]


@dataclass(frozen=True, slots=True)
class TimingModel:
    """Costs and bounds of the simulated engine (seconds); see the module docstring for the sources."""

    prefill_seconds_per_token: float = 37e-6
    decode_step_base_seconds: float = 4.6e-3
    decode_step_per_sequence_seconds: float = 0.03e-3
    request_overhead_seconds: float = 3e-3
    max_running: int = 1024
    max_queue: int = 4096
    max_batched_tokens: int = 8192

    def __post_init__(self) -> None:
        times = (
            self.prefill_seconds_per_token,
            self.decode_step_base_seconds,
            self.decode_step_per_sequence_seconds,
            self.request_overhead_seconds,
        )
        if any(t < 0 for t in times):
            raise ValueError("timing costs must be >= 0")
        if self.max_running < 1 or self.max_queue < 0 or self.max_batched_tokens < self.max_running:
            raise ValueError("need max_running >= 1, max_queue >= 0, max_batched_tokens >= max_running")

    def decode_step_seconds(self, batch_size: int) -> float:
        """Duration of a step that decodes `batch_size` sequences (and prefills nothing)."""
        return self.decode_step_base_seconds + self.decode_step_per_sequence_seconds * batch_size

    def step_seconds(self, decoding: int, prefill_tokens: int) -> float:
        """Duration of a step with `decoding` sequences and `prefill_tokens` prompt tokens."""
        return self.decode_step_seconds(decoding) + self.prefill_seconds_per_token * prefill_tokens

    def scaled(self, speed: float) -> TimingModel:
        """All costs multiplied by `speed` (1 = calibrated real time, 0 = no delays at all)."""
        if speed < 0:
            raise ValueError("speed must be >= 0")
        return replace(
            self,
            prefill_seconds_per_token=self.prefill_seconds_per_token * speed,
            decode_step_base_seconds=self.decode_step_base_seconds * speed,
            decode_step_per_sequence_seconds=self.decode_step_per_sequence_seconds * speed,
            request_overhead_seconds=self.request_overhead_seconds * speed,
        )


@dataclass(slots=True)
class _Sequence:
    seq_id: int
    prefill_left: int
    decode_left: int
    ready_at: float
    admitted_at: float = 0.0
    prefilled: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """One engine step: how long it runs and what it carries."""

    duration: float
    prefill: tuple[tuple[int, int], ...]  # (seq_id, prompt tokens processed in this step)
    decode: tuple[int, ...]  # seq ids that each produce one token


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What a finished step produced."""

    prefilled: tuple[tuple[int, float], ...]  # (seq_id, seconds it waited for a batch slot)
    tokens: tuple[int, ...]  # seq ids that produced one output token each
    finished: tuple[int, ...]  # seq ids that left the batch


class BatchScheduler:
    """Continuous batching over a TimingModel. The shell loops: `plan(now)` → sleep `step.duration` →
    `complete(step, now)`; with no step to run it sleeps until `next_ready_at()` or a `submit`."""

    def __init__(self, model: TimingModel) -> None:
        self.model = model
        self._waiting: deque[_Sequence] = deque()
        self._running: dict[int, _Sequence] = {}  # admission order

    @property
    def running(self) -> int:
        """Sequences holding a batch slot."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Sequences queued for a slot (including those still in their request overhead)."""
        return len(self._waiting)

    def submit(self, seq_id: int, prefill_tokens: int, decode_tokens: int, now: float) -> None:
        """Queue a sequence; QueueFull when `max_queue` sequences already wait."""
        if len(self._waiting) >= self.model.max_queue:
            raise QueueFull(f"the worker's admission queue is full ({self.model.max_queue} waiting)")
        ready = now + self.model.request_overhead_seconds
        self._waiting.append(_Sequence(seq_id, max(prefill_tokens, 0), max(decode_tokens, 0), ready))

    def cancel(self, seq_id: int) -> None:
        """Forget a sequence wherever it is (no-op when unknown or finished)."""
        if self._running.pop(seq_id, None) is None:
            for seq in self._waiting:
                if seq.seq_id == seq_id:
                    self._waiting.remove(seq)
                    break

    def next_ready_at(self) -> float | None:
        """When the head of the queue becomes admissible (None: nothing waits, or no free slot)."""
        if not self._waiting or len(self._running) >= self.model.max_running:
            return None
        return self._waiting[0].ready_at

    def plan(self, now: float) -> Step | None:
        """Admit what may start by `now` and return the next step (None: nothing to run now)."""
        self._admit(now)
        decode = tuple(s.seq_id for s in self._running.values() if s.prefilled)
        budget = self.model.max_batched_tokens - len(decode)
        prefill: list[tuple[int, int]] = []
        for seq in self._running.values():
            if seq.prefilled:
                continue
            take = min(seq.prefill_left, budget)
            if take < seq.prefill_left and take == 0:
                break
            prefill.append((seq.seq_id, take))
            budget -= take
        if not decode and not prefill:
            return None
        tokens = sum(take for _, take in prefill)
        return Step(self.model.step_seconds(len(decode), tokens), tuple(prefill), decode)

    def _admit(self, now: float) -> None:
        while (
            self._waiting and len(self._running) < self.model.max_running and self._waiting[0].ready_at <= now
        ):
            seq = self._waiting.popleft()
            seq.admitted_at = now
            self._running[seq.seq_id] = seq

    def complete(self, step: Step, now: float) -> StepOutcome:
        """Apply a step that ran until `now` (sequences cancelled meanwhile are skipped)."""
        prefilled: list[tuple[int, float]] = []
        tokens: list[int] = []
        for seq_id, take in step.prefill:
            seq = self._running.get(seq_id)
            if seq is None:
                continue
            seq.prefill_left -= take
            if seq.prefill_left == 0:
                seq.prefilled = True
                prefilled.append((seq_id, seq.admitted_at - seq.ready_at))
                if seq.decode_left:
                    seq.decode_left -= 1
                    tokens.append(seq_id)
        for seq_id in step.decode:
            seq = self._running.get(seq_id)
            if seq is not None and seq.decode_left:
                seq.decode_left -= 1
                tokens.append(seq_id)
        finished = tuple(s.seq_id for s in self._running.values() if s.prefilled and not s.decode_left)
        for seq_id in finished:
            del self._running[seq_id]
        return StepOutcome(tuple(prefilled), tuple(tokens), finished)
