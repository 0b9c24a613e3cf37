"""The chart ships the repository's own alert rules and dashboards: each file is kept once.

Helm reads only files inside the chart, so helm/tether/files/rules and helm/tether/files/dashboards are
symbolic links to deploy/prometheus/rules and deploy/grafana/dashboards; Helm follows them when it renders
and when it packages. These tests check the links, that `helm package` stores the files themselves, and that
the PrometheusRule objects and dashboard ConfigMaps carry exactly those files (the rules being the ones
promtool tests in deploy/prometheus/tests/).
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import helm_python as helm
import pytest
import yaml
from chart_render import ALL_APIS, CHART, ROOT, render, render_values

RULE_DIR = ROOT / "deploy" / "prometheus" / "rules"
DASHBOARD_DIR = ROOT / "deploy" / "grafana" / "dashboards"
RULE_SOURCES = sorted(RULE_DIR.glob("*.rules.yml"))
DASHBOARD_SOURCES = sorted(DASHBOARD_DIR.glob("*.json"))
CONFIGMAP_LIMIT = 1 << 20


@pytest.mark.parametrize(("link", "source"), [("rules", RULE_DIR), ("dashboards", DASHBOARD_DIR)])
def test_the_chart_links_to_the_repository_files(link: str, source: Path) -> None:
    path = CHART / "files" / link
    assert path.is_symlink(), f"{path} must link to {source.relative_to(ROOT)}, not hold copies"
    assert not os.readlink(path).startswith("/"), "a relative link, so that any clone resolves it"
    assert path.resolve() == source.resolve()


def test_the_packaged_chart_holds_the_files_themselves(tmp_path: Path) -> None:
    archive = Path(helm.package(str(CHART), destination=str(tmp_path)))
    with tarfile.open(archive) as packed:
        members = {m.name: m for m in packed.getmembers()}
        for sources, folder in ((RULE_SOURCES, "rules"), (DASHBOARD_SOURCES, "dashboards")):
            shipped = sorted(n for n in members if n.startswith(f"tether/files/{folder}/"))
            assert shipped == [f"tether/files/{folder}/{p.name}" for p in sources]
            for source in sources:
                member = members[f"tether/files/{folder}/{source.name}"]
                assert member.isfile(), f"{member.name} is packaged as a link"
                extracted = packed.extractfile(member)
                assert extracted is not None
                assert extracted.read() == source.read_bytes()


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
