"""`tether up` as a user runs it: a subprocess, its contract lines, signals, exit status, no orphans."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tether.config import DEV_API_KEY

SMALL = ["--port", "0", "--boxes", "1", "--workers", "1", "--speed", "0"]
READY = re.compile(r"^tether ready (http://127\.0\.0\.1:(\d+)/v1)$")
METRICS = re.compile(r"^tether metrics (\S+) (http://\S+)$")
STARTED = re.compile(r"^\[tether\] started (\S+) \(pid (\d+)\)$")
START_BUDGET = 90.0
STOP_BUDGET = 60.0


class Launcher:
    """A running `tether up`: its output lines arrive through a reader thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, matches: Callable[[str], bool], within: float) -> str:
        """The first new line that matches; fails on timeout or when the output ends first."""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if matches(line):
                return line
        raise AssertionError("expected line not seen; output so far:\n" + "\n".join(self.lines[-80:]))

    def finish(self, within: float = STOP_BUDGET) -> int:
        """Wait for the exit; read the rest of the output."""
        code = self.proc.wait(within)
        self._reader.join(10)
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        return code

    def close(self) -> None:
        """Release the pipe once the reader is done with it."""
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def pids(self) -> dict[str, int]:
        return {m[1]: int(m[2]) for line in self.lines if (m := STARTED.match(line))}


@contextmanager
def tether_up(*args: str) -> Iterator[Launcher]:
    command = [sys.executable, "-m", "tether", "up", *args]
    env = {**os.environ, "TETHER_UP_START_TIMEOUT": str(START_BUDGET)}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    launcher = Launcher(proc)
    try:
        yield launcher
    finally:
        if proc.poll() is None:  # the test failed midway: leave nothing behind
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_BUDGET)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        launcher.close()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_tether_up_serves_then_stops_cleanly_on_sigterm() -> None:
    with tether_up(*SMALL) as up:
        ready = up.wait_for(READY.match, START_BUDGET)
        base_url = READY.match(ready)[1]  # type: ignore[index]
        metrics = {m[1]: m[2] for line in up.lines if (m := METRICS.match(line))}
        assert set(metrics) == {"worker-0", "box-0", "router"}
        auth = {"Authorization": f"Bearer {DEV_API_KEY}"}
        request = urllib.request.Request(f"{base_url}/models", headers=auth)
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200
        pids = up.pids()
        assert {"worker-0", "box-0", "router"} <= set(pids)
        up.proc.send_signal(signal.SIGTERM)
        assert up.finish() == 0, "\n".join(up.lines[-60:])
    assert all(gone(pid) for pid in pids.values()), pids


def test_ctrl_c_during_startup_stops_what_was_started() -> None:
    with tether_up(*SMALL, "--no-redis") as up:
        up.wait_for(lambda line: line.startswith("[tether] started worker-0"), START_BUDGET)
        os.killpg(up.proc.pid, signal.SIGINT)  # as a terminal does: to the whole foreground group
        assert up.finish() == 0, "\n".join(up.lines[-60:])
    assert not any(READY.match(line) for line in up.lines)
    assert all(gone(pid) for pid in up.pids().values())


def test_a_dying_child_brings_tether_up_down_with_status_1() -> None:
    with tether_up(*SMALL, "--no-redis") as up:
        up.wait_for(READY.match, START_BUDGET)
        pids = up.pids()
        os.kill(pids["box-0"], signal.SIGKILL)
        assert up.finish() == 1
    assert "[tether] box-0 exited unexpectedly with status -9" in up.lines
    assert all(gone(pid) for pid in pids.values()), pids


def test_the_demo_drives_an_agent_run_and_exits_0() -> None:
    with tether_up(*SMALL, "--demo", "--demo-tool-calls", "3") as up:
        up.wait_for(READY.match, START_BUDGET)
        assert up.finish(START_BUDGET) == 0, "\n".join(up.lines[-60:])
    turns = [line for line in up.lines if re.match(r"^turn +\d+ ", line)]
    assert len(turns) == 4
    assert all(" call " in line for line in turns[:3])
    assert " answer " in turns[3]
    assert any(line.startswith("demo: 3 tool calls, 4 turns") for line in up.lines)


def test_bad_flags_exit_2_before_starting_anything() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tether", "up", "--boxes", "0"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "boxes" in result.stderr
