"""Every tether_box_* metric of docs/metrics.md is exported (zeros included), on the injected registry."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from api_box.io.app import build_admin_app

CATALOG = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"


def catalog() -> dict[str, str]:
    rows = re.findall(r"^\| (tether_box_\w+) \| (\w+) \|", CATALOG.read_text(), flags=re.M)
    return dict(rows)


async def test_every_catalogued_box_metric_is_exported(
    box: TestClient[Any, Any], registry: CollectorRegistry
) -> None:
    names = catalog()
    assert len(names) >= 20
    samples = {s.name for family in registry.collect() for s in family.samples}
    missing = []
    # Exported only where a cold store is configured (see the next test); this box runs without Redis.
    names.pop("tether_box_redis_up")
    for name, kind in names.items():
        wanted = f"{name}_count" if kind == "histogram" else name
        if wanted not in samples:
            missing.append(name)
    assert missing == []
    assert "tether_build_info" in samples
    assert "process_cpu_seconds_total" in samples


async def test_a_box_without_redis_does_not_report_redis_down(
    box: TestClient[Any, Any], registry: CollectorRegistry
) -> None:
    # tether_box_redis_up == 0 pages someone (TetherRedisUnreachable); no Redis configured is not an outage.
    samples = {s.name for family in registry.collect() for s in family.samples}
    assert "tether_box_redis_up" not in samples
    assert "tether_box_write_behind_queue_depth" in samples


async def test_the_admin_app_serves_metrics(
    box: TestClient[Any, Any], registry: CollectorRegistry, aiohttp_client: Any
) -> None:
    admin = await aiohttp_client(build_admin_app(registry, box.app))
    text = await (await admin.get("/metrics")).text()
    assert 'tether_box_errors_total{code="previous_response_not_found"} 0.0' in text
    assert (await admin.get("/readyz")).status == 200
    assert (await admin.get("/livez")).status == 200
