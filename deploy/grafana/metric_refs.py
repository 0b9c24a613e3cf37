"""Which metric names the dashboards and alert rules query, and which ones the catalog promises.

The contract between components and observability assets is ``docs/metrics.md``. This module reads the
three sides of it without any Prometheus server:

- ``catalog(root)``: every metric of the catalog, with its type and label vocabulary;
- ``dashboard_queries(root)`` / ``rule_queries(root)``: every PromQL expression of a dashboard or a rule;
- ``selectors_of(expr)``: the metric selectors of one expression (a small PromQL scanner, not a parser:
  it knows strings, label matchers, ranges, grouping clauses, keywords, numbers and Grafana variables).

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

import yaml

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
        if len(cells) > 5 and cells[1].startswith("tether_") and cells[2] in _SUFFIXES:
            named = [bounds for layout, bounds in layouts.items() if layout in cells[4]]
            buckets = named[0] if named and cells[2] == "histogram" else ()
            entries[cells[1]] = CatalogEntry(cells[1], cells[2], _parse_labels(cells[3]), buckets)
    return entries


def catalog_series(entries: dict[str, CatalogEntry]) -> dict[str, CatalogEntry]:
    """Map every sample name a component exports (``x_bucket``, ``x_total``, ...) to its catalog entry."""
    return {series: entry for entry in entries.values() for series in entry.series()}


# ---------------------------------------------------------------------------------------- PromQL scan

_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"})
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk"}
    | {"quantile", "limitk", "limit_ratio"}
)
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$\w+)
  | (?P<range>\[[^\]]*\])
  | (?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+\b)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<braces>\{(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^{}"'])*\})
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_MATCHER = re.compile(r"""\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*,?""")


def _tokens(expr: str) -> list[tuple[str, str]]:
    return [
        (kind, match.group())
        for match in _TOKEN.finditer(expr)
        if (kind := match.lastgroup or "other") != "space"
    ]


def _matchers(braces: str) -> tuple[tuple[str, str, str], ...]:
    body, found, pos = braces[1:-1], [], 0
    while pos < len(body):
        match = _MATCHER.match(body, pos)
        if match is None:
            raise ValueError(f"cannot read label matchers {braces!r}")
        label, op, quoted = match.groups()
        found.append((label, op, quoted[1:-1]))
        pos = match.end()
    return tuple(found)


def selectors_of(expr: str) -> list[Selector]:
    """The metric selectors of a PromQL expression, in order of appearance.

    Function and aggregation names (an identifier followed by ``(``), keywords, grouping label lists,
    strings, numbers, durations, ranges and Grafana variables are skipped.
    """
    tokens, found, i = _tokens(expr), [], 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "ident" and text in _LABEL_LISTS and following[1] == "(":
            i = _skip_parens(tokens, i + 1)
            continue
        if kind == "ident" and _is_metric_name(text, following):
            has_matchers = following[0] == "braces"
            found.append(Selector(text, _matchers(following[1]) if has_matchers else ()))
            i += 2 if has_matchers else 1
            continue
        if kind == "braces":
            raise ValueError(f"selector without a metric name in {expr!r}")
        i += 1
    return found


def _is_metric_name(text: str, following: tuple[str, str]) -> bool:
    if following[1] == "(" or text.lower() in _KEYWORDS or text in _LABEL_LISTS:
        return False  # a function call, a keyword, or group_left/group_right without a label list
    return not (text in _AGGREGATIONS and following[1] in ("by", "without"))  # sum by (le) (...)


def _skip_parens(tokens: list[tuple[str, str]], i: int) -> int:
    """Index just past the parenthesised list starting at tokens[i] == '('."""
    depth = 0
    for j in range(i, len(tokens)):
        depth += {"(": 1, ")": -1}.get(tokens[j][1], 0)
        if depth == 0:
            return j + 1
    raise ValueError("unbalanced parentheses")


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
