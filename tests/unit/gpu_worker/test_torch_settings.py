"""Settings of the torch engine come from TETHER_WORKER_TORCH_* and fail loudly on bad values."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the torch extra is not installed (pip install '.[torch]')")

from gpu_worker.engines.torch_engine import TorchSettings  # noqa: E402


def test_settings_from_the_environment() -> None:
    settings = TorchSettings.from_env(
        {
            "TETHER_WORKER_TORCH_PRESET": "tiny",
            "TETHER_WORKER_TORCH_KV_BUDGET_BYTES": "1048576",
            "TETHER_WORKER_TORCH_MAX_BATCH": "3",
            "TETHER_WORKER_TORCH_DEVICE": "cpu",
            "TETHER_WORKER_TORCH_DTYPE": "bfloat16",
            "TETHER_OTHER": "ignored",
        }
    )
    assert settings == TorchSettings(
        preset="tiny", kv_budget_bytes=1 << 20, max_batch=3, device="cpu", dtype="bfloat16"
    )
    assert settings.torch_device() == torch.device("cpu")
    assert settings.torch_dtype(torch.device("cpu")) == torch.bfloat16
    assert TorchSettings().torch_dtype(torch.device("cpu")) == torch.float32
    assert TorchSettings().torch_dtype(torch.device("cuda")) == torch.bfloat16


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TETHER_WORKER_TORCH_MAX_BATCH": "many"}, "not a valid int"),
        ({"TETHER_WORKER_TORCH_MAX_BATCH": "0"}, "max_batch must be positive"),
        ({"TETHER_WORKER_TORCH_PRESET": "huge"}, "unknown model preset"),
        ({"TETHER_WORKER_TORCH_DTYPE": "int8"}, "dtype"),
        ({"TETHER_WORKER_TORCH_DEVICE": "tpu"}, "device"),
        ({"TETHER_WORKER_TORCH_THREADS": "-1"}, "threads"),
    ],
)
def test_bad_settings_fail_loudly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TorchSettings.from_env(env)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_asking_for_cuda_without_cuda_fails_loudly() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        TorchSettings(device="cuda").torch_device()


def test_model_path_selects_the_checkpoint_of_the_torch_engine() -> None:
    from gpu_worker.__main__ import build_parser
    from gpu_worker.config import SettingsError, WorkerSettings
    from gpu_worker.engines.torch_engine import TorchEngine
    from gpu_worker.server.app import build_engine

    args = build_parser().parse_args(["--engine", "torch", "--model-path", "/models/smol.gguf"])
    assert args.model_path == "/models/smol.gguf"
    env = {"TETHER_WORKER_ENGINE": "torch", "TETHER_WORKER_MODEL_PATH": "/models/smol.gguf"}
    settings = WorkerSettings.from_env(env)
    engine = build_engine(settings, {"TETHER_WORKER_TORCH_CHECKPOINT": "/elsewhere"})
    assert isinstance(engine, TorchEngine)
    assert engine.settings.checkpoint == "/models/smol.gguf"  # the worker's model path wins
    named = build_engine(settings.with_overrides(model_name="smol"), {})
    assert isinstance(named, TorchEngine)
    assert named._names == ("smol",)
    with pytest.raises(SettingsError, match="needs the torch engine"):
        WorkerSettings.from_env({"TETHER_WORKER_MODEL_PATH": "/models/smol.gguf"})
