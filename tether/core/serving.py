"""Parsing of the one line every Tether process prints once it listens.

    tether-gpu-worker serving 127.0.0.1:50051 metrics http://127.0.0.1:9101/metrics
    tether-api-box serving http://127.0.0.1:8081 metrics off
    tether-router serving http://127.0.0.1:8080 metrics http://127.0.0.1:9100/metrics

The launcher starts children on port 0 and learns their real ports from this line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_LINE = re.compile(r"^(?P<program>tether-[a-z-]+) serving (?P<address>\S+) metrics (?P<metrics>\S+)\s*$")


@dataclass(frozen=True, slots=True)
class ServingLine:
    """What a child announced: its program name, listening host and port, and metrics URL (None: off)."""

    program: str
    host: str
    port: int
    metrics_url: str | None

    @property
    def target(self) -> str:
        """`host:port`, the form gRPC targets and the `--workers`/`--boxes` flags take."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def http_url(self) -> str:
        """`http://host:port` of the child's main port."""
        return f"http://{self.target}"


def parse_serving_line(line: str) -> ServingLine | None:
    """Parse a serving line; None when `line` is any other log line or its address is malformed."""
    match = _LINE.match(line.strip())
    if match is None:
        return None
    address = match["address"]
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.hostname is None or port is None or port == 0:
        return None
    metrics = match["metrics"]
    return ServingLine(
        program=match["program"],
        host=parts.hostname,
        port=port,
        metrics_url=None if metrics == "off" else metrics,
    )
