"""The Prometheus rules in deploy/prometheus: promtool-valid, unit-tested, and following our conventions."""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.grafana.metric_refs import ROOT, catalog, rule_files, rules, selectors_of

RULE_TESTS = sorted((ROOT / "deploy/prometheus/tests").glob("*.test.yml"))
RUNBOOKS = ROOT / "docs/observability.md"
ALERTS = [rule for _, rule in rules() if "alert" in rule]
RECORDS = [rule for _, rule in rules() if "record" in rule]
SEVERITIES = {"warning", "critical"}
COMPONENTS = {"api_box", "router", "gpu_worker"}
Run = Callable[..., subprocess.CompletedProcess[str]]


def _ids(rules_: list[dict[str, Any]]) -> list[str]:
    return [rule.get("alert") or rule["record"] for rule in rules_]


def test_there_are_rule_files_and_tests() -> None:
    assert [p.name for p in rule_files()] == ["alerts.rules.yml", "recording.rules.yml"]
    assert RULE_TESTS, "no deploy/prometheus/tests/*.test.yml"


def test_promtool_check_rules_accepts_every_rule_file(run_promtool: Run) -> None:
    done = run_promtool("check", "rules", *(str(path) for path in rule_files()))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass(run_promtool: Run) -> None:
    done = run_promtool("test", "rules", *(path.name for path in RULE_TESTS), cwd=RULE_TESTS[0].parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_TESTS), done.stdout


def test_the_issue_s_alerts_exist() -> None:
    expected = {
        "TetherHighTTFT",
        "TetherHighErrorRatio",
        "TetherWriteBehindLagging",
        "TetherRedisUnreachable",
        "TetherRingVersionMismatch",
        "TetherDrainStuck",
        "TetherKVCacheThrash",
    }
    assert expected <= {rule["alert"] for rule in ALERTS}


@pytest.mark.parametrize("rule", ALERTS, ids=_ids(ALERTS))
def test_alert_has_severity_component_and_annotations(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["labels"]["component"] in COMPONENTS
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    assert annotations["runbook_url"] == f"docs/observability.md#{rule['alert'].lower()}"


def _anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the markdown headings."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("rule", ALERTS, ids=_ids(ALERTS))
def test_alert_has_a_runbook_section(rule: dict[str, Any]) -> None:
    anchor = rule["annotations"]["runbook_url"].partition("#")[2]
    assert anchor in _anchors(RUNBOOKS.read_text(encoding="utf-8")), f"no '### {rule['alert']}' in {RUNBOOKS}"


@functools.cache
def _rule_tests() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            cases += test.get("alert_rule_test", [])
    return cases


@pytest.mark.parametrize("rule", ALERTS, ids=_ids(ALERTS))
def test_alert_is_tested_firing_and_silent(rule: dict[str, Any]) -> None:
    cases = [case for case in _rule_tests() if case["alertname"] == rule["alert"]]
    assert any(case.get("exp_alerts") for case in cases), f"no promtool case where {rule['alert']} fires"
    assert any(not case.get("exp_alerts") for case in cases), (
        f"no promtool case where {rule['alert']} is silent"
    )


def _metric_bases() -> set[str]:
    return {name.removesuffix("_total") for name in catalog()}


@pytest.mark.parametrize("rule", RECORDS, ids=_ids(RECORDS))
def test_recording_rule_is_named_level_metric_operations(rule: dict[str, Any]) -> None:
    level, metric, operations = rule["record"].split(":")
    assert re.fullmatch(r"[a-z]+(_[a-z]+)*", level), level
    assert any(metric.startswith(base) for base in _metric_bases()), f"{metric} names no catalog metric"
    assert not metric.endswith("_total"), "drop _total once rate()/increase() applied"
    assert re.fullmatch(r"[a-z0-9_]+", operations), operations
    window = re.search(r"\[(\w+)\]", rule["expr"])
    assert window is None or operations.endswith(window[1]), f"{operations} does not name the window"


def _thresholds(expr: str) -> list[float]:
    return [float(value) for value in re.findall(r"(?:>=|>)\s*([0-9.]+)", expr)]


def _quantiled_histograms(expr: str) -> list[str]:
    """Histograms whose quantile ``expr`` compares, directly or through a recorded series."""
    recorded = {rule["record"]: rule["expr"] for rule in RECORDS}
    sources = " ".join([expr, *(recorded.get(s.name, "") for s in selectors_of(expr))])
    if "histogram_quantile" not in sources:
        return []
    return [entry.name for entry in catalog().values() if f"{entry.name}_bucket" in sources]


def test_latency_alert_thresholds_sit_on_bucket_boundaries() -> None:
    checked = []
    for rule in ALERTS:
        for histogram in _quantiled_histograms(rule["expr"]):
            for threshold in _thresholds(rule["expr"]):
                assert threshold in catalog()[histogram].buckets, (
                    f"{rule['alert']}: {threshold} s is no bucket"
                )
                checked.append(rule["alert"])
    assert "TetherHighTTFT" in checked


def _rule_files_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in rule_files())


def test_rule_files_are_plain_prometheus_rule_files() -> None:
    """Plain `groups:` files (not PrometheusRule CRDs), as promtool and the chart's .Files.Get need."""
    for path in rule_files():
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert set(doc) == {"groups"}, path
    assert "apiVersion" not in _rule_files_text()


def test_tests_reference_the_rule_files_relative_to_themselves() -> None:
    for path in RULE_TESTS:
        for rule_file in yaml.safe_load(path.read_text(encoding="utf-8"))["rule_files"]:
            assert (path.parent / rule_file).resolve().is_file(), rule_file
            assert Path(rule_file).parent == Path("../rules")
