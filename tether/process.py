"""One supervised child process: started in its own process group, its output streamed line by line.

The launcher, not the terminal, decides the shutdown order: children get their own process group, so a
Ctrl-C reaches only `tether up`, which then stops them router first, Redis last.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tether.core.serving import ServingLine, parse_serving_line
from tether.errors import ChildStartError

# (process name, "stdout" | "stderr", line without its newline)
LogSink = Callable[[str, str, str], None]

LINE_LIMIT = 64 * 1024  # longer lines are cut; a child cannot make us buffer without bound
_READ_TASKS_GRACE = 2.0  # after exit, how long grandchildren holding the pipes may delay the log readers


class Child:
    """A child process: start it, learn its address from its serving line, stop it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        sink: LogSink,
        *,
        announces: bool = True,
    ) -> None:
        self.name = name
        self.argv = tuple(argv)
        self._env = dict(env)
        self._sink = sink
        self._announces = announces  # prints a serving line (redis does not)
        self._proc: asyncio.subprocess.Process | None = None
        self._serving: asyncio.Future[ServingLine] | None = None
        self._readers: list[asyncio.Task[None]] = []
        self.stopping = False  # set before a deliberate stop, so the exit is not reported as a death

    @property
    def pid(self) -> int | None:
        """The process id once started."""
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """None while running; the exit status (negative: killed by that signal) once reaped."""
        return None if self._proc is None else self._proc.returncode

    async def start(self) -> None:
        """Spawn the process and start streaming its stdout and stderr to the sink."""
        loop = asyncio.get_running_loop()
        self._serving = loop.create_future()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                limit=LINE_LIMIT,
                process_group=0,
            )
        except OSError as exc:
            raise ChildStartError(f"{self.name}: cannot run {self.argv[0]}: {exc}") from exc
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._pump(self._proc.stdout, "stdout"), name=f"{self.name}-stdout"),
            asyncio.create_task(self._pump(self._proc.stderr, "stderr"), name=f"{self.name}-stderr"),
        ]

    async def wait_serving(self, within: float) -> ServingLine:
        """The child's serving line; ChildStartError if it exits or stays silent for `within` seconds."""
        assert self._proc is not None
        assert self._serving is not None
        exited = asyncio.ensure_future(self._proc.wait())
        try:
            waiters: set[asyncio.Future[Any]] = {self._serving, exited}
            done, _ = await asyncio.wait(waiters, timeout=within, return_when="FIRST_COMPLETED")
        finally:
            exited.cancel()
        if self._serving.done():
            return self._serving.result()
        if done:
            raise ChildStartError(f"{self.name} exited with status {self._proc.returncode} before serving")
        raise ChildStartError(f"{self.name} printed no serving line within {within:g} s")

    async def wait(self) -> int:
        """Wait for the process to exit; its return code."""
        assert self._proc is not None
        return await self._proc.wait()

    def send(self, signum: int) -> None:
        """Send a signal unless the process is already gone."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signum)

    async def stop(self, grace: float, hurry: asyncio.Event | None = None) -> int | None:
        """SIGTERM, wait up to `grace` seconds (or until `hurry` is set), then SIGKILL. The return code."""
        if self._proc is None:
            return None
        self.stopping = True
        self.send(signal.SIGTERM)
        exited = asyncio.ensure_future(self._proc.wait())
        waiters: set[asyncio.Future[Any]] = {exited}
        if hurry is not None:
            waiters.add(asyncio.ensure_future(hurry.wait()))
        try:
            await asyncio.wait(waiters, timeout=grace, return_when="FIRST_COMPLETED")
        finally:
            for waiter in waiters - {exited}:
                waiter.cancel()
        if not exited.done():
            self._sink("tether", "stderr", f"{self.name} did not stop within {grace:g} s; killing it")
            self.send(signal.SIGKILL)
        code = await exited
        await self.close()
        return code

    async def kill(self) -> int | None:
        """SIGKILL now and reap; the return code."""
        if self._proc is None:
            return None
        self.stopping = True
        self.send(signal.SIGKILL)
        code = await self._proc.wait()
        await self.close()
        return code

    async def close(self) -> None:
        """Let the log readers drain what the exited process wrote, then cancel them."""
        if not self._readers:
            return
        _, pending = await asyncio.wait(self._readers, timeout=_READ_TASKS_GRACE)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self._readers = []

    async def _pump(self, stream: asyncio.StreamReader, label: str) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line over LINE_LIMIT; the reader already dropped it
                self._sink(self.name, label, f"<line longer than {LINE_LIMIT} bytes dropped>")
                continue
            if not raw:
                return
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            self._note_serving(line, label)
            self._sink(self.name, label, line)

    def _note_serving(self, line: str, label: str) -> None:
        if not self._announces or label != "stdout" or self._serving is None or self._serving.done():
            return
        parsed = parse_serving_line(line)
        if parsed is not None:
            self._serving.set_result(parsed)
