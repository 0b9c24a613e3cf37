"""Where the launcher's output goes: one ordered stream of prefixed child lines and its own notes."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from tether_runtime.logs import LogFormat

LAUNCHER = "tether"  # the process name of the launcher's own log lines


class LinePrinter:
    """A LogSink writing `[box-0] line` (text) or one JSON object per line (json) to a stream.

    Writes are small and line-sized; once the stream is gone (a closed pipe) output is dropped rather
    than crashing the supervisor, which still has children to stop.
    """

    def __init__(self, log_format: LogFormat = "text", stream: TextIO | None = None) -> None:
        self._format = log_format
        self._stream = stream if stream is not None else sys.stdout
        self._broken = False

    def __call__(self, name: str, label: str, line: str) -> None:
        if self._format == "json":
            record: dict[str, object] = {"ts": round(time.time(), 3), "process": name, "stream": label}
            record.update(_embedded(line))
            text = json.dumps(record, ensure_ascii=False)
        else:
            text = f"[{name}] {line}"
        self.write(text)

    def write(self, text: str) -> None:
        """Write one unprefixed line (the `tether ready` contract lines, the demo's report)."""
        if self._broken:
            return
        try:
            self._stream.write(text + "\n")
            self._stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            self._broken = True


def _embedded(line: str) -> dict[str, object]:
    """A child's own JSON log record stays an object ("record"); any other line is text ("line")."""
    if line.startswith("{"):
        try:
            parsed = json.loads(line)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return {"record": parsed}
    return {"line": line}
