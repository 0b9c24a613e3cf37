"""The Grafana dashboards in deploy/grafana/dashboards: generated, valid, and following our conventions."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.grafana import generate
from deploy.grafana.metric_refs import all_queries, dashboard_files, dashboard_queries
from deploy.grafana.panels import SCHEMA_VERSION

BOARDS = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in dashboard_files()}
SIZE_LIMIT = 256 * 1024  # a ConfigMap holds 1 MiB; stay far below it
# Grafana's built-in variables, replaced by a plausible value before promtool parses a query.
GRAFANA_VARIABLES = {"$__range": "1h", "$__rate_interval": "5m", "$__interval": "1m"}
Run = Callable[..., subprocess.CompletedProcess[str]]


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def _data_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in _panels(board) if panel["type"] != "row"]


def test_committed_dashboards_equal_a_fresh_generation() -> None:
    assert generate.stale_files() == [], "run: python -m deploy.grafana.generate"


def test_the_issue_s_four_dashboards_exist() -> None:
    assert set(BOARDS) == {"overview", "router", "sessions", "workers"}


def test_generation_is_deterministic() -> None:
    assert generate.render() == generate.render()


def test_generator_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    for name, text in generate.render().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert generate.stale_files(tmp_path) == []
    (tmp_path / "overview.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "leftover.json").write_text("{}\n", encoding="utf-8")
    assert generate.stale_files(tmp_path) == ["leftover.json", "overview.json"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_identity_and_size(name: str) -> None:
    board = BOARDS[name]
    path = next(path for path in dashboard_files() if path.stem == name)
    assert path.stat().st_size < SIZE_LIMIT
    assert board["uid"] == f"tether-{name}"
    assert len(board["uid"]) <= 40
    assert board["title"].startswith("Tether / ")
    assert board["schemaVersion"] == SCHEMA_VERSION
    assert board["id"] is None  # provisioning assigns ids; a fixed id collides across instances
    assert "tether" in board["tags"]


def test_uids_and_titles_are_unique() -> None:
    assert len({board["uid"] for board in BOARDS.values()}) == len(BOARDS)
    assert len({board["title"] for board in BOARDS.values()}) == len(BOARDS)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_has_a_prometheus_datasource_variable(name: str) -> None:
    variables = {var["name"]: var for var in BOARDS[name]["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var in variables.values():
        assert var["type"] in {"datasource", "adhoc"}, "query variables would need their own catalog check"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_panel_queries_the_datasource_variable_and_has_a_unit(name: str) -> None:
    for panel in _data_panels(BOARDS[name]):
        where = f"{name}: {panel['title']}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel["fieldConfig"]["defaults"]["unit"], where
        assert panel["description"], where
        assert panel["targets"], where
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), where
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", where
            assert target["expr"].strip(), where


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_panels_have_unique_ids_and_do_not_overlap(name: str) -> None:
    panels = list(_panels(BOARDS[name]))
    assert len({panel["id"] for panel in panels}) == len(panels)
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def _substitute_grafana_variables(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace("${" + variable[1:] + "}", value).replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def test_every_dashboard_query_is_valid_promql(run_promtool: Run, tmp_path: Path) -> None:
    queries = dashboard_queries()
    as_rules = [
        {"record": f"dashboard_query_{i}", "expr": _substitute_grafana_variables(query.expr)}
        for i, query in enumerate(queries)
    ]
    rule_file = tmp_path / "dashboards.rules.yml"
    rule_file.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": as_rules}]}), encoding="utf-8"
    )
    done = run_promtool("check", "rules", str(rule_file))
    legend = "\n".join(f"dashboard_query_{i}: {query.source}" for i, query in enumerate(queries))
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{legend}"
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout


QUANTILE = re.compile(r"histogram_quantile\(\s*([0-9.]+)\s*,\s*(.*)")
CONVENTIONAL_QUANTILE = re.compile(
    r"sum by \(([\w, ]*)\) \(rate\((\w+)_bucket(\{[^}]*\})?\[(5m|\$__rate_interval)\]\)\)\)"
)


def test_quantiles_follow_the_convention() -> None:
    """histogram_quantile(q, sum by (le[, ...]) (rate(x_bucket[5m]))), everywhere."""
    found = 0
    for query in all_queries():
        for match in QUANTILE.finditer(query.expr):
            convention = CONVENTIONAL_QUANTILE.match(match[2])
            assert convention, f"{query.source}: {query.expr}"
            assert "le" in [label.strip() for label in convention[1].split(",")], query.source
            assert 0 < float(match[1]) < 1, query.source
            found += 1
    assert found >= 10


def test_overview_shows_what_the_issue_asks_for() -> None:
    exprs = " ".join(
        q.expr for q in dashboard_queries() if q.source.startswith("deploy/grafana/dashboards/overview")
    )
    assert "tether_box_responses_total" in exprs  # traffic
    assert "tether_box_full_context_bytes_total" in exprs  # bytes saved vs the full-context equivalent
    assert (
        "histogram_quantile(0.5, sum by (le) (rate(tether_box_time_to_first_token_seconds_bucket[5m])))"
        in exprs
    )
    assert (
        "histogram_quantile(0.99, sum by (le) (rate(tether_box_time_to_first_token_seconds_bucket[5m])))"
        in exprs
    )
    assert 'tether_box_responses_total{status="failed"}' in exprs  # error ratio
