"""The launcher's exception tree. Each class carries the process exit status it maps to.

    TetherError                  exit 1   base class
    ├── ConfigError              exit 2   bad flag or environment value
    ├── ChildStartError          exit 1   a child exited or stayed silent before printing its serving line
    ├── ReadinessTimeout         exit 1   a child printed its serving line but never became ready
    ├── ChildDied                exit 1   a child exited while the cluster was serving
    └── DemoFailed               exit 1   the demo agent run did not reach a final answer

`exit_status` (tether/cli.py uses it) is the one place that turns these into an exit status.
"""

from __future__ import annotations

__all__ = [
    "ChildDied",
    "ChildStartError",
    "ConfigError",
    "DemoFailed",
    "ReadinessTimeout",
    "TetherError",
    "exit_status",
]


class TetherError(Exception):
    """Base class of everything the launcher raises on purpose."""

    exit_code = 1


class ConfigError(TetherError):
    """A flag or an environment variable has a bad value."""

    exit_code = 2


class ChildStartError(TetherError):
    """A child process exited, or printed nothing usable, before its serving line."""


class ReadinessTimeout(TetherError):
    """A child announced its address but did not pass its readiness check in time."""


class ChildDied(TetherError):
    """A child process exited while the cluster was serving."""

    def __init__(self, name: str, returncode: int) -> None:
        super().__init__(f"{name} exited unexpectedly with status {returncode}")
        self.name = name
        self.returncode = returncode


class DemoFailed(TetherError):
    """The demo agent run failed (an error event, a failed response, no final answer)."""


def exit_status(error: BaseException) -> int:
    """The process exit status for an error: its class's code, 1 for anything unexpected."""
    return error.exit_code if isinstance(error, TetherError) else 1
