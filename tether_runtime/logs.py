"""The one log format of every Tether process (docs/logging.md) and its set-up.

`--log-format json` writes one JSON object per line to stderr (stdout carries only a process's serving
line). Every object has the same keys, whatever the component:

    ts         seconds since the epoch, millisecond precision (a number)
    level      debug | info | warning | error | critical
    logger     the logger's name (api_box.access, router, gpu_worker.torch, ...)
    msg        the formatted message
    component  the process: api_box | router | gpu_worker
    exc        the traceback, only on a record that carries an exception

and, when the record carries them, the context fields of `CONTEXT_FIELDS` (the API box sets `request_id` and
`response_id` on every line of a request or a turn). `--log-format text` writes
`<time> <LEVEL> <logger>: <message>` lines.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Literal, TextIO, get_args

import orjson

__all__ = [
    "CONTEXT_FIELDS",
    "FIELDS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "TEXT_FORMAT",
    "JsonFormatter",
    "LogFormat",
    "LogLevel",
    "configure_logging",
]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]  # any case from the environment
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
# The keys of every JSON line (exc only with an exception), then the optional context fields.
FIELDS = ("ts", "level", "logger", "msg", "component", "exc")
CONTEXT_FIELDS = ("request_id", "response_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of the JSON log schema, for the process `component`."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "component": self.component,
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        return orjson.dumps(entry, default=str).decode()


def configure_logging(
    component: str,
    log_format: str,
    level: str,
    *,
    filters: Iterable[logging.Filter] = (),
    stream: TextIO | None = None,
) -> None:
    """Send every log record to stderr (or `stream`) in `log_format`, at `level` (any case) and above.

    `filters` go on the handler (e.g. the box's request context). ValueError on an unknown format or level.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    if level.upper() not in LOG_LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    for log_filter in filters:
        handler.addFilter(log_filter)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
