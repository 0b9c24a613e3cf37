"""Every metric a dashboard or rule queries is in docs/metrics.md, with labels the catalog defines.

The live version of this check (scrape every component, compare with ``referenced_series()``) belongs
with the system tests; this one holds the assets to the catalog.
"""

from __future__ import annotations

import re

import pytest
from prometheus_client.utils import floatToGoString

from deploy.grafana.metric_refs import (
    PROCESS_SERIES,
    TARGET_LABELS,
    Selector,
    all_queries,
    catalog,
    catalog_series,
    dashboard_queries,
    recorded_names,
    referenced_series,
    selectors_of,
)

CATALOG = catalog()
SERIES = catalog_series(CATALOG)


def test_catalog_is_read_completely() -> None:
    assert len(CATALOG) >= 44
    assert CATALOG["tether_box_time_to_first_token_seconds"].kind == "histogram"
    assert CATALOG["tether_box_time_to_first_token_seconds"].buckets[:3] == (0.001, 0.0025, 0.005)
    assert CATALOG["tether_box_inter_token_latency_seconds"].buckets[-1] == 2.5
    assert CATALOG["tether_worker_prefill_tokens_total"].labels == {"kind": {"cached", "computed"}}
    assert CATALOG["tether_router_bytes_total"].labels["mode"] == {"ws", "http"}
    assert CATALOG["tether_box_bytes_total"].labels["direction"] == {"client_to_server", "server_to_client"}
    assert CATALOG["tether_worker_output_tokens_total"].labels == {}
    assert "tether_box_cold_restore_seconds_bucket" in SERIES
    assert "tether_build_info" in SERIES


def test_every_queried_series_is_in_the_catalog() -> None:
    unknown = {
        name: sorted(sources)
        for name, sources in referenced_series().items()
        if name not in SERIES and name not in PROCESS_SERIES
    }
    assert not unknown, f"not in docs/metrics.md: {unknown}"


def test_every_recording_rule_output_used_is_defined() -> None:
    recorded = recorded_names()
    for query in all_queries():
        for selector in selectors_of(query.expr):
            if ":" in selector.name and selector.name not in SERIES:  # vLLM's names have colons too
                assert selector.name in recorded, f"{query.source}: {selector.name} is recorded by no rule"


def _check_matchers(selector: Selector, source: str) -> None:
    entry = SERIES.get(selector.name)
    if entry is None:
        return
    for label, op, value in selector.matchers:
        if label in TARGET_LABELS:
            continue
        if label == "le":
            assert selector.name.endswith("_bucket"), f"{source}: le on {selector.name}"
            bounds = {floatToGoString(bound) for bound in entry.buckets} | {"+Inf"}
            assert value in bounds, f"{source}: le={value!r} is no bucket boundary of {entry.name}"
            continue
        assert label in entry.labels, f"{source}: {entry.name} has no label {label!r}"
        allowed = entry.labels[label]
        if allowed:
            values = value.split("|") if op in {"=~", "!~"} else [value]
            assert set(values) <= allowed, f"{source}: {label}={value!r}, catalog allows {sorted(allowed)}"


def test_label_matchers_use_catalog_labels_and_values() -> None:
    checked = 0
    for query in all_queries():
        for selector in selectors_of(query.expr):
            _check_matchers(selector, query.source)
            checked += len(selector.matchers)
    assert checked >= 10


def test_every_catalog_metric_is_on_a_dashboard() -> None:
    """A metric nobody can see is a metric nobody reads: each one has a panel (add one in boards.py)."""
    shown = {selector.name for query in dashboard_queries() for selector in selectors_of(query.expr)}
    missing = [entry.name for entry in CATALOG.values() if not set(entry.series()) & shown]
    assert not missing, f"no dashboard panel shows {missing}"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", ["up"]),
        ('sum by (le) (rate(a_bucket{le="0.5", mode=~"ws|http"}[5m]))', ["a_bucket"]),
        ("histogram_quantile(0.99, sum(rate(x_bucket[5m])) by (le))", ["x_bucket"]),
        ("a / on (job) group_left (component) b * on (x) group_left c", ["a", "b", "c"]),
        ("rate(a_total[5m] offset 1h) > bool 2 and b unless c or d", ["a_total", "b", "c", "d"]),
        ("sum(increase(x_total[$__range])) - sum(increase(y[${__rate_interval}]))", ["x_total", "y"]),
        ('label_replace(up, "dst", "$1", "src", "(.*)")', ["up"]),
        ('count(z{version!="by (x)"} == 1) > 1e3', ["z"]),
        ("max_over_time(m[10m:1m]) > 0x1f", ["m"]),
        ("ns:metric:rate5m > 0.5", ["ns:metric:rate5m"]),
        ("time() - ts > 120 and on (instance) (flag == 1)", ["ts", "flag"]),
        ("topk by (job) (3, q)", ["q"]),
        ("vector(1)", []),
    ],
)
def test_selectors_of_finds_metric_names_only(expr: str, names: list[str]) -> None:
    assert [selector.name for selector in selectors_of(expr)] == names


def test_selectors_of_reads_matchers() -> None:
    (selector,) = selectors_of(r'x{a="1", b=~"p|q", c!="it\"s", d!~"r"}')
    assert selector.matchers == (("a", "=", "1"), ("b", "=~", "p|q"), ("c", "!=", 'it"s'), ("d", "!~", "r"))
    assert selectors_of('{__name__="y", e="2"}') == [Selector("y", (("e", "=", "2"),))]
    (either,) = selectors_of('z{f="1" or g="2"}')
    assert either.matchers == (("f", "=", "1"), ("g", "=", "2"))


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ('{__name__=~"x.*"}', "selector without a metric name"),
        ("x{a=1}", "cannot parse"),
        ("sum(rate(x[5m])", "cannot parse"),
        ("rate(x[$__range]) > $threshold", "cannot parse"),  # variables stand only for durations
    ],
)
def test_selectors_of_rejects_what_it_cannot_attribute(expr: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        selectors_of(expr)
