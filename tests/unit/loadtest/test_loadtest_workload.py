"""The shared agent workload: request bodies per mode, tool outputs, synthetic history, SSE splitting."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gpu_worker.wire.tokenizer import encode
from loadtest.workload import (
    DEV_API_KEY,
    INSTRUCTIONS,
    METADATA_TOOL_CALLS,
    TOOLS,
    AgentRun,
    AgentShape,
    SseParser,
    TurnError,
    TurnEvents,
    WorkloadError,
    api_key,
    check_mode,
    history_text,
    parse_response,
    tool_output,
)


def completed(
    response_id: str, *calls: tuple[str, str], answer: str = "", tokens: int = 10
) -> dict[str, Any]:
    """A terminal ResponseResource with function calls, or a message when there are none."""
    output: list[dict[str, Any]] = [
        {"type": "function_call", "call_id": call_id, "name": name, "arguments": '{"path": "a.py"}'}
        for call_id, name in calls
    ]
    if not calls:
        text = [{"type": "output_text", "text": answer}]
        output = [{"type": "message", "role": "assistant", "content": text}]
    details = {"cached_tokens": tokens // 2}
    usage = {"input_tokens": tokens, "input_tokens_details": details, "output_tokens": 5}
    return {"id": response_id, "status": "completed", "output": output, "usage": usage}


@pytest.mark.parametrize("size", [1, 100, 4096, 65_537])
def test_tool_output_is_exactly_the_requested_size_and_deterministic(size: int) -> None:
    text = tool_output("call_1", "read_file", size)
    assert len(text.encode()) == size
    assert text == tool_output("call_1", "read_file", size)
    assert text != tool_output("call_2", "read_file", size) or size < 40


@pytest.mark.parametrize("tokens", [100, 5_000, 100_000])
def test_history_text_has_about_the_requested_tokens(tokens: int) -> None:
    count = len(encode(history_text(tokens, "run-a1-r0")))
    assert abs(count - tokens) <= max(8, tokens // 100)


def test_history_text_differs_from_the_first_block_between_runs() -> None:
    a, b = encode(history_text(1000, "run-a")), encode(history_text(1000, "run-b"))
    assert a[:16] != b[:16]
    assert history_text(0, "x") == ""


def test_websocket_run_sends_only_new_items_chained_by_previous_id() -> None:
    run = AgentRun("ws", AgentShape(tool_calls=2, output_bytes=300), "r1")
    first = run.next_body()
    assert first["type"] == "response.create"
    assert first["store"] is False
    assert "previous_response_id" not in first
    assert first["instructions"] == INSTRUCTIONS
    assert first["tools"] == list(TOOLS)
    assert first["metadata"] == {METADATA_TOOL_CALLS: "2"}
    run.record(completed("resp_1", ("call_a", "grep")))
    second = run.next_body()
    assert second["previous_response_id"] == "resp_1"
    assert [item["type"] for item in second["input"]] == ["function_call_output"]
    assert second["input"][0]["call_id"] == "call_a"
    assert len(second["input"][0]["output"]) == 300


def test_http_full_context_resends_the_whole_history_each_turn() -> None:
    run = AgentRun("http_full", AgentShape(tool_calls=2, output_bytes=200), "r1")
    assert run.next_body()["stream"] is True
    run.record(completed("resp_1", ("call_a", "grep")))
    run.record(completed("resp_2", ("call_b", "read_file")))
    body = run.next_body()
    assert "previous_response_id" not in body
    assert body["store"] is False
    kinds = [item["type"] for item in body["input"]]
    pair = ["function_call", "function_call_output"]
    assert kinds == ["message", *pair, *pair]
    sizes = [len(orjson.dumps(run.next_body())) for _ in range(2)]
    assert sizes[0] == sizes[1]  # next_body does not change the run


def test_http_chained_stores_and_chains() -> None:
    run = AgentRun("http_chained", AgentShape(tool_calls=1), "r1")
    assert run.next_body()["store"] is True
    run.record(completed("resp_1", ("call_a", "grep")))
    body = run.next_body()
    assert body["store"] is True
    assert body["stream"] is True
    assert body["previous_response_id"] == "resp_1"


def test_an_answer_finishes_the_run_and_a_new_task_keeps_the_history() -> None:
    run = AgentRun("ws", AgentShape(tool_calls=1, output_bytes=50), "r1")
    run.record(completed("resp_1", ("call_a", "grep")))
    result = run.record(completed("resp_2", answer="Fixed it."))
    assert run.finished
    assert result.answer == "Fixed it."
    assert run.tool_calls == 1
    with pytest.raises(WorkloadError):
        run.next_body()
    run.continue_session()
    body = run.next_body()
    assert body["previous_response_id"] == "resp_2"
    assert body["input"][0]["role"] == "user"
    assert len(run.history_items()) == 4


def test_a_failed_response_or_a_run_that_never_answers_is_an_error() -> None:
    run = AgentRun("ws", AgentShape(tool_calls=0), "r1")
    with pytest.raises(WorkloadError, match="failed"):
        run.record({**completed("resp_1"), "status": "failed"})
    endless = AgentRun("ws", AgentShape(tool_calls=0), "r2")
    endless.record(completed("resp_0", ("call_0", "grep")))  # T + 2 turns are allowed
    endless.record(completed("resp_1", ("call_1", "grep")))
    with pytest.raises(WorkloadError, match="did not answer"):
        endless.record(completed("resp_2", ("call_2", "grep")))


def test_history_tokens_precede_the_user_message() -> None:
    run = AgentRun("http_full", AgentShape(history_tokens=500), "r1")
    text = run.next_body()["input"][0]["content"][0]["text"]
    assert text.startswith("Session r1:")
    assert len(encode(text)) > 500


@pytest.mark.parametrize(
    "kwargs", [{"tool_calls": 65}, {"output_bytes": 0}, {"history_tokens": -1}, {"model": ""}]
)
def test_shape_bounds(kwargs: dict[str, Any]) -> None:
    with pytest.raises(WorkloadError):
        AgentShape(**kwargs)


def test_modes_are_checked() -> None:
    assert check_mode("ws") == "ws"
    with pytest.raises(WorkloadError, match="unknown mode"):
        check_mode("grpc")


def test_parse_response_reads_usage_and_calls() -> None:
    result = parse_response(completed("resp_9", ("c1", "grep"), tokens=40))
    assert result.response_id == "resp_9"
    assert result.calls[0]["name"] == "grep"
    assert result.answer is None
    assert (result.input_tokens, result.cached_tokens, result.output_tokens) == (40, 20, 5)


def test_sse_parser_handles_events_split_across_chunks_and_done() -> None:
    stream = (
        b'event: response.created\ndata: {"a":1}\n\n'
        b'event: response.output_text.delta\ndata: {"b":2}\n\n'
        b"data: [DONE]\n\n"
    )
    parser = SseParser()
    events = []
    for i in range(0, len(stream), 7):
        events += parser.feed(stream[i : i + 7])
    assert events == [("response.created", b'{"a":1}'), ("response.output_text.delta", b'{"b":2}')]


def test_turn_events_time_the_first_output_and_keep_the_terminal_response() -> None:
    turn = TurnEvents(started=10.0)
    assert not turn.see("response.created", 10.1, event={"type": "response.created"})
    assert not turn.see("response.output_text.delta", 10.25)
    assert not turn.see("response.output_text.delta", 10.5)  # only the first output counts
    done = orjson.dumps({"type": "response.completed", "response": completed("resp_1")})
    assert turn.see("response.completed", 11.0, done)  # SSE clients hand over the raw data
    assert turn.ttft == pytest.approx(0.25)
    assert turn.response()["id"] == "resp_1"


@pytest.mark.parametrize(
    "error",
    [
        {"type": "error", "error": {"code": "previous_response_not_found", "message": "gone"}},
        {"type": "error", "code": "previous_response_not_found", "message": "gone"},  # flat SSE shape
    ],
)
def test_an_error_event_or_a_stream_without_a_terminal_event_is_a_turn_error(error: dict[str, Any]) -> None:
    with pytest.raises(TurnError, match="previous_response_not_found: gone"):
        TurnEvents(started=0.0).see("error", 1.0, orjson.dumps(error))
    with pytest.raises(TurnError, match="previous_response_not_found"):
        TurnEvents(started=0.0).see("error", 1.0, event=error)
    with pytest.raises(TurnError, match="without a terminal event"):
        TurnEvents(started=0.0).response()


def test_the_api_key_comes_from_the_flag_then_openai_api_key_then_the_dev_key() -> None:
    assert api_key("flag-key", {"OPENAI_API_KEY": "sk-env"}) == "flag-key"  # --api-key / TETHER_LOAD_API_KEY
    assert api_key(None, {"OPENAI_API_KEY": "sk-env"}) == "sk-env"
    assert api_key(None, {"OPENAI_API_KEY": ""}) == DEV_API_KEY  # set but empty: not a key
    assert api_key(None, {}) == DEV_API_KEY == "tether-dev-key"


def test_forced_calls_ask_for_a_call_until_t_then_for_the_answer() -> None:
    run = AgentRun("ws", AgentShape(tool_calls=2, output_bytes=50, forced_calls=True), "r1")
    choices = []
    for number in (1, 2):
        body = run.next_body()
        choices.append(body["tool_choice"])
        assert body["temperature"] == 0
        assert "max_output_tokens" not in body  # a forced call must not be cut
        run.record(completed(f"resp_{number}", (f"call_{number}", "grep")))
    final = run.next_body()
    assert final["max_output_tokens"] == 16
    choices.append(final["tool_choice"])
    run.record({**completed("resp_3", answer="cut at its token lim"), "status": "incomplete"})
    assert run.finished
    assert choices == ["required", "required", "none"]
    run.continue_session()
    assert run.next_body()["tool_choice"] == "required"  # a new task: calls again
    plain = AgentRun("ws", AgentShape(tool_calls=0), "r2")
    assert "tool_choice" not in plain.next_body()
    with pytest.raises(WorkloadError, match="ended incomplete"):  # only a forced run's answer may be cut
        plain.record({**completed("resp_1", answer="cut"), "status": "incomplete"})
