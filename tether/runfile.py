"""The run file of a running `tether up`: which processes it runs, so that `tether drain NAME` finds one.

    <run dir>/up-<port>.json    {"launcher": 4242, "base_url": "http://127.0.0.1:8080/v1",
                                 "processes": {"redis": 4250, "worker-0": 4251, "box-0": 4253, ...}}

`<port>` is the port clients use (the one in the `tether ready` line). The run dir is `TETHER_UP_RUN_DIR`,
else `$XDG_RUNTIME_DIR/tether`, else `tether-<uid>` in the temporary directory. `tether up` writes the
file once the cluster is ready, rewrites it (atomically) after every restart of a child, and removes it
when it stops; a file whose launcher is gone is stale and ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tether.errors import TetherError

RUN_DIR_ENV = "TETHER_UP_RUN_DIR"


def run_dir(environ: Mapping[str, str]) -> Path:
    """Where run files live; see the module docstring."""
    if environ.get(RUN_DIR_ENV):
        return Path(environ[RUN_DIR_ENV])
    if environ.get("XDG_RUNTIME_DIR"):
        return Path(environ["XDG_RUNTIME_DIR"]) / "tether"
    return Path(tempfile.gettempdir()) / f"tether-{os.getuid()}"


def run_file_path(environ: Mapping[str, str], port: int) -> Path:
    """The run file of the `tether up` whose clients use `port`."""
    return run_dir(environ) / f"up-{port}.json"


@dataclass(slots=True)
class RunFile:
    """What one `tether up` writes: its own pid, its base URL, and the pid of each process it runs."""

    path: Path
    launcher: int
    base_url: str
    processes: dict[str, int] = field(default_factory=dict)

    def set(self, name: str, pid: int) -> None:
        """Record that `name` now runs as `pid`, and write the file."""
        self.processes[name] = pid
        self.write()

    def write(self) -> None:
        """Write the file atomically (readers see the old or the new one, never a part)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = {"launcher": self.launcher, "base_url": self.base_url, "processes": self.processes}
        fd, temp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(body, out)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def remove(self) -> None:
        """Remove the file (the cluster stopped)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def read_run_file(path: Path) -> RunFile:
    """The run file at `path` of a `tether up` that is still running; TetherError otherwise."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        found = RunFile(path, int(body["launcher"]), str(body["base_url"]))
        found.processes = {str(name): int(pid) for name, pid in dict(body["processes"]).items()}
    except FileNotFoundError:
        raise TetherError(f"no `tether up` found: {path} does not exist (is --port right?)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TetherError(f"cannot read {path}: {exc}") from None
    if not _alive(found.launcher):
        raise TetherError(f"{path} is stale: its `tether up` (pid {found.launcher}) is gone")
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True
