"""`tether drain NAME` and the run file it reads: finds the process, signals it, refuses clearly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.cli import build_parser, main, spec_from_args
from tether.errors import TetherError
from tether.runfile import RUN_DIR_ENV, RunFile, read_run_file, run_dir, run_file_path


@pytest.fixture
def run_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run"))
    return tmp_path / "run"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process that stands in for a box: it sleeps until signalled."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_the_run_dir_comes_from_the_environment() -> None:
    assert run_dir({RUN_DIR_ENV: "/srv/t"}) == Path("/srv/t")
    assert run_dir({"XDG_RUNTIME_DIR": "/run/user/7"}) == Path("/run/user/7/tether")
    assert run_dir({}).name.startswith("tether-")
    assert run_file_path({RUN_DIR_ENV: "/srv/t"}, 8080) == Path("/srv/t/up-8080.json")


def test_a_run_file_round_trips_and_is_rewritten_per_start(run_files: Path) -> None:
    path = run_files / "up-8080.json"
    written = RunFile(
        path, launcher=os.getpid(), base_url="http://127.0.0.1:8080/v1", processes={"box-0": 11}
    )
    written.write()
    written.set("box-0", 12)
    read = read_run_file(path)
    assert (read.launcher, read.base_url, read.processes) == (os.getpid(), written.base_url, {"box-0": 12})
    assert [p.name for p in run_files.iterdir()] == ["up-8080.json"]  # no temporary file left behind
    written.remove()
    written.remove()  # twice is fine
    with pytest.raises(TetherError, match="does not exist"):
        read_run_file(path)


def test_a_run_file_whose_launcher_is_gone_is_stale(run_files: Path) -> None:
    path = run_files / "up-1.json"
    RunFile(path, launcher=_dead_pid(), base_url="http://127.0.0.1:1/v1").write()
    with pytest.raises(TetherError, match="stale"):
        read_run_file(path)
    path.write_text("{not json")
    with pytest.raises(TetherError, match="cannot read"):
        read_run_file(path)


def test_drain_sends_sigterm_to_the_named_process(
    run_files: Path, sleeper: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    base_url = "http://127.0.0.1:9001/v1"
    RunFile(run_files / "up-9001.json", os.getpid(), base_url, {"box-0": sleeper.pid}).write()
    assert main(["drain", "box-0", "--port", "9001"]) == 0
    assert sleeper.wait(30) == -signal.SIGTERM
    assert capsys.readouterr().out == f"sent SIGTERM to box-0 (pid {sleeper.pid})\n"


def test_drain_wait_returns_once_the_process_runs_again(
    run_files: Path, sleeper: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    running = RunFile(
        run_files / "up-9002.json", os.getpid(), "http://127.0.0.1:9002/v1", {"box-1": sleeper.pid}
    )
    running.write()
    restarted = threading.Timer(0.5, running.set, ("box-1", 424242))  # what `tether up` does once it is ready
    restarted.start()
    try:
        assert main(["drain", "box-1", "--port", "9002", "--wait", "30"]) == 0
    finally:
        restarted.cancel()
    assert capsys.readouterr().out.splitlines()[-1] == "box-1 is back (pid 424242)"


def test_drain_of_an_unknown_process_exits_1(run_files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    RunFile(run_files / "up-9003.json", os.getpid(), "http://127.0.0.1:9003/v1", {"box-0": 1}).write()
    assert main(["drain", "box-9", "--port", "9003"]) == 1
    assert "no process 'box-9' in http://127.0.0.1:9003/v1; known: box-0" in capsys.readouterr().err


def test_drain_of_a_process_that_is_gone_exits_1(run_files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    RunFile(
        run_files / "up-9003.json", os.getpid(), "http://127.0.0.1:9003/v1", {"box-0": _dead_pid()}
    ).write()
    assert main(["drain", "box-0", "--port", "9003"]) == 1
    assert "is not running" in capsys.readouterr().err


def test_drain_without_a_cluster_exits_1(run_files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drain", "box-0", "--port", "9004"]) == 1
    assert "no `tether up` found" in capsys.readouterr().err


def test_drain_with_a_bad_wait_exits_2(run_files: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["drain", "box-0", "--wait", "0"])
    assert caught.value.code == 2


def test_restart_is_on_for_the_cli_and_no_restart_turns_it_off() -> None:
    parser = build_parser()
    assert spec_from_args(parser.parse_args(["up"]), {}).restart
    assert not spec_from_args(parser.parse_args(["up", "--no-restart"]), {}).restart
    assert not spec_from_args(parser.parse_args(["up"]), {"TETHER_UP_RESTART": "0"}).restart
