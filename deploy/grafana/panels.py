"""Plain-dict builders for Grafana dashboard JSON (no SDK: the output is small and stable).

Every panel queries the ``$datasource`` template variable (type ``datasource``, plugin ``prometheus``),
carries a unit, and is placed by ``dashboard()`` on Grafana's 24-column grid, section by section.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Grafana 12's dashboard schema version (the DashboardMigrator's latest): Grafana loads it unmigrated.
SCHEMA_VERSION = 42
GRID_COLUMNS = 24
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
Panel = dict[str, Any]
Threshold = tuple[float, str]


def _targets(queries: Sequence[tuple[str, str]], *, instant: bool = False) -> list[dict[str, Any]]:
    """Grafana targets A, B, ... from (expr, legend) pairs."""
    return [
        {
            "datasource": DATASOURCE,
            "expr": expr,
            "legendFormat": legend or "__auto",
            "range": not instant,
            "instant": instant,
            "refId": chr(ord("A") + i),
            **({"format": "table"} if instant else {}),
        }
        for i, (expr, legend) in enumerate(queries)
    ]


def _thresholds(steps: Sequence[Threshold], base: str) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}] + [{"color": c, "value": v} for v, c in steps],
    }


def _panel(kind: str, title: str, description: str, width: int, height: int) -> Panel:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": width, "x": 0, "y": 0},
    }


def timeseries(
    title: str,
    description: str,
    queries: Sequence[tuple[str, str]],
    unit: str,
    *,
    thresholds: Sequence[Threshold] = (),
    base: str = "green",
    maximum: float | None = None,
    width: int = 12,
    height: int = 8,
) -> Panel:
    """A time-series panel; thresholds, when given, are drawn as dashed lines."""
    defaults: dict[str, Any] = {
        "unit": unit,
        "min": 0,
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
        },
        "thresholds": _thresholds(thresholds, base),
    }
    if maximum is not None:
        defaults["max"] = maximum
    return _panel("timeseries", title, description, width, height) | {
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": _targets(queries),
    }


def stat(
    title: str,
    description: str,
    expr: str,
    unit: str,
    *,
    thresholds: Sequence[Threshold] = (),
    base: str = "green",
    mappings: Sequence[tuple[str, str, str]] = (),
    instant: bool = False,
    width: int = 4,
    height: int = 4,
) -> Panel:
    """A single-value panel (last value); ``mappings`` are (value, text, color) value mappings."""
    value_mappings = [
        {"type": "value", "options": {value: {"text": text, "color": color, "index": i}}}
        for i, (value, text, color) in enumerate(mappings)
    ]
    return _panel("stat", title, description, width, height) | {
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": {"mode": "thresholds"},
                "thresholds": _thresholds(thresholds, base),
                "mappings": value_mappings,
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none" if instant else "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
        "targets": [t | {"legendFormat": title} for t in _targets([(expr, "")], instant=instant)],
    }


def table(
    title: str, description: str, expr: str, *, unit: str = "none", width: int = 12, height: int = 8
) -> Panel:
    """A table of one instant query, one row per series, the time column hidden."""
    return _panel("table", title, description, width, height) | {
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": _thresholds((), "green")},
            "overrides": [],
        },
        "options": {"showHeader": True, "cellHeight": "sm"},
        "transformations": [
            {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": {}}}
        ],
        "targets": _targets([(expr, "")], instant=True),
    }


def _row(title: str) -> Panel:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "panels": [],
        "gridPos": {"h": 1, "w": GRID_COLUMNS, "x": 0, "y": 0},
    }


def _layout(sections: Sequence[tuple[str, Sequence[Panel]]]) -> list[Panel]:
    """Place panels left to right, wrapping at 24 columns, each section under its row header."""
    placed: list[Panel] = []
    y = 0
    for title, panels in sections:
        placed.append(_row(title) | {"gridPos": {"h": 1, "w": GRID_COLUMNS, "x": 0, "y": y}})
        y, x, line_height = y + 1, 0, 0
        for panel in panels:
            w, h = panel["gridPos"]["w"], panel["gridPos"]["h"]
            if x + w > GRID_COLUMNS:
                y, x, line_height = y + line_height, 0, 0
            placed.append(panel | {"gridPos": {"h": h, "w": w, "x": x, "y": y}})
            x, line_height = x + w, max(line_height, h)
        y += line_height
    return [panel | {"id": i} for i, panel in enumerate(placed, start=1)]


def _templating() -> dict[str, Any]:
    datasource = {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }
    # Ad-hoc filters add label matchers (namespace, job, instance, ...) to every query of the board.
    filters = {"name": "filter", "label": "Filters", "type": "adhoc", "datasource": DATASOURCE, "hide": 0}
    return {"list": [datasource, filters]}


def annotation(name: str, expr: str, title: str, color: str) -> dict[str, Any]:
    """A Prometheus annotation: a region wherever ``expr`` has a value, labelled by instance."""
    return {
        "name": name,
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": color,
        "expr": expr,
        "step": "60s",
        "titleFormat": title,
        "textFormat": "{{instance}}",
        "tagKeys": "instance",
        "useValueForTime": False,
    }


_BUILT_IN_ANNOTATION = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


def dashboard(
    uid: str,
    title: str,
    description: str,
    sections: Sequence[tuple[str, Sequence[Panel]]],
    *,
    annotations: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A complete dashboard: ``sections`` are (row title, panels) in display order."""
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["tether"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "templating": _templating(),
        "annotations": {"list": [_BUILT_IN_ANNOTATION, *annotations]},
        "links": [
            {
                "title": "Tether",
                "type": "dashboards",
                "tags": ["tether"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "panels": _layout(sections),
    }
