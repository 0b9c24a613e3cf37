"""The chart ships the repository's own alert rules and dashboards, byte for byte.

Helm cannot read outside the chart, so helm/tether/files/ holds copies made by helm/tether/sync-assets.
These tests fail when a copy is stale or orphaned, and check that the PrometheusRule objects and dashboard
ConfigMaps carry exactly those files (the rules being the ones promtool tests in deploy/prometheus/tests/).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from chart_render import ALL_APIS, CHART, ROOT, render, render_values

SYNC = "run helm/tether/sync-assets"
RULE_SOURCES = sorted(
    p
    for p in (ROOT / "deploy" / "prometheus").rglob("*.rules.yml")
    if "tests" not in p.relative_to(ROOT).parts
)
DASHBOARD_SOURCES = sorted((ROOT / "deploy" / "grafana" / "dashboards").rglob("*.json"))
CONFIGMAP_LIMIT = 1 << 20


def _pairs(sources: list[Path], copies: Path, pattern: str) -> list[tuple[str, Path | None, Path | None]]:
    by_name_src = {p.name: p for p in sources}
    assert len(by_name_src) == len(sources), "two sources share a file name"
    by_name_copy = {p.name: p for p in copies.glob(pattern)}
    return [(n, by_name_src.get(n), by_name_copy.get(n)) for n in sorted(by_name_src | by_name_copy)]


@pytest.mark.parametrize(
    ("sources", "copies", "pattern"),
    [
        (RULE_SOURCES, CHART / "files" / "rules", "*.rules.yml"),
        (DASHBOARD_SOURCES, CHART / "files" / "dashboards", "*.json"),
    ],
    ids=["rules", "dashboards"],
)
def test_chart_copies_match_the_repository_files(sources: list[Path], copies: Path, pattern: str) -> None:
    for _name, source, copy in _pairs(sources, copies, pattern):
        assert source is not None, f"{copy} has no source any more: {SYNC}"
        assert copy is not None, f"{source} is not in the chart: {SYNC}"
        assert copy.read_bytes() == source.read_bytes(), f"{copy} is stale: {SYNC}"


def test_sync_script_check_agrees() -> None:
    result = subprocess.run(
        ["bash", str(CHART / "sync-assets"), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


def test_there_are_rules_and_dashboards_to_ship() -> None:
    assert RULE_SOURCES, "deploy/prometheus has no *.rules.yml"
    assert DASHBOARD_SOURCES, "deploy/grafana has no dashboard *.json"


def test_prometheus_rules_are_the_rule_files() -> None:
    rules = render(None, ALL_APIS).of_kind("PrometheusRule")
    shipped = {r["metadata"]["annotations"]["tether.dev/rule-file"]: r for r in rules}
    assert sorted(shipped) == [p.name for p in RULE_SOURCES]
    for source in RULE_SOURCES:
        assert shipped[source.name]["spec"] == yaml.safe_load(source.read_text()), source.name


def test_prometheus_rules_carry_the_stack_labels() -> None:
    rules = render("monitoring-values.yaml", ALL_APIS).of_kind("PrometheusRule")
    assert rules
    assert all(r["metadata"]["labels"]["release"] == "kube-prometheus-stack" for r in rules)


def test_dashboard_configmaps_are_the_dashboard_files() -> None:
    maps = [
        cm
        for cm in render().of_kind("ConfigMap")
        if "tether.dev/dashboard-file" in (cm["metadata"].get("annotations") or {})
    ]
    assert sorted(cm["metadata"]["annotations"]["tether.dev/dashboard-file"] for cm in maps) == [
        p.name for p in DASHBOARD_SOURCES
    ]
    by_file = {cm["metadata"]["annotations"]["tether.dev/dashboard-file"]: cm for cm in maps}
    for source in DASHBOARD_SOURCES:
        cm = by_file[source.name]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"][source.name]) == json.loads(source.read_text())
        assert len(cm["data"][source.name].encode()) < CONFIGMAP_LIMIT


def test_dashboards_can_be_turned_off_and_relabelled() -> None:
    assert not [
        cm
        for cm in render_values({"grafanaDashboards": {"enabled": False}}).of_kind("ConfigMap")
        if "tether.dev/dashboard-file" in (cm["metadata"].get("annotations") or {})
    ]
    relabelled = render_values({"grafanaDashboards": {"labels": {"grafana_dashboard": "tether"}}})
    for cm in relabelled.of_kind("ConfigMap"):
        if "tether.dev/dashboard-file" in (cm["metadata"].get("annotations") or {}):
            assert cm["metadata"]["labels"]["grafana_dashboard"] == "tether"
