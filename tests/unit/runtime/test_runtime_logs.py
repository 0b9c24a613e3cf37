"""The one JSON log schema: the same keys from every component, as docs/logging.md documents them."""

from __future__ import annotations

import io
import logging
import re
import sys
from pathlib import Path

import orjson
import pytest

from tether_runtime.logs import CONTEXT_FIELDS, FIELDS, JsonFormatter, configure_logging

DOC = Path(__file__).resolve().parents[3] / "docs" / "logging.md"


def _record(msg: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("router.relay", logging.WARNING, __file__, 1, msg, args or None, None)
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def test_a_line_has_the_schema_keys_in_order() -> None:
    line = orjson.loads(JsonFormatter("router").format(_record("hello %s", "you")))
    assert list(line) == ["ts", "level", "logger", "msg", "component"]
    assert (line["level"], line["logger"], line["msg"], line["component"]) == (
        "warning",
        "router.relay",
        "hello you",
        "router",
    )
    assert isinstance(line["ts"], float)


def test_an_exception_goes_to_exc() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("gpu_worker", logging.ERROR, __file__, 1, "failed", None, True)
        record.exc_info = sys.exc_info()
    line = orjson.loads(JsonFormatter("gpu_worker").format(record))
    assert "RuntimeError: boom" in line["exc"]
    assert set(line) == {"ts", "level", "logger", "msg", "component", "exc"}


def test_context_fields_appear_when_set() -> None:
    formatter = JsonFormatter("api_box")
    line = orjson.loads(formatter.format(_record("x", request_id="req_1", response_id=None)))
    assert line["request_id"] == "req_1"
    assert "response_id" not in line


def test_the_documented_fields_are_the_ones_written() -> None:
    """docs/logging.md's table lists every key, fixed and context, and nothing else."""
    documented = re.findall(r"^\| `(\w+)` \|", DOC.read_text(), flags=re.MULTILINE)
    assert documented == [*FIELDS, *CONTEXT_FIELDS]


@pytest.mark.usefixtures("root_logger")
def test_configure_logging_writes_json_at_the_level_given() -> None:
    stream = io.StringIO()
    configure_logging("api_box", "json", "warning", stream=stream)
    logging.getLogger("api_box.x").info("dropped")
    logging.getLogger("api_box.x").warning("kept")
    (line,) = (orjson.loads(text) for text in stream.getvalue().splitlines())
    assert (line["msg"], line["component"], line["level"]) == ("kept", "api_box", "warning")


@pytest.mark.usefixtures("root_logger")
def test_configure_logging_text_and_bad_values() -> None:
    stream = io.StringIO()
    configure_logging("router", "text", "INFO", stream=stream)
    logging.getLogger("router").info("plain")
    assert stream.getvalue().rstrip().endswith("INFO router: plain")
    with pytest.raises(ValueError, match="log format 'xml'"):
        configure_logging("router", "xml", "INFO")
    with pytest.raises(ValueError, match="log level 'LOUD'"):
        configure_logging("router", "text", "LOUD")
