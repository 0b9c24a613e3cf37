"""The chart lints strictly, its schema rejects typos, and every rendered object is a valid Kubernetes object.

Each case renders the defaults and every ci/*-values.yaml, once as on a bare cluster and once with the
Prometheus Operator and KEDA APIs available (`--api-versions`), then validates every object against the
Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields are errors) at the chart's minimum
Kubernetes version and at the newest one the package knows. CRD objects get a structural check of the fields
their operators require.
"""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from chart_render import ALL_APIS, CHART, ROOT, VALUE_FILES, lint, render, render_values

CASES = [(values_file, apis) for values_file in VALUE_FILES for apis in ((), ALL_APIS)]
CASE_IDS = [f"{values_file or 'defaults'}{'+crds' if apis else ''}" for values_file, apis in CASES]


def _min_kube_version() -> str:
    constraint = str(yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"])
    return constraint.removeprefix(">=").split("-")[0]


KUBE_VERSIONS = (_min_kube_version(), kubernetes_validate.latest_version())

# The fields the operators need, with the shapes their CRDs give them (a strict subset of the CRD schemas).
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_SELECTOR = {
    "type": "object",
    "required": ["matchLabels"],
    "properties": {"matchLabels": {**_LABELS, "minProperties": 1}},
}
_ENDPOINT = {
    "type": "object",
    "required": ["port", "path"],
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string", "pattern": "^/"},
        "interval": {"type": "string"},
        "scrapeTimeout": {"type": "string"},
        "honorLabels": {"type": "boolean"},
        "relabelings": {"type": "array"},
        "metricRelabelings": {"type": "array"},
    },
    "additionalProperties": False,
}
_RULE = {
    "type": "object",
    "required": ["expr"],
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {"expr": {"type": ["string", "integer"]}, "for": {"type": "string"}},
}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "required": ["spec"],
        "properties": {
            "spec": {
                "required": ["selector", "endpoints"],
                "properties": {"selector": _SELECTOR, "endpoints": {"type": "array", "items": _ENDPOINT}},
            }
        },
    },
    "PodMonitor": {
        "required": ["spec"],
        "properties": {
            "spec": {
                "required": ["selector", "podMetricsEndpoints"],
                "properties": {
                    "selector": _SELECTOR,
                    "podMetricsEndpoints": {"type": "array", "items": _ENDPOINT},
                },
            }
        },
    },
    "PrometheusRule": {
        "required": ["spec"],
        "properties": {
            "spec": {
                "required": ["groups"],
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "required": ["name", "rules"],
                            "properties": {"rules": {"type": "array", "items": _RULE}},
                        },
                    }
                },
            }
        },
    },
    "ScaledObject": {
        "required": ["spec"],
        "properties": {
            "spec": {
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {"required": ["name", "kind", "apiVersion"]},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "required": ["type", "metadata"],
                            "properties": {
                                # KEDA 2.12 removed metricName from the prometheus trigger.
                                "metadata": {
                                    "additionalProperties": {"type": "string"},
                                    "not": {"required": ["metricName"]},
                                }
                            },
                        },
                    },
                },
            }
        },
    },
}
CRD_API_VERSIONS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PodMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "ScaledObject": "keda.sh/v1alpha1",
}


def _validate(obj: dict[str, Any]) -> None:
    kind = obj["kind"]
    if kind in CRD_SCHEMAS:
        assert obj["apiVersion"] == CRD_API_VERSIONS[kind]
        jsonschema.validate(obj, {"type": "object", **CRD_SCHEMAS[kind]})
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            pytest.fail(
                f"{kind}/{obj['metadata']['name']} invalid for Kubernetes {version} at {where}: {exc.message}"
            )


@pytest.mark.parametrize("values_file", VALUE_FILES, ids=lambda v: v or "defaults")
def test_lint_strict_is_clean(values_file: str | None) -> None:
    report = lint(values_file)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert problems == [], problems
    assert report["errors"] == []


def test_lint_reports_a_misspelt_value() -> None:
    report = helm.lint(str(CHART), {"router": {"iamge": "x"}}, strict=True)
    assert any("iamge" in m["error"] for m in report["messages"] if m["severity"] == 3)


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"router": {"iamge": "x"}}, "iamge"),
        ({"worker": {"engine": "tensorrt"}}, "/worker/engine"),
        ({"worker": {"gpus": -1}}, "/worker/gpus"),
        ({"apiBox": {"drain": {"budgetSeconds": 0}}}, "/apiBox/drain/budgetSeconds"),
        ({"apiBox": {"keda": {"metric": "tether_box_sessions_total"}}}, "/apiBox/keda/metric"),
        ({"router": {"service": {"type": "ExternalName"}}}, "/router/service/type"),
        ({"apiKeys": {"keys": [{"key": "short", "tenant": "t"}]}}, "/apiKeys/keys/0/key"),
        ({"externalRedis": {"url": "http://redis:6379"}}, "/externalRedis/url"),
        ({"redis": {"maxmemory": "1 GB"}}, "/redis/maxmemory"),
        ({"unknownTopLevel": True}, "unknownTopLevel"),
    ],
)
def test_schema_rejects_bad_values(overrides: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        render_values(overrides)


@pytest.mark.parametrize(("values_file", "apis"), CASES, ids=CASE_IDS)
def test_every_rendered_object_is_valid(values_file: str | None, apis: tuple[str, ...]) -> None:
    rendered = render(values_file, apis)
    assert rendered.objects
    names = [(o["kind"], o["metadata"]["name"]) for o in rendered.objects]
    assert len(names) == len(set(names)), "duplicate objects"
    for obj in rendered.objects:
        assert len(obj["metadata"]["name"]) <= 63
        _validate(obj)


@pytest.mark.parametrize("values_file", VALUE_FILES, ids=lambda v: v or "defaults")
def test_operator_objects_render_only_where_their_api_is_served(values_file: str | None) -> None:
    bare = {o["kind"] for o in render(values_file).objects}
    assert not bare & set(CRD_SCHEMAS)
    with_apis = {o["kind"] for o in render(values_file, ALL_APIS).objects}
    assert {"ServiceMonitor", "PodMonitor"} <= with_apis


def test_notes_warn_when_asked_for_objects_whose_api_is_missing() -> None:
    notes = " ".join(render("monitoring-values.yaml").notes.split())
    assert "no ServiceMonitor/PodMonitor was created" in notes
    assert "the alert rules were not installed" in notes
    assert "no ScaledObject" in notes
    assert "NOTE:" not in render("monitoring-values.yaml", ALL_APIS).notes


def test_api_box_autoscalers_are_mutually_exclusive() -> None:
    both = {"apiBox": {"autoscaling": {"enabled": True}, "keda": {"enabled": True}}}
    with pytest.raises(helm.HelmError, match="mutually exclusive"):
        render_values(both, ALL_APIS)


def _schema_nodes(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(node, dict):
        return []
    found = [(path, node)] if "properties" in node else []
    for key, child in node.items():
        if isinstance(child, dict):
            found += _schema_nodes(child, f"{path}/{key}")
    return found


def test_schema_closes_every_object_it_describes() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    nodes = _schema_nodes(schema)
    assert len(nodes) > 20
    for path, node in nodes:
        assert node.get("additionalProperties") is False, f"{path or '/'} accepts unknown keys"


def test_keda_metrics_are_in_the_metric_catalog() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    metrics = schema["properties"]["apiBox"]["properties"]["keda"]["properties"]["metric"]["enum"]
    catalog = (ROOT / "docs" / "metrics.md").read_text()
    for metric in metrics:
        assert f"| {metric} | gauge |" in catalog
