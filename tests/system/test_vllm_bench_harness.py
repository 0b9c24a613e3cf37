"""benchmarks/vllm_bench.py's harness on the sim engine (real worker and box processes): it starts the
cluster, runs the agent workload in both modes and reports each turn. What it reports on vLLM is not
tested here: no vLLM and no GPU on the test machines (docs/vllm.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vllm_bench.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vllm_bench", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


async def test_the_harness_reports_each_turn_of_both_modes(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    argv = ["--engine", "sim", "--turns", "3", "--output-tokens", "32", "--log-dir", str(tmp_path)]
    result = await _bench().main([*argv, "--tool-output-chars", "2000", "--json", str(out)])
    assert out.is_file()
    assert result["measured_on"]["engine"] == "sim"
    for mode in ("ws", "http"):
        turns = result[mode]
        assert [t["turn"] for t in turns] == [1, 2, 3]
        assert turns[0]["hist"] < turns[1]["hist"] < turns[2]["hist"]  # the history grows
        assert turns[0]["cached"] == 0
        assert all(t["cached"] > 0 for t in turns[1:])  # later turns reuse the earlier ones
        assert all(0 < t["ttft"] <= t["turn_s"] and t["out"] >= 1 for t in turns)


def test_the_vllm_engine_needs_a_model() -> None:
    with pytest.raises(SystemExit) as exc:
        _bench().parse_args(["--engine", "vllm"])
    assert exc.value.code == 2
