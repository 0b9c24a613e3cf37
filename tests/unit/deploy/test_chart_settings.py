"""What the chart tells each process is what the process accepts, and means what the chart assumes.

Each container's `--flag=value` arguments and literal env are turned into the component's own
`TETHER_<COMPONENT>_*` environment (flags name settings fields one to one) and fed to its `Settings.from_env`,
so an unknown flag, a misspelt variable or a bad value fails here instead of in a crash-looping pod. Every
variable must be one the component declares (its `tether_runtime.settings.EnvLoader`s).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web
from chart_render import ALL_APIS, VALUE_FILES, Rendered, containers, render
from prometheus_client import CollectorRegistry

import api_box.__main__ as box_main
import gpu_worker.__main__ as worker_main
import router.__main__ as router_main
from api_box.config import ENV as BOX_ENV
from api_box.config import Settings as BoxSettings
from api_box.core.auth import KeyRing
from api_box.io.app import build_app as build_box_app
from gpu_worker.client import WorkerPool
from gpu_worker.config import WorkerSettings, env_variables
from gpu_worker.engines.vllm_engine import VLLM_ENV, VllmSettings
from router.config import ENV as ROUTER_ENV
from router.config import Settings as RouterSettings
from router.io.admin import build_admin_app as build_router_admin_app

PREFIXES = {"router": "TETHER_ROUTER_", "api-box": "TETHER_BOX_", "worker": "TETHER_WORKER_"}
BUILDERS: dict[str, Callable[[Mapping[str, str]], Any]] = {
    "router": RouterSettings.from_env,
    "api-box": BoxSettings.from_env,
    "worker": WorkerSettings.from_env,
}
# The vllm engine's settings (TETHER_WORKER_VLLM_*) belong to the engine, not to WorkerSettings.
ENGINE_SETTINGS: dict[str, Callable[[Mapping[str, str]], Any]] = {
    "TETHER_WORKER_VLLM_": VllmSettings.from_env
}
# The variables each component reads: the declarations of its settings (and of its engines').
DECLARED: dict[str, frozenset[str]] = {
    "router": frozenset(ROUTER_ENV.variables.values()),
    "api-box": frozenset(BOX_ENV.variables.values()),
    "worker": env_variables() | frozenset(VLLM_ENV.variables.values()),
}
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


@pytest.fixture(params=VALUE_FILES, ids=[v or "defaults" for v in VALUE_FILES])
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return render(request.param, ALL_APIS)


@pytest.mark.parametrize("component", sorted(PREFIXES))
def test_each_process_accepts_what_the_chart_sets(rendered: Rendered, component: str) -> None:
    (container,) = containers(rendered.workload(component))
    environ = process_environment(component, container)
    BUILDERS[component](environ)  # raises on a bad value
    for variable in environ:
        engine = next((p for p in ENGINE_SETTINGS if variable.startswith(p)), None)
        if engine is not None:  # read by the engine's own settings
            ENGINE_SETTINGS[engine](environ)  # raises on a bad value
        assert variable in DECLARED[component], f"{variable} is not a {component} setting"


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


def _kubelet_args(container: dict[str, Any]) -> list[str]:
    """The container's arguments after the kubelet's $(VAR) expansion."""
    expanded = []
    for arg in container["args"]:
        for ref, value in DOWNWARD.items():
            arg = arg.replace(ref, value)
        expanded.append(arg)
    return expanded


def _literal_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_each_command_line_parses_with_the_component_own_parser(rendered: Rendered) -> None:
    router_c, box_c, worker_c = (containers(rendered.workload(c))[0] for c in ("router", "api-box", "worker"))
    # router: its argparse parser, then Settings.from_env with the flags as overrides, as its main does.
    flags = router_main._parser().parse_args(_kubelet_args(router_c))
    router = RouterSettings.from_env(_literal_env(router_c), **vars(flags))
    assert (router.port, router.admin_port) == (8080, 9100)
    assert router.k8s_namespace == DOWNWARD["$(POD_NAMESPACE)"]
    # api box: its public settings_from(argv, env).
    box = box_main.settings_from(_kubelet_args(box_c), _literal_env(box_c))
    assert box.box_id == DOWNWARD["$(POD_NAME)"]
    assert box.shutdown_grace_seconds == float(_literal_env(box_c)["TETHER_BOX_SHUTDOWN_GRACE_SECONDS"])
    assert (box.sealed_handoff, box.sealed_handoff_ttl_seconds, box.sealed_handoff_max_bytes) == (
        True,
        60.0,
        16 * 1024 * 1024,
    )
    # worker: build_parser(), then from_env(...).with_overrides(...), as gpu_worker.__main__.main does.
    args = vars(worker_main.build_parser().parse_args(_kubelet_args(worker_c)))
    worker = WorkerSettings.from_env(_literal_env(worker_c)).with_overrides(**args)
    assert worker.engine in ("sim", "torch", "vllm")
    assert box.models == (f"tether-{worker.engine}",)  # the box lists the model its workers serve
    assert worker.drain_seconds == float(_literal_env(worker_c)["TETHER_WORKER_DRAIN_SECONDS"])


def _get_paths(app: web.Application) -> set[str]:
    return {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource is not None}


def test_http_probe_paths_are_routes_of_the_components() -> None:
    r = render()
    (router_c,) = containers(r.workload("router"))
    (box_c,) = containers(r.workload("api-box"))
    # The router's admin app (the probes' "admin" port); routes are registered without touching the router.
    stand_in = SimpleNamespace(metrics=SimpleNamespace(registry=CollectorRegistry()))
    router_paths = _get_paths(build_router_admin_app(cast(Any, stand_in)))
    # The box's main app (the probes' "http" port), built but never started: no sockets.
    box_app = build_box_app(
        BoxSettings(),
        registry=CollectorRegistry(),
        worker_pool=WorkerPool(["127.0.0.1:1"]),
        keyring=KeyRing.build(keys_file={}, default_keys=("k-unit-test",), dev=False),
    )
    box_paths = _get_paths(box_app)
    for container, paths, port in ((router_c, router_paths, "admin"), (box_c, box_paths, "http")):
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert get["port"] == port
            assert get["path"] in paths, f"{container['name']} {probe}: {get['path']} is not served"
