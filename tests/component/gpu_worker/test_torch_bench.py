"""benchmarks/torch_bench.py runs end to end on a tiny model, and its calibration loads into the sim.

Only the shape of the output is checked here; the figures themselves are the benchmark's business."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("torch", reason="the torch extra is not installed (pip install '.[torch]')")

from gpu_worker.config import WorkerSettings
from gpu_worker.core.timing import TimingModel

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "torch_bench.py"
TINY = [
    "--preset",
    "tiny",
    "--device",
    "cpu",
    "--threads",
    "1",
    "--reps",
    "1",
    "--batches",
    "1,2",
    "--output",
    "4",
]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("torch_bench", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


async def test_the_benchmark_reports_latency_per_history_and_decode_rates() -> None:
    result = await _bench().main([*TINY, "--histories", "16,48", "--turn", "8"])
    assert [row["history_tokens"] for row in result["history"]] == [16, 48]
    assert all(row["reuse_turn_s"] > 0 and row["recompute_turn_s"] > 0 for row in result["history"])
    assert [row["batch"] for row in result["decode"]] == [1, 2]
    assert result["measured_on"]["device"].startswith("CPU")


async def test_calibration_writes_sim_timing_the_worker_can_load(tmp_path: Path) -> None:
    out = tmp_path / "timing.json"
    await _bench().main([*TINY, "--prefill-short", "8", "--prefill-long", "40", "--calibrate", str(out)])
    written = json.loads(out.read_text())
    timing = TimingModel(**written["timing"])
    assert timing.decode_step_base_seconds + timing.decode_step_per_sequence_seconds > 0
    settings = WorkerSettings.from_env(written["env"])
    assert settings.timing == timing
