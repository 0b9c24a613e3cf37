"""The timing model on a fake clock: the scheduler is driven by hand, time only moves when we say so."""

from __future__ import annotations

import itertools

import pytest

from gpu_worker.core.errors import QueueFull
from gpu_worker.core.timing import BatchScheduler, StepOutcome, TimingModel

MODEL = TimingModel(
    prefill_seconds_per_token=0.001,
    decode_step_base_seconds=0.010,
    decode_step_per_sequence_seconds=0.001,
    request_overhead_seconds=0.005,
    max_running=2,
    max_queue=2,
    max_batched_tokens=100,
)


class FakeClock:
    """Runs the scheduler the way the sim engine's step loop does, advancing `now` by step durations."""

    def __init__(self, scheduler: BatchScheduler) -> None:
        self.scheduler = scheduler
        self.now = 0.0
        self.prefilled_at: dict[int, float] = {}
        self.queue_seconds: dict[int, float] = {}
        self.tokens_at: dict[int, list[float]] = {}
        self.finished_at: dict[int, float] = {}

    def run(self, until: float = 1e9) -> None:
        while self.now < until:
            step = self.scheduler.plan(self.now)
            if step is None:
                ready = self.scheduler.next_ready_at()
                if ready is None:
                    return
                self.now = ready
                continue
            self.now += step.duration
            self.record(self.scheduler.complete(step, self.now))

    def record(self, outcome: StepOutcome) -> None:
        for seq_id, waited in outcome.prefilled:
            self.prefilled_at[seq_id] = self.now
            self.queue_seconds[seq_id] = waited
        for seq_id in outcome.tokens:
            self.tokens_at.setdefault(seq_id, []).append(self.now)
        for seq_id in outcome.finished:
            self.finished_at[seq_id] = self.now


def test_one_request_pays_overhead_then_prefill_then_one_step_per_token() -> None:
    clock = FakeClock(BatchScheduler(MODEL))
    clock.scheduler.submit(1, prefill_tokens=50, decode_tokens=3, now=0.0)
    clock.run()
    # overhead 5 ms, then a step of base 10 ms + 50 prompt tokens at 1 ms (first token sampled with it)
    assert clock.prefilled_at[1] == pytest.approx(0.005 + 0.010 + 0.050)
    ticks = clock.tokens_at[1]
    assert ticks[0] == pytest.approx(0.065)
    assert [b - a for a, b in itertools.pairwise(ticks)] == pytest.approx([0.011, 0.011])
    assert clock.finished_at[1] == pytest.approx(ticks[-1])
    assert clock.queue_seconds[1] == 0.0
    assert clock.scheduler.running == clock.scheduler.waiting == 0


def test_running_sequences_share_decode_steps() -> None:
    clock = FakeClock(BatchScheduler(MODEL))
    clock.scheduler.submit(1, 0, 4, now=0.0)
    clock.scheduler.submit(2, 0, 4, now=0.0)
    clock.run()
    assert clock.tokens_at[1] == pytest.approx(clock.tokens_at[2])
    gaps = [b - a for a, b in zip(clock.tokens_at[1], clock.tokens_at[1][1:], strict=False)]
    assert gaps == pytest.approx([MODEL.decode_step_seconds(2)] * 3)


def test_excess_requests_queue_fifo_and_report_their_wait() -> None:
    clock = FakeClock(BatchScheduler(MODEL))
    for seq_id in (1, 2):
        clock.scheduler.submit(seq_id, 0, 2, now=0.0)
    clock.run(until=0.006)  # past the overhead: 1 and 2 hold both slots
    clock.scheduler.submit(3, 0, 2, now=clock.now)
    clock.run()
    assert clock.queue_seconds[3] > 0
    assert clock.prefilled_at[3] >= max(clock.finished_at[1], clock.finished_at[2])


def test_a_full_queue_refuses() -> None:
    scheduler = BatchScheduler(MODEL)
    scheduler.submit(1, 0, 1, now=0.0)
    scheduler.submit(2, 0, 1, now=0.0)
    with pytest.raises(QueueFull) as exc:
        scheduler.submit(3, 0, 1, now=0.0)
    assert exc.value.code == "RESOURCE_EXHAUSTED"


def test_long_prompts_are_prefilled_in_chunks_alongside_decodes() -> None:
    clock = FakeClock(BatchScheduler(MODEL))
    clock.scheduler.submit(1, 0, 10, now=0.0)
    clock.run(until=0.02)  # 1 is decoding
    clock.scheduler.submit(2, 250, 1, now=clock.now)
    steps = []
    while 2 not in clock.prefilled_at:
        step = clock.scheduler.plan(clock.now)
        assert step is not None
        if step.prefill:
            steps.append(step)
            assert sum(take for _, take in step.prefill) + len(step.decode) <= MODEL.max_batched_tokens
            assert 1 in step.decode  # the decoding sequence keeps its token per step
        clock.now += step.duration
        clock.record(clock.scheduler.complete(step, clock.now))
    assert [take for s in steps for _, take in s.prefill] == [99, 99, 52]


def test_cancel_frees_the_slot_and_drops_the_queue_entry() -> None:
    scheduler = BatchScheduler(MODEL)
    scheduler.submit(1, 0, 100, now=0.0)
    scheduler.submit(2, 0, 100, now=0.0)
    assert scheduler.plan(1.0) is not None
    scheduler.submit(3, 0, 1, now=1.0)
    scheduler.cancel(3)
    assert scheduler.waiting == 0
    scheduler.cancel(1)
    scheduler.cancel(1)  # idempotent
    assert scheduler.running == 1
    step = scheduler.plan(2.0)
    assert step is not None
    assert step.prefill == ((2, 0),)


def test_a_step_of_a_sequence_cancelled_meanwhile_is_ignored() -> None:
    scheduler = BatchScheduler(MODEL)
    scheduler.submit(1, 10, 5, now=0.0)
    step = scheduler.plan(1.0)
    assert step is not None
    scheduler.cancel(1)
    assert scheduler.complete(step, 2.0) == StepOutcome((), (), ())


def test_prefill_only_sequences_leave_after_their_prompt() -> None:
    clock = FakeClock(BatchScheduler(MODEL))
    clock.scheduler.submit(1, 20, 0, now=0.0)
    clock.run()
    assert 1 in clock.prefilled_at
    assert 1 not in clock.tokens_at
    assert clock.finished_at[1] == clock.prefilled_at[1]


def test_speed_scales_every_delay_and_zero_removes_them() -> None:
    assert MODEL.scaled(2).decode_step_seconds(3) == pytest.approx(2 * MODEL.decode_step_seconds(3))
    instant = MODEL.scaled(0)
    assert instant.step_seconds(100, 10_000) == 0.0
    assert instant.request_overhead_seconds == 0.0
    assert instant.max_running == MODEL.max_running
    with pytest.raises(ValueError, match="speed"):
        MODEL.scaled(-1)


def test_defaults_reproduce_the_published_h100_figures() -> None:
    model = TimingModel()
    # NIM Llama-3.1-8B on H100: ITL 4.63 ms at concurrency 1, 5.19 ms at 25, 7.57 ms at 100
    for batch, itl in ((1, 4.63e-3), (25, 5.19e-3), (100, 7.57e-3)):
        assert model.decode_step_seconds(batch) == pytest.approx(itl, rel=0.05)
    assert 1 / model.prefill_seconds_per_token == pytest.approx(27_000, rel=0.05)


@pytest.mark.parametrize(
    "kwargs",
    [{"prefill_seconds_per_token": -1.0}, {"max_running": 0}, {"max_batched_tokens": 1, "max_running": 2}],
)
def test_bad_models_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must be|need"):
        TimingModel(**kwargs)  # type: ignore[arg-type]
