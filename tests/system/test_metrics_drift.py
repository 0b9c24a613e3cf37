"""No drift between the components and the observability assets.

Starts from the shared real cluster (router, boxes, workers, Redis when installed), drives traffic in every
mode through the router with the official SDK, scrapes every component's /metrics, and fails if any metric
that a Grafana dashboard or an alert rule queries is not exported by some component.
"""

from __future__ import annotations

import urllib.request
import uuid
from typing import Any

from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from deploy.grafana.metric_refs import PROCESS_SERIES, referenced_series
from tether.config import DEV_API_KEY
from tether.supervisor import LocalCluster

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "grep",
        "description": "Search the code.",
        "parameters": {"type": "object", "properties": {"pattern": {"type": "string"}}},
    }
]


def _drive_every_mode(cluster: LocalCluster) -> None:
    client = OpenAI(base_url=cluster.base_url, api_key=DEV_API_KEY, timeout=30, max_retries=0)
    model = client.models.list().data[0].id
    headers = {"X-Session-Id": f"drift-{uuid.uuid4().hex}"}
    first = client.responses.create(model=model, input="find fizz", tools=TOOLS, extra_headers=headers)
    client.responses.create(
        model=model, input="go on", previous_response_id=first.id, tools=TOOLS, extra_headers=headers
    )
    with client.responses.create(model=model, input="stream it", stream=True, extra_headers=headers) as s:
        assert [e.type for e in s][-1] == "response.completed"
    with client.responses.connect(extra_headers=headers) as conn:
        conn.response.create(model=model, input="hello", store=False, tools=TOOLS)
        for event in conn:
            if event.type in ("response.completed", "response.failed", "error"):
                assert event.type == "response.completed"
                break


def _scrape(url: str) -> set[str]:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
        text = response.read().decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_every_metric_queried_by_a_dashboard_or_rule_is_exported(cluster: LocalCluster) -> None:
    _drive_every_mode(cluster)
    assert cluster.metrics_urls, "the cluster exposes no metrics endpoints"
    exported: set[str] = set()
    for url in cluster.metrics_urls.values():
        exported |= _scrape(url)
    # vLLM's own series (`vllm:*`, docs/vllm.md) exist only on a worker running the vllm engine, which needs a
    # GPU; tests/unit/observability checks that they are in the metric catalog.
    wanted = {name: places for name, places in referenced_series().items() if not name.startswith("vllm:")}
    missing = {name: sorted(places) for name, places in wanted.items() if name not in exported}
    assert not missing, f"queried but not exported: {missing}"
    # Sanity: the process collector is on every component, so CPU per turn can be read from metrics.
    assert "process_cpu_seconds_total" in exported
    assert PROCESS_SERIES & exported
