"""Parsing the serving line each Tether process prints once it listens."""

from __future__ import annotations

import pytest

from tether.core.serving import ServingLine, parse_serving_line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "tether-gpu-worker serving 127.0.0.1:50051 metrics http://127.0.0.1:9101/metrics",
            ServingLine("tether-gpu-worker", "127.0.0.1", 50051, "http://127.0.0.1:9101/metrics"),
        ),
        (
            "tether-api-box serving http://127.0.0.1:8081 metrics off\n",
            ServingLine("tether-api-box", "127.0.0.1", 8081, None),
        ),
        (
            "tether-router serving http://[::1]:8080 metrics http://[::1]:9100/metrics",
            ServingLine("tether-router", "::1", 8080, "http://[::1]:9100/metrics"),
        ),
    ],
)
def test_serving_lines_of_every_program_parse(line: str, expected: ServingLine) -> None:
    assert parse_serving_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "",
        "INFO starting tether-api-box",
        "tether-api-box serving http://127.0.0.1:0 metrics off",  # port 0 is never a real address
        "tether-api-box serving http://127.0.0.1 metrics off",  # no port
        "tether-api-box serving http://127.0.0.1:99999 metrics off",  # not a port
        "tether-api-box serving http://127.0.0.1:8081",  # no metrics part
        "[box-0] tether-api-box serving http://127.0.0.1:8081 metrics off",  # not at the line start
    ],
)
def test_other_lines_are_not_serving_lines(line: str) -> None:
    assert parse_serving_line(line) is None


def test_targets_and_urls_bracket_ipv6_hosts() -> None:
    v4 = ServingLine("tether-gpu-worker", "127.0.0.1", 5000, None)
    v6 = ServingLine("tether-gpu-worker", "::1", 5000, None)
    assert (v4.target, v4.http_url) == ("127.0.0.1:5000", "http://127.0.0.1:5000")
    assert (v6.target, v6.http_url) == ("[::1]:5000", "http://[::1]:5000")
