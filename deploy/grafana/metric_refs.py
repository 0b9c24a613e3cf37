"""Which metric names the dashboards and alert rules query, and which ones the catalog promises.

The contract between components and observability assets is ``docs/metrics.md``. This module reads the
three sides of it without any Prometheus server:

- ``catalog(root)``: every metric of the catalog, with its type and label vocabulary;
- ``dashboard_queries(root)`` / ``rule_queries(root)``: every PromQL expression of a dashboard or a rule;
- ``selectors_of(expr)``: the metric selectors of one expression, read by a PromQL parser
  (``promql-parser``, the Rust parser's Python bindings, in the ``deploy`` and ``test`` extras).

``referenced_series(root)`` is what a drift test needs: the sample names (``x_bucket``, ``x_total``, ...)
queried anywhere, each with the files that query it, recording-rule outputs left out. A live test
scrapes every component and checks that each of those names appears in some scrape.

Run ``python -m deploy.grafana.metric_refs`` to print that list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from promql_parser import MatchOp

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = Path("deploy/grafana/dashboards")
RULE_DIR = Path("deploy/prometheus/rules")
CATALOG = Path("docs/metrics.md")

# Named in the catalog's preamble rather than in its tables: every component exports them.
_COMMON_METRICS = {"tether_build_info": ("gauge", ("component", "version"))}
# prometheus_client's process collector (Linux); the catalog says "process_cpu_seconds_total, ...".
PROCESS_SERIES = frozenset(
    {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    }
)
# Labels that Prometheus adds at scrape time (and that the Operator's ServiceMonitors add): allowed
# on every metric, never exported by a component.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container", "endpoint"})
# Label values the catalog gives in prose rather than in its tables (api_box section).
_PROSE_VALUES = {
    "mode": frozenset({"ws", "http", "sse"}),
    "direction": frozenset({"client_to_server", "server_to_client"}),
}
_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
# Tether's own series, and vLLM's that a worker on the vllm engine re-exports (colons are part of vLLM's
# names; a recording rule's output is no catalog row).
_PREFIXES = ("tether_", "vllm:")


@dataclass(frozen=True)
class CatalogEntry:
    """One metric of docs/metrics.md: its type, per label the allowed values (empty: any), and for a
    histogram its bucket upper bounds (without +Inf)."""

    name: str
    kind: str
    labels: dict[str, frozenset[str]] = field(default_factory=dict)
    buckets: tuple[float, ...] = ()

    def series(self) -> tuple[str, ...]:
        """The sample names a scrape shows for this metric (histograms: _bucket, _sum, _count)."""
        return tuple(self.name + suffix for suffix in _SUFFIXES[self.kind])


@dataclass(frozen=True)
class Selector:
    """A metric name as it appears in a query, with its label matchers as (label, op, value)."""

    name: str
    matchers: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it lives (file and a human-readable location inside it)."""

    expr: str
    source: str


# ---------------------------------------------------------------------------------------- catalog


def _parse_labels(cell: str) -> dict[str, frozenset[str]]:
    labels: dict[str, frozenset[str]] = {}
    for part in cell.replace("\\|", "|").split(","):
        name, _, values = part.strip().partition("=")
        if name:
            labels[name] = frozenset(v for v in values.split("|") if v) or _PROSE_VALUES.get(
                name, frozenset()
            )
    return labels


def bucket_layouts(root: Path = ROOT) -> dict[str, tuple[float, ...]]:
    """The catalog's named bucket layouts, e.g. ``{"LATENCY_BUCKETS": (0.001, ...)}``."""
    layout = re.compile(r"^- `([A-Z_]+_BUCKETS)`[^:]*:\s*([\d. ]+)$")
    return {
        match[1]: tuple(float(bound) for bound in match[2].split())
        for line in (root / CATALOG).read_text(encoding="utf-8").splitlines()
        if (match := layout.match(line.strip()))
    }


def catalog(root: Path = ROOT) -> dict[str, CatalogEntry]:
    """Parse the metric tables of docs/metrics.md (plus the preamble's common metrics) by name."""
    entries = {
        name: CatalogEntry(name, kind, {label: frozenset() for label in labels})
        for name, (kind, labels) in _COMMON_METRICS.items()
    }
    layouts = bucket_layouts(root)
    for line in (root / CATALOG).read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)]
        if len(cells) > 5 and cells[1].startswith(_PREFIXES) and cells[2] in _SUFFIXES:
            named = [bounds for layout, bounds in layouts.items() if layout in cells[4]]
            buckets = named[0] if named and cells[2] == "histogram" else ()
            entries[cells[1]] = CatalogEntry(cells[1], cells[2], _parse_labels(cells[3]), buckets)
    return entries


def catalog_series(entries: dict[str, CatalogEntry]) -> dict[str, CatalogEntry]:
    """Map every sample name a component exports (``x_bucket``, ``x_total``, ...) to its catalog entry."""
    return {series: entry for entry in entries.values() for series in entry.series()}


# ---------------------------------------------------------------------------------------- PromQL

_OPS = (
    (MatchOp.Equal, "="),
    (MatchOp.NotEqual, "!="),
    (MatchOp.Re, "=~"),
    (MatchOp.NotRe, "!~"),
)  # unhashable
_RANGE = re.compile(r"\[[^\]]*\]")
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_SOME_DURATION = "5m"


def selectors_of(expr: str) -> list[Selector]:
    """The metric selectors of a PromQL expression, in order of appearance.

    The expression is parsed by promql-parser (Python bindings of the Rust PromQL parser); Grafana
    variables in ranges and subqueries (``[$__rate_interval]``, ``[${__range}]``) are read as a fixed
    duration first, since PromQL has no variables. A selector named only by ``{__name__="x"}`` is ``x``.
    Raises ValueError for an expression that does not parse or a selector without a metric name.
    """
    text = _RANGE.sub(lambda bracket: _GRAFANA_VARIABLE.sub(_SOME_DURATION, bracket.group()), expr)
    try:
        tree = promql_parser.parse(text)
    except ValueError as exc:
        raise ValueError(f"cannot parse {expr!r}: {exc}") from None
    found: list[Selector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(_selector(node, expr))

    promql_parser.walk(tree, visit)
    return found


def _op(op: MatchOp) -> str:
    return next(text for known, text in _OPS if op == known)


def _selector(node: promql_parser.VectorSelector, expr: str) -> Selector:
    groups = [node.matchers.matchers, *node.matchers.or_matchers]
    matchers = tuple((m.name, _op(m.op), m.value) for group in groups for m in group)
    name = node.name or next((v for label, op, v in matchers if label == "__name__" and op == "="), None)
    if name is None:
        raise ValueError(f"selector without a metric name in {expr!r}")
    return Selector(name, tuple(m for m in matchers if m[0] != "__name__"))


# ---------------------------------------------------------------------------------------- sources


def _walk_exprs(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        here = node["title"] if isinstance(node.get("title"), str) else where
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value, here
            else:
                yield from _walk_exprs(value, here)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_exprs(item, where)


def dashboard_files(root: Path = ROOT) -> list[Path]:
    """The committed dashboard JSON files, sorted."""
    return sorted((root / DASHBOARD_DIR).glob("*.json"))


def rule_files(root: Path = ROOT) -> list[Path]:
    """The Prometheus rule files (``*.rules.yml``), sorted."""
    return sorted((root / RULE_DIR).glob("*.rules.yml"))


def dashboard_queries(root: Path = ROOT) -> list[Query]:
    """Every ``expr`` of every dashboard: panel targets, annotations, anything else that holds one."""
    queries = []
    for path in dashboard_files(root):
        board = json.loads(path.read_text(encoding="utf-8"))
        rel = path.relative_to(root).as_posix()
        queries += [Query(expr, f"{rel}: {where}") for expr, where in _walk_exprs(board, "")]
    return queries


def rules(root: Path = ROOT) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every rule (recording or alerting) of every rule file, with its file."""
    for path in rule_files(root):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                yield path, rule


def rule_queries(root: Path = ROOT) -> list[Query]:
    """Every rule's ``expr``, located by file and rule name."""
    return [
        Query(rule["expr"], f"{path.relative_to(root).as_posix()}: {rule.get('alert') or rule.get('record')}")
        for path, rule in rules(root)
    ]


def recorded_names(root: Path = ROOT) -> set[str]:
    """The names the recording rules define (``level:metric:operations``)."""
    return {rule["record"] for _, rule in rules(root) if "record" in rule}


def all_queries(root: Path = ROOT) -> list[Query]:
    """Dashboard and rule expressions together."""
    return dashboard_queries(root) + rule_queries(root)


def referenced_series(root: Path = ROOT) -> dict[str, set[str]]:
    """Sample names that dashboards and rules query -> where; recording-rule outputs left out.

    This is the list a live "scrape every component" test checks against the scraped sample names.
    """
    recorded = recorded_names(root)
    found: dict[str, set[str]] = {}
    for query in all_queries(root):
        for selector in selectors_of(query.expr):
            if selector.name not in recorded:
                found.setdefault(selector.name, set()).add(query.source)
    return found


def main() -> None:
    """Print every referenced sample name with the places that query it."""
    for name, sources in sorted(referenced_series().items()):
        print(f"{name}\t{len(sources)}\t{sorted(sources)[0]}")


if __name__ == "__main__":
    main()
