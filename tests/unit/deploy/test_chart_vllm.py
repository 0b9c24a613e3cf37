"""The chart's `worker.engine: vllm` (helm/tether/ci/vllm-values.yaml): GPUs, the model, probes, settings."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest
from chart_render import containers, flag, load_values, render, render_values

from gpu_worker.__main__ import build_parser
from gpu_worker.config import WorkerSettings
from gpu_worker.engines.vllm_engine import VllmSettings

VLLM = "vllm-values.yaml"


def _worker(values: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    rendered = render(VLLM) if values is None else render_values(values)
    workload = rendered.workload("worker")
    return workload, containers(workload)[0]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_the_worker_runs_vllm_on_its_gpus_with_the_model_from_the_volume() -> None:
    workload, container = _worker()
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    assert flag(container, "engine") == "vllm"
    assert flag(container, "model-path") == "/models/Qwen2.5-7B-Instruct"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["model"] == {"name": "model", "mountPath": "/models", "readOnly": True}
    assert mounts["dshm"]["mountPath"] == "/dev/shm"
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "tether-models"}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["tmp"]["emptyDir"]["sizeLimit"] == "20Gi"  # compile caches
    assert _env(container)["HOME"] == "/tmp"  # the root filesystem is read-only


def test_the_startup_probe_waits_for_the_model_to_load() -> None:
    _, container = _worker()
    probe = container["startupProbe"]
    assert probe["grpc"] == {"port": 50051}
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 30 * 60
    _, sim = _worker({})
    assert sim["startupProbe"]["failureThreshold"] == 60  # other engines keep worker.startupProbe


def test_the_worker_builds_its_settings_from_what_the_chart_sets() -> None:
    _, container = _worker()
    args = vars(build_parser().parse_args(container["args"]))
    worker = WorkerSettings.from_env(_env(container)).with_overrides(**args)
    assert (worker.engine, worker.model_path) == ("vllm", "/models/Qwen2.5-7B-Instruct")
    vllm = VllmSettings.from_env(_env(container))
    assert (vllm.gpu_memory_utilization, vllm.max_model_len, vllm.tensor_parallel_size) == (0.9, 32768, 1)


def test_tensor_parallel_defaults_to_the_worker_s_gpus() -> None:
    values = load_values(VLLM) or {}
    values["worker"] = {**values["worker"], "gpus": 4, "vllm": {"maxModelLen": 0}}
    _, container = _worker(values)
    assert VllmSettings.from_env(_env(container)).tensor_parallel_size == 4
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4


@pytest.mark.parametrize(
    ("worker", "message"),
    [
        ({"engine": "vllm", "model": {"path": "Qwen/Qwen2.5-0.5B-Instruct"}}, "needs worker.gpus >= 1"),
        ({"engine": "vllm", "gpus": 1}, "needs worker.model.path"),
        (
            {"engine": "vllm", "gpus": 1, "model": {"path": "m"}, "vllm": {"tensorParallelSize": 2}},
            "tensorParallelSize",
        ),
    ],
)
def test_a_vllm_worker_without_what_it_needs_fails_to_render(worker: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render_values({"worker": worker})


@pytest.mark.parametrize(
    ("worker", "where"),
    [
        ({"vllm": {"gpuMemoryUtilization": 1.5}}, "/worker/vllm/gpuMemoryUtilization"),
        ({"vllm": {"dtype": "int4"}}, "/worker/vllm/dtype"),
        ({"vllm": {"shmSize": "2 GB"}}, "/worker/vllm/shmSize"),
        ({"model": {"mountPath": "models"}}, "/worker/model/mountPath"),
        ({"model": {"pth": "x"}}, "pth"),
    ],
)
def test_the_schema_rejects_bad_vllm_values(worker: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        render_values({"worker": worker})
