"""The demo agent's tools, faked outputs and byte accounting."""

from __future__ import annotations

import json

import pytest

from tether.core.agent_run import (
    OUTPUT_BYTES,
    TOOLS,
    FullContextLedger,
    describe_call,
    fake_tool_output,
    function_call_output,
    message_text,
    request_bytes,
    user_message,
)


@pytest.mark.parametrize("name", sorted(OUTPUT_BYTES))
def test_tool_outputs_are_a_few_kilobytes_and_deterministic(name: str) -> None:
    arguments = json.dumps({"path": "src/app/config.py", "pattern": "timeout", "target": "tests"})
    output = fake_tool_output(name, arguments)
    assert len(output) == OUTPUT_BYTES[name]
    assert output == fake_tool_output(name, arguments)
    assert output != fake_tool_output(name, json.dumps({"path": "other.py"}))


@pytest.mark.parametrize("arguments", ["", "not json", "[1, 2]", "{}"])
def test_odd_arguments_still_give_an_output(arguments: str) -> None:
    assert len(fake_tool_output("read_file", arguments)) == OUTPUT_BYTES["read_file"]


def test_an_unknown_tool_gets_an_error_text() -> None:
    assert fake_tool_output("rm_rf", "{}").startswith("error: unknown tool")


def test_every_offered_tool_has_an_output() -> None:
    assert {tool["name"] for tool in TOOLS} == set(OUTPUT_BYTES)


def test_request_bytes_are_the_json_text_the_sdk_sends() -> None:
    body = {"type": "response.create", "input": "héllo"}
    assert request_bytes(body) == len(json.dumps(body))


def test_the_full_context_ledger_resends_the_whole_history_every_turn() -> None:
    ledger = FullContextLedger("m", "be brief", TOOLS, {"tether.tool_calls": "2"})
    first = ledger.turn([user_message("fix it")])
    call = {
        "type": "function_call",
        "call_id": "c1",
        "name": "grep",
        "arguments": '{"pattern":"x"}',
        "id": "fc",
    }
    ledger.record_output([call])
    output = function_call_output("c1", "x" * 2000)
    second = ledger.turn([output])
    assert second > first + 2000  # the user message, the call and the output all travel again
    assert ledger.total_bytes == first + second
    assert [item["type"] for item in ledger.history] == ["message", "function_call", "function_call_output"]
    assert "id" not in ledger.history[1]  # echoed the way a client builds its next request


def test_message_text_joins_the_output_text_parts() -> None:
    item = {"type": "message", "content": [{"type": "output_text", "text": "a"}, {"text": "b"}, "junk"]}
    assert message_text(item) == "ab"
    assert message_text({"type": "message", "content": None}) == ""


def test_calls_are_described_briefly() -> None:
    assert describe_call("grep", '{"pattern": "x"}') == 'grep({"pattern": "x"})'
    assert len(describe_call("grep", "x" * 500, limit=20)) == len("grep()") + 20
