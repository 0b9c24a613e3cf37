"""Worker settings: environment, flags, loud failures; and the command line."""

from __future__ import annotations

import pytest

from gpu_worker.__main__ import build_parser, main
from gpu_worker.config import SettingsError, WorkerSettings


def test_defaults_and_environment() -> None:
    assert WorkerSettings.from_env({}) == WorkerSettings()
    s = WorkerSettings.from_env(
        {
            "TETHER_WORKER_PORT": "0",
            "TETHER_WORKER_METRICS_PORT": "-1",
            "TETHER_WORKER_ENGINE": "SIM",
            "TETHER_WORKER_SPEED": "0",
            "TETHER_WORKER_KV_BUDGET_TOKENS": "5000",
            "TETHER_WORKER_MAX_PROMPT_TOKENS": "4000",
            "TETHER_WORKER_MAX_RUNNING": "8",
            "TETHER_WORKER_DECODE_STEP_SECONDS": "0.01",
            "TETHER_WORKER_TOOL_CALLS_PER_MESSAGE": "5",
            "TETHER_WORKER_LOG_LEVEL": "debug",
            "TETHER_WORKER_HOST": "",  # empty = unset
            "UNRELATED": "x",
        }
    )
    assert (s.port, s.metrics_port, s.engine, s.speed, s.kv_budget_tokens) == (0, -1, "sim", 0.0, 5000)
    assert s.limits.max_prompt_tokens == 4000
    assert s.timing.max_running == 8
    assert s.timing.decode_step_base_seconds == 0.01
    assert s.agent.tool_calls_per_message == 5
    assert s.log_level == "DEBUG"
    assert s.host == "127.0.0.1"
    assert not s.metrics_enabled()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("SPEED", "-1"),
        ("SPEED", "inf"),
        ("ENGINE", "tensorrt"),
        ("KV_BUDGET_TOKENS", "0"),
        ("LOG_FORMAT", "xml"),
        ("MAX_RUNNING", "0"),
        ("ANSWER_TOKENS", "0"),
        ("DEFAULT_MAX_OUTPUT_TOKENS", "999999"),
    ],
)
def test_bad_values_fail_loudly(name: str, value: str) -> None:
    with pytest.raises(SettingsError):
        WorkerSettings.from_env({f"TETHER_WORKER_{name}": value})


def test_flags_override_the_environment() -> None:
    s = WorkerSettings.from_env({"TETHER_WORKER_PORT": "7000"}).with_overrides(port=7001, speed=None)
    assert s.port == 7001
    assert s.speed == 1.0
    with pytest.raises(SettingsError, match="metrics_port"):
        s.with_overrides(metrics_port=-2)


def test_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--host",
        "--port",
        "--metrics-port",
        "--engine",
        "--kv-budget-tokens",
        "--speed",
        "--log-format",
    ):
        assert flag in out


def test_bad_flags_and_values_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--engine", "tensorrt"])
    assert exc.value.code == 2
    assert main(["--kv-budget-tokens", "-5"]) == 2
    assert "kv_budget_tokens" in capsys.readouterr().err


def test_the_documented_variables_are_the_ones_read() -> None:
    """gpu_worker/config.py's table of variables names exactly what the declarations read."""
    import re

    import gpu_worker.config as config

    documented = set(re.findall(r"^    (TETHER_WORKER_\w+)\s", config.__doc__ or "", flags=re.MULTILINE))
    assert documented == config.env_variables()
    assert "TETHER_WORKER_DECODE_STEP_SECONDS" in documented  # timing.decode_step_base_seconds


def test_engine_and_log_values_are_read_in_any_case() -> None:
    s = WorkerSettings.from_env({"TETHER_WORKER_LOG_FORMAT": "JSON", "TETHER_WORKER_ENGINE": "Torch"})
    assert (s.log_format, s.engine) == ("json", "torch")
    with pytest.raises(SettingsError, match="TETHER_WORKER_LOG_LEVEL='loud' is not one of DEBUG"):
        WorkerSettings.from_env({"TETHER_WORKER_LOG_LEVEL": "loud"})


@pytest.mark.usefixtures("root_logger")
def test_json_logs_are_lines_of_the_shared_schema(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import logging

    from gpu_worker.__main__ import _configure_logging

    _configure_logging(WorkerSettings(log_format="json"))
    logging.getLogger("gpu_worker.torch").warning("evicted %d chains", 3)
    line = json.loads(capsys.readouterr().err)
    assert (line["level"], line["logger"], line["msg"], line["component"]) == (
        "warning",
        "gpu_worker.torch",
        "evicted 3 chains",
        "gpu_worker",
    )


def test_a_flag_and_a_variable_complete_each_other_before_the_checks() -> None:
    environ = {"TETHER_WORKER_MODEL_PATH": "/models/m.gguf"}
    settings = WorkerSettings.from_env(environ, engine="torch", port=None)
    assert (settings.engine, settings.model_path, settings.port) == ("torch", "/models/m.gguf", 50051)
    with pytest.raises(SettingsError, match="model path"):
        WorkerSettings.from_env(environ)  # the sim serves no checkpoint
