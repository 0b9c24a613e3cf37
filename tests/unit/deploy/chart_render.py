"""Offline rendering and linting of helm/tether with Helm's Go SDK (helm-python-sdk, `import helm_python`).

`render()` mirrors `helm template --api-versions ...`: helm_python's public `Chart.render` does not take API
versions, but the library's render call accepts them in its options (the same struct as `helm template`), so
it is called directly. Results are cached per (values file, API versions): rendering is pure.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml
from helm_python import _native

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "tether"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "tether"
NAMESPACE = "tether-test"

# The APIs whose objects the chart gates on .Capabilities.
MONITORING_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PodMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)
KEDA_APIS = ("keda.sh/v1alpha1/ScaledObject",)
ALL_APIS = MONITORING_APIS + KEDA_APIS

# Cases: the defaults and every ci/*-values.yaml, each with and without the optional APIs.
VALUE_FILES: tuple[str | None, ...] = (None, *(p.name for p in CI_VALUES))


@dataclass(frozen=True)
class Rendered:
    """One rendering of the chart: the manifests by template, and the parsed objects."""

    manifests: dict[str, str]
    objects: tuple[dict[str, Any], ...]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every rendered object of this kind."""
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The one object of this kind and name; KeyError if absent."""
        for o in self.objects:
            if o["kind"] == kind and o["metadata"]["name"] == name:
                return o
        raise KeyError(f"{kind}/{name} not rendered")

    def workload(self, component: str) -> dict[str, Any]:
        """The Deployment or StatefulSet of a component (router, api-box, worker, redis)."""
        for o in self.objects:
            if o["kind"] in ("Deployment", "StatefulSet") and _component(o) == component:
                return o
        raise KeyError(f"no workload for {component}")


def _component(obj: dict[str, Any]) -> str | None:
    labels: dict[str, str] = obj["metadata"].get("labels") or {}
    return labels.get("app.kubernetes.io/component")


def load_values(values_file: str | None) -> dict[str, Any] | None:
    """The overrides of a ci/*-values.yaml file (None for the chart's defaults)."""
    if values_file is None:
        return None
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / values_file).read_text()) or {}
    return loaded


def render_values(values: dict[str, Any] | None, api_versions: tuple[str, ...] = ()) -> Rendered:
    """Renders the chart with these overrides after validating them against values.schema.json."""
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(chart.merge_values(values))
        opts = {
            "name": RELEASE,
            "namespace": NAMESPACE,
            "is_install": True,
            "api_versions": list(api_versions),
        }
        payload = _native.call_string(
            "helm_render", chart._raw(), None if values is None else json.dumps(values), json.dumps(opts)
        )
    manifests: dict[str, str] = json.loads(payload)
    objects = tuple(
        doc
        for path, text in sorted(manifests.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    )
    notes = next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), "")
    return Rendered(manifests, objects, notes)


@functools.cache
def render(values_file: str | None = None, api_versions: tuple[str, ...] = ()) -> Rendered:
    """Renders the chart with a ci/ values file (or the defaults) and these extra API versions, cached."""
    return render_values(load_values(values_file), api_versions)


def lint(values_file: str | None = None) -> dict[str, Any]:
    """`helm lint --strict` of the chart with a ci/ values file (or the defaults)."""
    return helm.lint(str(CHART), load_values(values_file), strict=True, namespace=NAMESPACE)


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers of a Deployment/StatefulSet's pod template."""
    spec: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return spec


def flag(container: dict[str, Any], name: str) -> str:
    """The value of a `--name=value` argument of a container; KeyError if absent."""
    for arg in container.get("args", []):
        if arg.startswith(f"--{name}="):
            return str(arg.split("=", 1)[1])
    raise KeyError(f"--{name} not in {container.get('args')}")


def named_port(container: dict[str, Any], name: str) -> int:
    """The containerPort of a named port."""
    for port in container.get("ports", []):
        if port["name"] == name:
            return int(port["containerPort"])
    raise KeyError(name)
