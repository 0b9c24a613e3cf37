"""What the chart tells each process is what the process accepts, and means what the chart assumes.

Each container's `--flag=value` arguments and literal env are turned into the component's own
`TETHER_<COMPONENT>_*` environment (flags name settings fields one to one) and fed to its `Settings.from_env`,
so an unknown flag, a misspelt variable or a bad value fails here instead of in a crash-looping pod.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from chart_render import ALL_APIS, VALUE_FILES, Rendered, containers, render

from api_box.config import Settings as BoxSettings
from gpu_worker.config import WorkerSettings
from router.config import Settings as RouterSettings

PREFIXES = {"router": "TETHER_ROUTER_", "api-box": "TETHER_BOX_", "worker": "TETHER_WORKER_"}
BUILDERS: dict[str, Callable[[Mapping[str, str]], Any]] = {
    "router": RouterSettings.from_env,
    "api-box": BoxSettings.from_env,
    "worker": WorkerSettings.from_env,
}
# Read by the cold store, not by Settings (the same name the local launcher sets: tether/core/plan.py).
READ_ELSEWHERE = {"TETHER_BOX_REDIS_URL"}
# What the kubelet substitutes for $(VAR) references to downward-API variables.
DOWNWARD = {"$(POD_NAME)": "tether-api-box-0", "$(POD_NAMESPACE)": "tether-test"}


def process_environment(component: str, container: dict[str, Any]) -> dict[str, str]:
    """The TETHER_* environment equivalent to the container's flags plus its literal env."""
    prefix = PREFIXES[component]
    environ = {
        e["name"]: e["value"] for e in container["env"] if "value" in e and e["name"].startswith(prefix)
    }
    for arg in container["args"]:
        assert arg.startswith("--"), f"{component}: {arg!r} is not a flag"
        assert "=" in arg, f"{component}: use --flag=value, got {arg!r}"
        name, value = arg[2:].split("=", 1)
        environ[prefix + name.replace("-", "_").upper()] = DOWNWARD.get(value, value)
    return environ


def _fields(settings: Any) -> set[str]:
    return set(type(settings).__dataclass_fields__)


@pytest.fixture(params=VALUE_FILES, ids=[v or "defaults" for v in VALUE_FILES])
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return render(request.param, ALL_APIS)


@pytest.mark.parametrize("component", sorted(PREFIXES))
def test_each_process_accepts_what_the_chart_sets(rendered: Rendered, component: str) -> None:
    (container,) = containers(rendered.workload(component))
    environ = process_environment(component, container)
    settings = BUILDERS[component](environ)  # raises on a bad value
    for variable in environ.keys() - READ_ELSEWHERE:
        field = variable.removeprefix(PREFIXES[component]).lower()
        assert field in _fields(settings), f"{variable} is not a {component} setting"


def test_ports_are_the_ones_the_processes_bind() -> None:
    r = render()
    router = RouterSettings.from_env(process_environment("router", containers(r.workload("router"))[0]))
    box = BoxSettings.from_env(process_environment("api-box", containers(r.workload("api-box"))[0]))
    worker = WorkerSettings.from_env(process_environment("worker", containers(r.workload("worker"))[0]))
    assert (router.host, router.port, router.admin_port) == ("0.0.0.0", 8080, 9100)
    assert (box.host, box.port, box.admin_port) == ("0.0.0.0", 8000, 9100)
    assert (worker.host, worker.port, worker.metrics_port) == ("0.0.0.0", 50051, 9100)
    assert router.k8s_service == "tether-api-box-headless"
    assert router.k8s_port_name == "http"
    assert box.box_id == "tether-api-box-0"
    assert box.api_keys_file == "/etc/tether/keys"
    assert len(box.workers) == worker_replicas(r)


def worker_replicas(r: Rendered) -> int:
    """Replicas of the worker StatefulSet."""
    return int(r.workload("worker")["spec"]["replicas"])
