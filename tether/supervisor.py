"""LocalCluster: an asyncio supervisor that runs a whole Tether cluster as local processes.

    async with LocalCluster(ClusterSpec(boxes=2, workers=2, router=True, redis="auto", speed=0)) as c:
        client = OpenAI(base_url=c.base_url, api_key=c.spec.api_key)

It starts redis → workers → boxes → router on free ports, learns each address from the child's serving
line, waits for readiness (gRPC health SERVING, GET /readyz 200, Redis PING), and streams every child's
output prefixed with its name. Stopping goes in the reverse order: SIGTERM to a group, wait up to
`spec.stop_timeout`, then SIGKILL.

A child that exits on its own while serving is reported. With `spec.restart` (what `tether up` does) it is
started again under the same name, on the same port and with the same arguments, so that its peers find
it where it was (the router re-probes a box it lost and puts it back in its place on the ring); a child
that keeps exiting soon after it starts is restarted with a growing delay (tether/core/restart.py).
Without `spec.restart` the exit sets `failure` and wakes `wait_failure()`. Stops asked for through
`terminate`/`kill`/`stop` are never restarted. No domain logic lives here.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from tether.config import ClusterSpec
from tether.core.plan import (
    MODULES,
    PROGRAMS,
    START_ORDER,
    ChildPlan,
    Kind,
    box_name,
    box_plan,
    readiness_url,
    redis_plan,
    router_plan,
    worker_name,
    worker_plan,
)
from tether.core.restart import RestartPolicy, RestartTracker
from tether.core.serving import ServingLine
from tether.errors import ChildDied, ChildStartError, TetherError
from tether.logs import LAUNCHER, LinePrinter
from tether.process import Child, LogSink
from tether.readiness import wait_grpc_serving, wait_http_ok, wait_redis_pong

REDIS_START_ATTEMPTS = 3  # a free port found by binding can be taken before redis-server binds it
CLEAN_EXITS = (0, -signal.SIGTERM)


class LocalCluster:
    """Runs the processes of `spec` on this machine; see the module docstring."""

    def __init__(
        self,
        spec: ClusterSpec,
        *,
        sink: LogSink | None = None,
        programs: Mapping[str, Sequence[str]] | None = None,
        environ: Mapping[str, str] | None = None,
        restart_policy: RestartPolicy | None = None,
        on_start: Callable[[str, int], None] | None = None,
    ) -> None:
        self.spec = spec
        self._sink: LogSink = sink if sink is not None else LinePrinter(spec.log_format)
        self._programs = dict(programs or {})  # kind -> argv prefix, overriding the installed programs
        self._environ = dict(os.environ if environ is None else environ)
        self._children: dict[str, Child] = {}
        self._kinds: dict[str, Kind] = {}
        self._serving: dict[str, ServingLine] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._failed = asyncio.Event()
        self._hurry = asyncio.Event()
        self._stopping = False
        self._stop_task: asyncio.Task[bool] | None = None
        self.failure: ChildDied | None = None
        self.redis_url: str | None = None
        self._redis_port: int | None = None
        self._restarts = RestartTracker(restart_policy or RestartPolicy())
        self._on_start = on_start  # (name, pid) after each (re)start that became ready
        self.restarts = 0  # children started again after they exited on their own

    # ------------------------------------------------------------------ addresses
    @property
    def worker_targets(self) -> list[str]:
        """`host:port` of each worker's gRPC server, in index order."""
        return [self._serving[name].target for name in self.names("worker")]

    @property
    def box_urls(self) -> list[str]:
        """`http://host:port` of each box, in index order."""
        return [self._serving[name].http_url for name in self.names("box")]

    @property
    def router_url(self) -> str | None:
        """`http://host:port` of the router; None without one."""
        return self._serving["router"].http_url if "router" in self._serving else None

    @property
    def base_url(self) -> str:
        """The URL clients use, ending in /v1: the router's, or box-0's without a router."""
        return f"{self.router_url or self.box_urls[0]}/v1"

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Process name → metrics URL, for every process that serves metrics."""
        announced = [(name, self._serving.get(name)) for name in self.names()]
        return {name: s.metrics_url for name, s in announced if s is not None and s.metrics_url is not None}

    @property
    def pids(self) -> dict[str, int]:
        """Process name → pid, for every process started (running or not)."""
        return {name: child.pid for name, child in self._children.items() if child.pid is not None}

    def names(self, kind: Kind | None = None) -> list[str]:
        """Process names in start order, all or of one kind."""
        return [name for name, k in self._kinds.items() if kind is None or k == kind]

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every process and wait until all are ready; on any failure stop what started, re-raise."""
        try:
            await self._start_redis()
            await self._start_group([worker_plan(self.spec, i) for i in range(self.spec.workers)])
            await self._start_group([self._box_plan(i) for i in range(self.spec.boxes)])
            if self.spec.router:
                await self._start_group([self._router_plan()])
        except BaseException:
            await self.stop()
            raise

    async def wait_failure(self) -> ChildDied:
        """Return once a child died unexpectedly (never with `spec.restart`: it is started again)."""
        await self._failed.wait()
        assert self.failure is not None
        return self.failure

    def hurry(self) -> None:
        """Make a running or later stop() skip the remaining grace periods (a second Ctrl-C)."""
        self._hurry.set()

    async def stop(self) -> bool:
        """Stop everything, router first and Redis last; True when every child exited cleanly.

        Idempotent and safe to call concurrently: every caller awaits the same single shutdown, which
        also survives the caller's cancellation.
        """
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop_all(), name="cluster-stop")
        return await asyncio.shield(self._stop_task)

    async def _stop_all(self) -> bool:
        self._stopping = True
        await self._cancel_watchers()  # pending restarts first: a child they started is stopped below
        clean = True
        for kind in reversed(START_ORDER):
            group = [self._children[name] for name in self.names(kind)]
            # With restarts, a child already gone was reported when it exited (or stopped on purpose).
            counted = [c.returncode is None or not self.spec.restart for c in group]
            codes = await asyncio.gather(*(c.stop(self.spec.stop_timeout, self._hurry) for c in group))
            for child, code, count in zip(group, codes, counted, strict=True):
                reported = self.failure is not None and self.failure.name == child.name
                if count and code is not None and code not in CLEAN_EXITS and not reported:
                    self._note(f"{child.name} exited with status {code}")
                    clean = False
        return clean and self.failure is None

    async def terminate(self, name: str, grace: float | None = None) -> int | None:
        """SIGTERM one process (then SIGKILL after `grace`); a deliberate stop: not reported as a death,
        not restarted (a restart of it already pending is called off)."""
        child = self._child(name)
        child.stopping = True
        await self._cancel_watchers(name)
        code = await self._child(name).stop(self.spec.stop_timeout if grace is None else grace, self._hurry)
        self._restarts.forget(name)
        return code

    async def kill(self, name: str) -> int | None:
        """SIGKILL one process now; a deliberate stop: not reported as a death, not restarted."""
        child = self._child(name)
        child.stopping = True
        await self._cancel_watchers(name)
        code = await self._child(name).kill()
        self._restarts.forget(name)
        return code

    async def restart(self, name: str) -> None:
        """Start a stopped process again on the port it had, so that its peers find it where it was."""
        child = self._child(name)
        if child.returncode is None:
            raise TetherError(f"{name} is still running")
        await self._cancel_watchers(name)  # an automatic restart that was waiting out its backoff
        await self._launch(self._replan(name))

    # ------------------------------------------------------------------ internals
    def _replan(self, name: str) -> ChildPlan:
        """The plan of a process that ran before: same name, index and port."""
        port = self._serving[name].port if name in self._serving else self._redis_port or 0
        index = int(name.rsplit("-", 1)[1]) if "-" in name else 0
        return self._plan(self._kinds[name], index, port)

    def _plan(self, kind: Kind, index: int, port: int) -> ChildPlan:
        if kind == "worker":
            return worker_plan(self.spec, index, port)
        if kind == "box":
            return self._box_plan(index, port)
        if kind == "router":
            return self._router_plan(port)
        return redis_plan(self.spec.host, port)

    def _box_plan(self, index: int, port: int | None = None) -> ChildPlan:
        return box_plan(self.spec, index, self.worker_targets, self.redis_url, port)

    def _router_plan(self, port: int | None = None) -> ChildPlan:
        members = [(name, self._serving[name].target) for name in self.names("box")]
        return router_plan(self.spec, members, port)

    async def _start_redis(self) -> None:
        choice = self.spec.redis
        if choice is None:
            return
        if choice != "auto":
            self.redis_url = choice
            return
        if "redis" not in self._programs and shutil.which(PROGRAMS["redis"]) is None:
            self._note("redis-server is not on PATH; running without Redis")
            return
        for attempt in range(1, REDIS_START_ATTEMPTS + 1):
            port = free_port(self.spec.host)
            try:
                await self._launch(redis_plan(self.spec.host, port))
            except TetherError:
                if attempt == REDIS_START_ATTEMPTS:
                    raise
                continue
            self._redis_port = port
            self.redis_url = f"redis://{self.spec.host}:{port}/0"
            return

    async def _start_group(self, plans: Sequence[ChildPlan]) -> None:
        results = await asyncio.gather(*(self._launch(p) for p in plans), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        if self.failure is not None:  # an earlier group's process died while this one started
            raise self.failure

    async def _launch(self, plan: ChildPlan) -> None:
        argv = [*self._program(plan.kind), *plan.args]
        env = {**dict(plan.env_defaults), **self._environ, "PYTHONUNBUFFERED": "1", **dict(plan.env)}
        child = Child(plan.name, argv, env, self._sink, announces=plan.kind != "redis")
        self._children[plan.name] = child
        self._kinds[plan.name] = plan.kind
        await child.start()
        self._note(f"started {plan.name} (pid {child.pid})")
        if plan.kind == "redis":
            await self._ready_or_exit(child, wait_redis_pong(self.spec.host, int(plan.args[1]), self._budget))
        else:
            serving = await child.wait_serving(self._budget)
            self._serving[plan.name] = serving
            await self._ready_or_exit(child, self._readiness(plan.kind, serving))
        self._restarts.started(plan.name, self._now())
        if self._on_start is not None and child.pid is not None:
            self._on_start(plan.name, child.pid)
        self._watchers[plan.name] = asyncio.create_task(self._watch(child), name=f"watch-{plan.name}")

    @property
    def _budget(self) -> float:
        return self.spec.start_timeout

    def _readiness(self, kind: Kind, serving: ServingLine) -> Awaitable[None]:
        if kind == "worker":
            return wait_grpc_serving(serving.target, self._budget)
        return wait_http_ok(readiness_url(kind, serving), self._budget)

    async def _ready_or_exit(self, child: Child, ready: Awaitable[None]) -> None:
        readiness = asyncio.ensure_future(ready)
        exited = asyncio.ensure_future(child.wait())
        try:
            await asyncio.wait({readiness, exited}, return_when="FIRST_COMPLETED")
        finally:
            exited.cancel()
            if not readiness.done():
                readiness.cancel()
                await asyncio.gather(readiness, return_exceptions=True)
        if not readiness.done() or readiness.cancelled():
            raise ChildStartError(f"{child.name} exited with status {child.returncode} before it was ready")
        readiness.result()

    async def _watch(self, child: Child) -> None:
        code = await child.wait()
        if child.stopping or self._stopping:
            return
        if not self.spec.restart:
            self.failure = ChildDied(child.name, code)
            self._note(str(self.failure))
            self._failed.set()
            return
        await child.close()  # its last lines come before the note about its exit
        await self._keep_alive(child.name, f"exited with status {code}")

    async def _keep_alive(self, name: str, what: str) -> None:
        """Start `name` again after it `what` (exited, or failed to come back), backing off in a crash
        loop, until one start succeeds or the cluster stops (which cancels this task)."""
        while True:
            decision = self._restarts.exited(name, self._now())
            ran = "" if decision.ran_for is None else f" after {decision.ran_for:.1f} s"
            loop = f" ({decision.quick_exits} quick exits in a row)" if decision.crash_loop else ""
            self._note(f"{name} {what}{ran}; starting it again in {decision.delay:g} s{loop}")
            await asyncio.sleep(decision.delay)
            try:
                await self._launch(self._replan(name))
            except TetherError as exc:
                await self._children[name].stop(self.spec.stop_timeout, self._hurry)
                what = f"did not come back ({exc})"
                continue
            self.restarts += 1
            return

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _cancel_watchers(self, *names: str) -> None:
        tasks = [self._watchers.pop(n) for n in (names or list(self._watchers)) if n in self._watchers]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _child(self, name: str) -> Child:
        try:
            return self._children[name]
        except KeyError:
            raise TetherError(f"no process named {name!r}; known: {', '.join(self._children)}") from None

    def _program(self, kind: Kind) -> list[str]:
        if kind in self._programs:
            return list(self._programs[kind])
        name = PROGRAMS[kind]
        beside = Path(sys.executable).parent / name  # the venv's console script, even when not on PATH
        if beside.is_file():
            return [str(beside)]
        found = shutil.which(name)
        if found is not None:
            return [found]
        if kind in MODULES:
            return [sys.executable, "-m", MODULES[kind]]
        raise ChildStartError(f"{name} not found on PATH")

    def _note(self, line: str) -> None:
        self._sink(LAUNCHER, "stderr", line)


def free_port(host: str) -> int:
    """A port that was free a moment ago (for programs that cannot bind port 0 and report it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


__all__ = ["ClusterSpec", "LocalCluster", "box_name", "free_port", "worker_name"]
