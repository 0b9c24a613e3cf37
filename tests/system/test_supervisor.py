"""LocalCluster's process handling, with stand-in services (tests/system/fakes/fake_service.py).

Real processes and real signals; the services are fakes that honour the CLI contracts, so these tests
pin the supervisor's behaviour independently of the real components.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tether.config import ClusterSpec
from tether.core.restart import RestartPolicy
from tether.errors import ChildDied, ChildStartError
from tether.supervisor import LocalCluster

FAKE = [sys.executable, str(Path(__file__).parent / "fakes" / "fake_service.py")]


class Lines:
    """A log sink that keeps (process, stream, line) in arrival order; tests can await a line."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, str]] = []
        self._arrived = asyncio.Condition()

    def __call__(self, name: str, label: str, line: str) -> None:
        self.records.append((name, label, line))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()

    async def seen(self, name: str, start: str, within: float = 30) -> str:
        """The first line of `name` that starts with `start`, once it has arrived."""

        def found() -> str | None:
            return next((line for line in self.of(name) if line.startswith(start)), None)

        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: found() is not None)
        line = found()
        assert line is not None
        return line

    def of(self, name: str) -> list[str]:
        return [line for n, _, line in self.records if n == name]

    def args_of(self, name: str) -> dict[str, object]:
        line = next(line for line in self.of(name) if line.startswith("fake-args "))
        return dict(json.loads(line.removeprefix("fake-args ")))

    def index(self, name: str, line: str) -> int:
        return next(i for i, (n, _, text) in enumerate(self.records) if n == name and text == line)


def fakes(**env_per_kind: str) -> dict[str, Sequence[str]]:
    """Programs for every kind; `box="FAKE_EXIT=3"` runs that kind with an extra environment variable."""
    programs: dict[str, Sequence[str]] = {}
    for kind in ("worker", "box", "router"):
        prefix = ["env", env_per_kind[kind]] if kind in env_per_kind else []
        programs[kind] = [*prefix, *FAKE, kind]
    return programs


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_cluster_starts_in_order_and_stops_in_reverse() -> None:
    lines = Lines()
    spec = ClusterSpec(workers=2, boxes=2, redis="auto", speed=0)
    cluster = LocalCluster(spec, sink=lines, programs=fakes())
    async with cluster:
        assert cluster.base_url == f"{cluster.router_url}/v1"
        assert cluster.names() == ["redis", "worker-0", "worker-1", "box-0", "box-1", "router"]
        box = lines.args_of("box-1")
        argv = list(box["argv"])  # type: ignore[call-overload]
        assert argv[argv.index("--workers") + 1] == ",".join(cluster.worker_targets)
        assert box["redis_url"] == cluster.redis_url
        router = list(lines.args_of("router")["argv"])  # type: ignore[call-overload]
        members = [f"box-{i}={url.removeprefix('http://')}" for i, url in enumerate(cluster.box_urls)]
        assert router[router.index("--boxes") + 1] == ",".join(members)
        assert list(cluster.metrics_urls) == ["box-0", "box-1", "router"]  # the fake worker's metrics are off
        assert ("worker-0", "stderr", "a line on stderr") in lines.records
        pids = cluster.pids
    assert all(gone(pid) for pid in pids.values())
    stopped = [lines.index(name, "fake stopping") for name in ("router", "box-0", "worker-0")]
    assert stopped == sorted(stopped)
    assert cluster.failure is None


async def test_without_a_router_clients_use_box_zero() -> None:
    spec = ClusterSpec(workers=1, boxes=2, router=False, redis=None)
    async with LocalCluster(spec, sink=Lines(), programs=fakes()) as cluster:
        assert cluster.router_url is None
        assert cluster.base_url == f"{cluster.box_urls[0]}/v1"
        assert cluster.redis_url is None


async def test_a_child_that_dies_is_reported_and_fails_the_cluster() -> None:
    lines = Lines()
    spec = ClusterSpec(workers=1, boxes=2, router=False, redis=None)
    cluster = LocalCluster(spec, sink=lines, programs=fakes())
    async with cluster:
        os.kill(cluster.pids["box-1"], 9)
        failure = await asyncio.wait_for(cluster.wait_failure(), 30)
        assert (failure.name, failure.returncode) == ("box-1", -9)
        assert isinstance(cluster.failure, ChildDied)
    assert "box-1 exited unexpectedly with status -9" in lines.of("tether")
    assert not await cluster.stop()


async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    lines = Lines()
    spec = ClusterSpec(workers=1, boxes=1, router=False, redis=None, stop_timeout=0.3)
    cluster = LocalCluster(spec, sink=lines, programs=fakes(box="FAKE_IGNORE_SIGTERM=1"))
    await cluster.start()
    pid = cluster.pids["box-0"]
    assert not await cluster.stop()
    assert gone(pid)
    assert "box-0 did not stop within 0.3 s; killing it" in lines.of("tether")
    assert "box-0 exited with status -9" in lines.of("tether")


async def test_a_child_that_exits_before_serving_fails_the_start_and_stops_the_rest() -> None:
    lines = Lines()
    spec = ClusterSpec(workers=1, boxes=1, router=False, redis=None)
    cluster = LocalCluster(spec, sink=lines, programs=fakes(box="FAKE_EXIT=3"))
    with pytest.raises(ChildStartError, match="box-0 exited with status 3 before serving"):
        await cluster.start()
    assert all(gone(pid) for pid in cluster.pids.values())
    assert "fake stopping" in lines.of("worker-0")


async def test_a_child_that_never_announces_itself_times_out() -> None:
    spec = ClusterSpec(workers=1, boxes=1, router=False, redis=None, start_timeout=1)
    cluster = LocalCluster(spec, sink=Lines(), programs=fakes(worker="FAKE_SILENT=1"))
    with pytest.raises(ChildStartError, match="worker-0 printed no serving line within 1 s"):
        await cluster.start()
    assert all(gone(pid) for pid in cluster.pids.values())


async def test_a_missing_program_fails_the_start_clearly() -> None:
    programs = {**fakes(), "worker": ["/nonexistent/tether-gpu-worker"]}
    cluster = LocalCluster(ClusterSpec(workers=1, boxes=1, redis=None), sink=Lines(), programs=programs)
    with pytest.raises(ChildStartError, match="worker-0: cannot run /nonexistent/tether-gpu-worker"):
        await cluster.start()


async def test_a_deliberate_kill_is_no_failure_and_a_restart_keeps_the_address() -> None:
    spec = ClusterSpec(workers=1, boxes=2, redis=None)
    async with LocalCluster(spec, sink=Lines(), programs=fakes()) as cluster:
        before = cluster.box_urls
        assert await cluster.kill("box-1") == -9
        assert await cluster.terminate("worker-0") == 0
        await cluster.restart("box-1")
        await cluster.restart("worker-0")
        assert cluster.box_urls == before
        assert cluster.failure is None
        pids = cluster.pids
    assert cluster.failure is None
    assert all(gone(pid) for pid in pids.values())


async def test_hurry_skips_the_remaining_grace() -> None:
    lines = Lines()
    spec = ClusterSpec(workers=1, boxes=1, router=False, redis=None, stop_timeout=60)
    cluster = LocalCluster(spec, sink=lines, programs=fakes(box="FAKE_IGNORE_SIGTERM=1"))
    await cluster.start()
    stopping = asyncio.create_task(cluster.stop())
    cluster.hurry()  # what a second Ctrl-C does; before or during the wait, no grace is waited out
    assert not await asyncio.wait_for(stopping, 30)
    assert "box-0 did not stop within 60 s; killing it" in lines.of("tether")


async def test_with_restart_a_child_that_dies_comes_back_on_its_port() -> None:
    lines = Lines()
    spec = ClusterSpec(workers=1, boxes=2, redis=None, restart=True)
    started: list[tuple[str, int]] = []
    cluster = LocalCluster(spec, sink=lines, programs=fakes(), on_start=lambda n, p: started.append((n, p)))
    async with cluster:
        before, old = cluster.box_urls, cluster.pids["box-1"]
        os.kill(old, signal.SIGKILL)
        await lines.seen("tether", "box-1 exited with status -9 after ")
        await _until(lambda: cluster.restarts == 1)
        assert cluster.pids["box-1"] != old
        assert f"started box-1 (pid {cluster.pids['box-1']})" in lines.of("tether")
        assert cluster.box_urls == before  # same port: the router finds it where it was
        assert started[-1] == ("box-1", cluster.pids["box-1"])
        first, again = _all_args(lines, "box-1")
        port = again.index("--port") + 1
        assert again[port] == before[1].rsplit(":", 1)[1]  # the port it had bound, not 0 again
        assert again[:port] + again[port + 1 :] == first[:port] + first[port + 1 :]  # same box id, workers
        assert (cluster.restarts, cluster.failure) == (1, None)
        pids = cluster.pids
    assert await cluster.stop()
    assert all(gone(pid) for pid in pids.values())


async def test_with_restart_a_clean_exit_comes_back_too() -> None:
    lines = Lines()
    spec = ClusterSpec(workers=1, boxes=1, router=False, redis=None, restart=True)
    async with LocalCluster(spec, sink=lines, programs=fakes()) as cluster:
        os.kill(cluster.pids["box-0"], signal.SIGTERM)  # a drain asked of the box itself, not of us
        note = await lines.seen("tether", "box-0 exited with status 0")
        assert note.endswith("starting it again in 0 s")
        await _until(lambda: cluster.restarts == 1)
        assert lines.of("tether")[-1] == f"started box-0 (pid {cluster.pids['box-0']})"
    assert cluster.failure is None


async def test_a_crash_loop_backs_off_and_a_stop_calls_off_the_pending_restart() -> None:
    lines = Lines()
    spec = ClusterSpec(workers=1, boxes=1, router=False, redis=None, restart=True, stop_timeout=5)
    policy = RestartPolicy(first_backoff=60, max_backoff=60, stable_after=30)
    cluster = LocalCluster(
        spec, sink=lines, programs=fakes(box="FAKE_CRASH_AFTER=0.1"), restart_policy=policy
    )
    await cluster.start()
    await _until(lambda: len(_restart_notes(lines)) == 2, within=60)
    first, second = _restart_notes(lines)
    assert first.startswith("box-0 exited with status 3 after ")
    assert first.endswith("; starting it again in 0 s")  # a first quick exit: at once
    assert second.endswith("; starting it again in 60 s (2 quick exits in a row)")
    assert await asyncio.wait_for(cluster.stop(), 10)  # does not wait the 60 s out; the loop is no failure
    assert all(gone(pid) for pid in cluster.pids.values())
    assert cluster.restarts == 1


async def test_with_restart_a_deliberate_stop_is_not_restarted() -> None:
    lines = Lines()
    spec = ClusterSpec(workers=1, boxes=2, redis=None, restart=True)
    async with LocalCluster(spec, sink=lines, programs=fakes()) as cluster:
        assert await cluster.terminate("box-1") == 0
        assert await cluster.kill("box-0") == -9
        await cluster.restart("box-1")
        assert cluster.restarts == 0
        assert not _restart_notes(lines)


def _restart_notes(lines: Lines) -> list[str]:
    return [line for line in lines.of("tether") if "starting it again" in line]


def _all_args(lines: Lines, name: str) -> list[list[str]]:
    return [
        json.loads(line.removeprefix("fake-args "))["argv"]
        for line in lines.of(name)
        if line.startswith("fake-args ")
    ]


async def _until(condition: Callable[[], bool], within: float = 30) -> None:
    """Wait for a condition the supervisor reaches on its own loop (polled each loop turn, no fixed sleep)."""
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.01)
