"""Child processes of the benchmark: the load generator (client.py) and the link emulator (linkemu.py).

Both speak JSON lines on stdout. A reader task owned by the wrapper drains stdout the whole time (a
steady load generator reports every turn; an unread pipe would stall it), counts "turn" events for the
progress bar and queues every other event. stderr keeps a bounded tail for error messages. `close()`
always ends the process: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from loadtest.bench.client import ClientJob
from loadtest.bench.netns import Namespace, in_namespace

STOP_GRACE = 5.0
STDERR_LINES = 40
LINE_LIMIT = 256 * 1024 * 1024  # a runs job's result is one line
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ChildFailed(RuntimeError):
    """A child process exited early or said something unexpected."""


class JsonLinesChild:
    """A child process whose stdout is JSON lines."""

    def __init__(self, name: str, argv: Sequence[str], cpus: set[int] | None = None) -> None:
        self.name, self.argv, self.cpus = name, list(argv), cpus
        self.proc: asyncio.subprocess.Process | None = None
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.on_turn: Callable[[dict[str, Any]], None] = lambda _event: None
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the process and its readers."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent,
        )
        if self.cpus:
            pin_process(self.proc.pid, self.cpus)
        self._readers = [
            asyncio.create_task(self._read_stdout(), name=f"{self.name}-stdout"),
            asyncio.create_task(self._read_stderr(), name=f"{self.name}-stderr"),
        ]

    async def _read_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                event = orjson.loads(line)
                if event.get("event") == "turn":
                    self.on_turn(event)
                else:
                    await self.events.put(event)
        except (ValueError, orjson.JSONDecodeError) as exc:
            self.stderr_tail.append(f"unreadable output: {exc}")
        finally:
            await self.events.put(None)  # end of output

    async def _read_stderr(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr_tail.append(line.decode(errors="replace").rstrip())

    async def next_event(self, timeout: float) -> dict[str, Any]:
        """The next non-turn event; ChildFailed when the output ends or nothing comes in time."""
        try:
            async with asyncio.timeout(timeout):
                event = await self.events.get()
        except TimeoutError:
            raise ChildFailed(f"{self.name}: no answer within {timeout:g} s; {self.tail()}") from None
        if event is None:
            code = await self.wait(STOP_GRACE)
            raise ChildFailed(f"{self.name} exited ({code}) early; {self.tail()}")
        return event

    async def send(self, command: dict[str, Any]) -> None:
        """Write one JSON command line to stdin."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(command) + b"\n")
        await self.proc.stdin.drain()

    async def wait(self, timeout: float) -> int | None:
        """The exit status, or None when still running after `timeout`."""
        if self.proc is None:
            return None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                return await self.proc.wait()
        return None

    def tail(self) -> str:
        """The last stderr lines, for error messages."""
        return "stderr: " + (" | ".join(list(self.stderr_tail)[-8:]) or "(empty)")

    async def close(self, grace: float = STOP_GRACE) -> int | None:
        """Stop the process (SIGTERM, then SIGKILL) and its readers; its exit status."""
        code: int | None = None
        if self.proc is not None:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                code = await self.wait(grace)
                if code is None:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()
                    code = await self.wait(grace)
            else:
                code = self.proc.returncode
        for task in self._readers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.shield(task)
            task.cancel()
        return code


def client_argv(job: ClientJob, ns: Namespace | None) -> list[str]:
    """The load generator's command line (inside the namespace for the shaped link)."""
    return in_namespace(ns, [sys.executable, "-m", "loadtest.bench.client", job.to_json().decode()])


def relay_argv(listen: str, target: str, delay_ms: float, rate_mbit: float) -> list[str]:
    """The link emulator's command line (it runs in the host namespace)."""
    return [
        sys.executable, "-m", "loadtest.bench.linkemu", "--listen", listen, "--target", target,
        "--delay-ms", repr(delay_ms), "--rate-mbit", repr(rate_mbit),
    ]  # fmt: skip


def pin_process(pid: int, cpus: set[int]) -> bool:
    """Pin every thread of `pid` to `cpus`; False when the platform or the process does not allow it."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    pinned = False
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)
            pinned = True
    return pinned


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the benchmark dies, even by SIGKILL (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
