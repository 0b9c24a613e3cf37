"""System-test fixtures: a real local cluster (real processes, ports 0, sim engine at speed 0).

`cluster` is one cluster for the whole session (router, 2 boxes, 2 workers, Redis when installed),
run by tether.supervisor.LocalCluster on an event loop in a background thread, so sync and async
tests share it. Tests that stop or break processes start their own cluster instead.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import urllib.request
from collections.abc import Iterator, Mapping

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tether.config import ClusterSpec
from tether.supervisor import LocalCluster

START_BUDGET = 90.0  # seconds; 2 shared cores start ~6 Python processes


class ClusterThread:
    """Runs a LocalCluster on its own event loop in a daemon thread; a context manager."""

    def __init__(self, spec: ClusterSpec, *, environ: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        self.environ = environ  # the children's environment (default: this process's)
        self.logs: collections.deque[str] = collections.deque(maxlen=4000)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="tether-cluster", daemon=True)
        self.cluster: LocalCluster | None = None

    def __enter__(self) -> LocalCluster:
        self._thread.start()
        if not self._ready.wait(START_BUDGET + 30):
            raise RuntimeError("the cluster thread did not report back")
        if self._error is not None or self.cluster is None:
            tail = "\n".join(list(self.logs)[-60:])
            raise RuntimeError(f"the cluster did not start: {self._error!r}\n{tail}") from self._error
        return self.cluster

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self.spec.stop_timeout * 4 + 30)

    def _sink(self, name: str, label: str, line: str) -> None:
        self.logs.append(f"[{name}] {line}")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with LocalCluster(self.spec, sink=self._sink, environ=self.environ) as cluster:
            self.cluster = cluster
            self._ready.set()
            await self._stop.wait()


def real_model_spec(model_path: object) -> ClusterSpec:
    """One worker on the torch engine serving this checkpoint, one box, the router, no Redis."""
    return ClusterSpec(
        workers=1,
        boxes=1,
        router=True,
        redis=None,
        engine="torch",
        model_path=str(model_path),
        start_timeout=START_BUDGET,
    )


def metric_total(cluster: LocalCluster, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels over every process of the cluster."""
    total = 0.0
    for url in cluster.metrics_urls.values():
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
    return total


@pytest.fixture(scope="session")
def cluster_thread() -> Iterator[ClusterThread]:
    spec = ClusterSpec(workers=2, boxes=2, router=True, redis="auto", speed=0, start_timeout=START_BUDGET)
    runner = ClusterThread(spec)
    with runner:
        yield runner


@pytest.fixture
def cluster(cluster_thread: ClusterThread) -> LocalCluster:
    """The shared running cluster; fails the test if one of its processes died."""
    running = cluster_thread.cluster
    assert running is not None
    assert running.failure is None, f"{running.failure}\n" + "\n".join(list(cluster_thread.logs)[-60:])
    return running
