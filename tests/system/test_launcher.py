"""`tether up` as a user runs it: a subprocess, its contract lines, signals, exit status, no orphans."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tether.config import DEV_API_KEY
from tether.runfile import RUN_DIR_ENV

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
def tether_up(*args: str, run_dir: Path | None = None) -> Iterator[Launcher]:
    """`tether up ARGS` as a subprocess; its run file goes to `run_dir` (default: a scratch folder)."""
    with (
        tempfile.TemporaryDirectory(prefix="tether-run-") as scratch,
        _tether_up(args, run_dir or Path(scratch)) as up,
    ):
        yield up


@contextmanager
def _tether_up(args: tuple[str, ...], run_dir: Path) -> Iterator[Launcher]:
    command = [sys.executable, "-m", "tether", "up", *args]
    env = {**os.environ, "TETHER_UP_START_TIMEOUT": str(START_BUDGET), RUN_DIR_ENV: str(run_dir)}
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


def test_without_restarts_a_dying_child_brings_tether_up_down_with_status_1() -> None:
    with tether_up(*SMALL, "--no-redis", "--no-restart") as up:
        up.wait_for(READY.match, START_BUDGET)
        pids = up.pids()
        os.kill(pids["box-0"], signal.SIGKILL)
        assert up.finish() == 1
    assert "[tether] box-0 exited unexpectedly with status -9" in up.lines
    assert all(gone(pid) for pid in pids.values()), pids


def test_a_drained_box_comes_back_while_the_cluster_keeps_serving(tmp_path: Path) -> None:
    with tether_up(*SMALL, "--boxes", "2", "--no-redis", run_dir=tmp_path) as up:
        base_url = READY.match(up.wait_for(READY.match, START_BUDGET))[1]  # type: ignore[index]
        port = base_url.split(":")[2].split("/")[0]
        old = up.pids()["box-0"]
        drain = subprocess.Popen(
            [sys.executable, "-m", "tether", "drain", "box-0", "--port", port, "--wait", str(START_BUDGET)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, RUN_DIR_ENV: str(tmp_path)},
        )
        answered = 0
        while drain.poll() is None:  # the router walks box-0's sessions to box-1 meanwhile
            for session in range(8):
                assert get_models(base_url, f"s-{session}") == 200
                answered += 1
        out = drain.communicate(timeout=10)[0]
        assert drain.returncode == 0, out
        up.wait_for(lambda line: line.startswith("[tether] started box-0"), 10)  # the restart's line
        new = up.pids()["box-0"]
        assert out.splitlines() == [f"sent SIGTERM to box-0 (pid {old})", f"box-0 is back (pid {new})"]
        assert new != old
        assert any(line.startswith("[tether] box-0 exited with status 0 after ") for line in up.lines)
        assert all(get_models(base_url, f"s-{session}") == 200 for session in range(8))  # box-0 serves again
        assert answered >= 8
        up.proc.send_signal(signal.SIGTERM)
        assert up.finish() == 0, "\n".join(up.lines[-60:])
    assert not (tmp_path / f"up-{port}.json").exists()


def get_models(base_url: str, session: str) -> int:
    headers = {"Authorization": f"Bearer {DEV_API_KEY}", "X-Session-Id": session}
    with urllib.request.urlopen(
        urllib.request.Request(f"{base_url}/models", headers=headers), timeout=10
    ) as reply:
        return int(reply.status)


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
