"""The launcher's output: prefixed text lines, or JSON records that keep a child's own JSON as an object."""

from __future__ import annotations

import io
import json

from tether.logs import LinePrinter


def test_text_lines_are_prefixed_with_the_process_name() -> None:
    out = io.StringIO()
    printer = LinePrinter("text", out)
    printer("box-0", "stderr", "listening")
    printer.write("tether ready http://127.0.0.1:8080/v1")
    assert out.getvalue() == "[box-0] listening\ntether ready http://127.0.0.1:8080/v1\n"


def test_json_records_embed_a_childs_json_and_keep_other_lines_as_text() -> None:
    out = io.StringIO()
    printer = LinePrinter("json", out)
    printer("worker-0", "stderr", '{"level": "info", "msg": "serving"}')
    printer("redis", "stdout", "{not json")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert (first["process"], first["stream"], first["record"]) == (
        "worker-0",
        "stderr",
        {"level": "info", "msg": "serving"},
    )
    assert second["line"] == "{not json"
    assert "record" not in second


class _ClosedPipe(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def write(self, text: str) -> int:
        self.attempts += 1
        raise BrokenPipeError


def test_a_closed_output_is_dropped_not_raised() -> None:
    pipe = _ClosedPipe()
    printer = LinePrinter("text", pipe)
    printer("box-0", "stdout", "one")  # no exception: the supervisor must go on stopping its children
    printer.write("two")
    assert pipe.attempts == 1  # once broken, later lines are not even tried
